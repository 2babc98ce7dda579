//! Signed extrinsics, format version 4: the signing payload, the extrinsic bytes, and the reverse
//! (decode a submitted extrinsic and check its signature), so a client and a server share one
//! definition of what is signed.
//!
//! Payload = call ‖ explicit extension data ‖ implicit extension data; when longer than 256 bytes
//! its blake2-256 hash is signed instead. Extrinsic = Compact(len) ‖ `0x84` (signed, version 4) ‖
//! address ‖ signature ‖ explicit data ‖ call, where the address (`MultiAddress::Id`) and the
//! signature (`MultiSignature::Sr25519`) are encoded as the runtime's own types.

use parity_scale_codec::{Compact, Encode};
use scale_value::Value;

use super::call::{value_account, value_bytes};
use super::extensions::{self, EncodedExtensions, ExplicitValues, ExtensionParams};
use super::metadata::{split_compact_len, Metadata};
use super::ExtrinsicError;
use crate::keys::{AccountId, Keypair, Signature};

/// The only extrinsic format written and read here.
pub const EXTRINSIC_VERSION: u8 = 4;
/// The version byte of a signed v4 extrinsic.
const SIGNED_V4: u8 = 0x80 | EXTRINSIC_VERSION;
/// Payloads longer than this are hashed before signing.
const MAX_UNHASHED_PAYLOAD: usize = 256;

/// What gets signed: the payload bytes (already hashed when long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPayload(pub Vec<u8>);

impl SigningPayload {
    /// call ‖ explicit ‖ implicit, blake2-256-hashed when over 256 bytes.
    pub fn new(call: &[u8], ext: &EncodedExtensions) -> Self {
        let mut payload = Vec::with_capacity(call.len() + ext.explicit.len() + ext.implicit.len());
        payload.extend_from_slice(call);
        payload.extend_from_slice(&ext.explicit);
        payload.extend_from_slice(&ext.implicit);
        if payload.len() > MAX_UNHASHED_PAYLOAD {
            payload = sp_crypto_hashing::blake2_256(&payload).to_vec();
        }
        Self(payload)
    }
}

/// An extrinsic ready to submit, with what a caller needs to find it in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedExtrinsic {
    /// The full encoding, length prefix included (what `author_submitExtrinsic` takes).
    pub bytes: Vec<u8>,
    /// blake2-256 of `bytes`: the transaction hash the node reports.
    pub hash: [u8; 32],
}

impl SignedExtrinsic {
    pub fn hex(&self) -> String {
        format!("0x{}", hex::encode(&self.bytes))
    }
}

/// Builds the extrinsic for `call` signed by `signer`'s signature over the payload.
pub fn assemble(
    md: &Metadata,
    signer: &AccountId,
    signature: &Signature,
    call: &[u8],
    ext: &EncodedExtensions,
) -> Result<SignedExtrinsic, ExtrinsicError> {
    if md.extrinsic_version != EXTRINSIC_VERSION {
        return Err(ExtrinsicError::Metadata(format!(
            "the runtime uses extrinsic format version {}; nicompute writes version {EXTRINSIC_VERSION}",
            md.extrinsic_version
        )));
    }
    let mut body = vec![SIGNED_V4];
    let address = Value::unnamed_variant("Id", [Value::from_bytes(signer.0)]);
    scale_value::scale::encode_as_type(&address, md.address_ty, &md.types, &mut body)
        .map_err(|e| ExtrinsicError::Metadata(format!("the runtime's address type: {e}")))?;
    let sig = Value::unnamed_variant("Sr25519", [Value::from_bytes(signature.0)]);
    scale_value::scale::encode_as_type(&sig, md.signature_ty, &md.types, &mut body)
        .map_err(|e| ExtrinsicError::Metadata(format!("the runtime's signature type: {e}")))?;
    body.extend_from_slice(&ext.explicit);
    body.extend_from_slice(call);
    let mut bytes = Compact(body.len() as u32).encode();
    bytes.extend_from_slice(&body);
    let hash = sp_crypto_hashing::blake2_256(&bytes);
    Ok(SignedExtrinsic { bytes, hash })
}

