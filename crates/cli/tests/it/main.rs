//! End-to-end tests of the `nicompute` binary and of the Bittensor layer against the real Python
//! SDK (bittensor 9.0.0 and 10.5.0) in both directions.

// The compute tests' harness (processes with a clean environment, SSH keys, ports), shared so
// the rule is written once; the CLI's own helpers are in `harness`.
#[allow(dead_code)]
#[path = "../../../compute/tests/it/harness.rs"]
mod common;
mod harness;

mod alloc_interrupt;
mod api;
mod api_process;
mod api_world;
mod cli;
mod devnet;
mod docker_proxy;
mod gate;
mod hostile;
mod interop;
mod interop_chain;
mod miner;
mod peers;
mod real_runtime;
mod renter;
mod renter_docker;
mod renter_world;
mod sdk_devnet;
mod shell;
mod sn27_db;
mod snapshots;
mod wandb_cli;
mod wandb_fake;
mod web;
