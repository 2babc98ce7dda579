//! End-to-end tests of the `nicompute` binary and of the Bittensor layer against the real Python
//! SDK (bittensor 9.0.0 and 10.5.0) in both directions.

mod cli;
mod interop;
mod miner;
mod peers;
mod renter;
mod snapshots;
