//! The NI Compute subnet (SN27) domain on top of the Bittensor layer.
//!
//! For now: the subnet's synapses, with the exact field names and defaults of SN27's
//! `compute/protocol.py`, so Python validators and miners read what we send.

pub mod protocol;
