//! The compute crate's integration tests, one binary: the allocator against in-process miners,
//! the database against SN27's schema, the Docker and local runtimes as a renter's SSH client
//! sees them, and the miner end to end. What they share is in [`harness`].

mod harness;

mod allocator;
mod auth;
mod db;
mod docker;
mod docker_warm;
mod hostile;
mod local_runtime;
mod miner;
