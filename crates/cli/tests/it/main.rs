//! End-to-end tests of the `nicompute` binary and of the Bittensor layer against the real Python
//! SDK (bittensor 9.0.0 and 10.5.0) in both directions.

mod alloc_interrupt;
mod cli;
mod devnet;
mod hostile;
mod interop;
mod miner;
mod peers;
mod renter;
mod renter_docker;
mod renter_world;
mod shell;
mod sn27_db;
mod snapshots;
mod wandb_cli;
mod wandb_fake;
