//! The NI Compute subnet (SN27) domain on top of the Bittensor layer: the subnet's synapses,
//! the credentials envelope, hardware specs, container runtimes and the miner.

pub mod allocator;
pub mod crypto;
pub mod db;
pub mod known_hosts;
pub mod miner;
pub mod protocol;
pub mod renter;
pub mod runtime;
pub mod specs;
pub mod ssh_banner;
pub mod sshexec;
