//! Placeholder: being written (the typed metagraph from neurons and subnet state).
