//! The Bittensor layer of nicompute: keys, wallets and the synapse protocol.
//!
//! Everything here speaks exactly what the Python `bittensor` SDK speaks (9.0.0, SN27's pin, and
//! 10.x), so a Rust dendrite can query Python miners and a Rust axon can serve Python validators.
//! Nothing in this crate knows about GPUs or the compute subnet.

pub mod axon;
pub mod chopsticks;
pub mod clock;
pub mod dendrite;
pub mod devnet;
pub mod extrinsic;
pub mod keys;
pub mod subtensor;
pub mod synapse;
pub mod wallet;

pub use clock::Clock;
pub use keys::{AccountId, KeyError, Keypair, Signature, VerifyingKey};
pub use synapse::{RawSynapse, Synapse, SynapseHeader, TerminalInfo};
