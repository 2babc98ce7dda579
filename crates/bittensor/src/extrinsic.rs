//! Substrate extrinsics driven by the chain's own metadata: compose a call by pallet and call
//! name, fill every signed extension the runtime lists, sign, and read back the block's events.
//!
//! Built on the lower layers of the subxt family — `frame-metadata` (V14/V15), `scale-info`'s
//! type registry and `scale-value` for encoding and decoding values against it — rather than
//! `subxt`/`subxt-core`: about half the crates and compile time, no Rust 1.88 floor, and the
//! pieces a server needs (decode a submitted extrinsic, rebuild its signing payload, verify the
//! signature) come from the same tables as the client's, which subxt's client-only extension
//! builders do not give. Nothing here does I/O: `subtensor::tx` fetches the metadata, the
//! nonce and the block hashes, submits and watches.

pub mod call;
pub mod events;
pub mod extensions;
pub mod metadata;
pub mod signed;
pub mod storage;

pub use call::{Call, DecodedCall};
pub use events::{DispatchFailure, Event, Outcome};
pub use extensions::{Era, ExtensionParams};
pub use metadata::Metadata;
pub use signed::{SignedExtrinsic, SigningPayload};

/// What went wrong encoding or decoding against a runtime's metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtrinsicError {
    /// The metadata itself is unusable (does not decode, unsupported version, malformed).
    #[error("{0}")]
    Metadata(String),
    /// The runtime lacks a pallet, call, storage item or constant this operation needs.
    #[error("{0}: this chain's runtime does not offer it (is the endpoint a Subtensor chain?)")]
    Unknown(String),
    /// A call argument or storage key does not fit the runtime's type.
    #[error("{0}")]
    Arg(String),
    /// A signed extension carries data this code cannot fill; signing without it would fail.
    #[error("the runtime requires the signed extension {identifier} (data of type {type_name}), which nicompute does not know how to fill; update nicompute")]
    UnsupportedExtension { identifier: String, type_name: String },
    /// Bytes from the chain or a client that do not decode as the metadata says.
    #[error("malformed {0}")]
    Malformed(String),
    /// The signature does not verify over the rebuilt signing payload.
    #[error("the signature does not match the signing payload (wrong key, genesis, spec or transaction version, era or nonce)")]
    BadSignature,
}
