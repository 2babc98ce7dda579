//! The Subtensor chain client: JSON-RPC transports, typed calls, SCALE types and the metagraph.
//!
//! The metagraph is read the way the Python SDK reads it (spec §3): pin one block, then
//! `NeuronInfoRuntimeApi_get_neurons_lite` and `SubnetInfoRuntimeApi_get_subnet_state` at that
//! block's hash. The devnet chain answers the same calls with bytes made from the same types,
//! so the code path against the devnet is the code path against finney.

pub mod calls;
pub mod client;
pub mod decode;
pub mod metagraph;
pub mod network;
pub mod rpc;
pub mod serve;
pub mod server;
pub mod tx;
pub mod types;

pub use client::{Block, ChainError, Subtensor};