/// Encodes the extensions, signs the payload with `signer` and assembles the extrinsic.
pub fn sign(
    md: &Metadata,
    signer: &Keypair,
    call: &[u8],
    params: &ExtensionParams,
) -> Result<SignedExtrinsic, ExtrinsicError> {
    let ext = extensions::encode(md, params)?;
    let payload = SigningPayload::new(call, &ext);
    let signature = signer.sign(&payload.0);
    assemble(md, &signer.account_id(), &signature, call, &ext)
}

/// The same extrinsic with a zero signature: its length and weight are those of the real one,
/// so the runtime can quote its fee before anything is signed.
pub fn unsigned_for_fee(
    md: &Metadata,
    signer: &AccountId,
    call: &[u8],
    params: &ExtensionParams,
) -> Result<SignedExtrinsic, ExtrinsicError> {
    let ext = extensions::encode(md, params)?;
    assemble(md, signer, &Signature([0; 64]), call, &ext)
}

/// A submitted extrinsic taken apart (a server's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedExtrinsic {
    pub signer: AccountId,
    pub signature: Signature,
    /// The explicit extension bytes as sent.
    pub explicit: Vec<u8>,
    pub values: ExplicitValues,
    pub call: Vec<u8>,
}

impl DecodedExtrinsic {
    /// Checks the signature against the implicit data the verifier itself knows (its spec and
    /// transaction versions, genesis hash, and the hash of the era's birth block).
    pub fn verify(&self, md: &Metadata, implicit: &ExtensionParams) -> Result<(), ExtrinsicError> {
        let mine = extensions::encode(md, implicit)?;
        let ext = EncodedExtensions { explicit: self.explicit.clone(), implicit: mine.implicit };
        let payload = SigningPayload::new(&self.call, &ext);
        if self.signer.verify(&payload.0, &self.signature) {
            Ok(())
        } else {
            Err(ExtrinsicError::BadSignature)
        }
    }
}

/// Takes a signed v4 extrinsic apart (length prefix included); every byte must be accounted for.
pub fn decode(md: &Metadata, bytes: &[u8]) -> Result<DecodedExtrinsic, ExtrinsicError> {
    let bad = |why: String| ExtrinsicError::Malformed(format!("extrinsic: {why}"));
    let (len, body) = split_compact_len(bytes)?;
    if len != body.len() {
        return Err(bad(format!("length prefix says {len} bytes, {} follow", body.len())));
    }
    let (&version, mut rest) = body.split_first().ok_or_else(|| bad("empty".into()))?;
    if version != SIGNED_V4 {
        return Err(bad(format!("version byte {version:#04x}: only signed version-4 extrinsics (0x84) are accepted")));
    }
    let address = scale_value::scale::decode_as_type(&mut rest, md.address_ty, &md.types)
        .map_err(|e| bad(format!("address: {e}")))?;
    let signer = match &address.value {
        scale_value::ValueDef::Variant(v) if v.name == "Id" => v.values.values().next().and_then(value_account),
        _ => None,
    }
    .ok_or_else(|| bad("the address is not an account id (MultiAddress::Id)".into()))?;
    let sig = scale_value::scale::decode_as_type(&mut rest, md.signature_ty, &md.types)
        .map_err(|e| bad(format!("signature: {e}")))?;
    let signature = match &sig.value {
        scale_value::ValueDef::Variant(v) if v.name == "Sr25519" => v.values.values().next().and_then(value_bytes),
        _ => None,
    }
    .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
    .map(Signature)
    .ok_or_else(|| bad("only sr25519 signatures are accepted".into()))?;
    let before = rest;
    let values = extensions::decode_explicit(md, &mut rest)?;
    let explicit = before[..before.len() - rest.len()].to_vec();
    Ok(DecodedExtrinsic { signer, signature, explicit, values, call: rest.to_vec() })
}
