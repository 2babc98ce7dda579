//! Integration tests of the Bittensor layer: golden captures of the real SDK, live dendrite ↔
//! axon round trips, malformed input, and interop with the real Python SDK.

mod chain;
mod devnet;
mod extrinsic;
mod fuzz;
mod golden_chain;
mod golden_http;
mod golden_parsing;
mod golden_wallet;
mod hostile;
mod live;
mod malformed;
mod real_runtime;
mod util;
