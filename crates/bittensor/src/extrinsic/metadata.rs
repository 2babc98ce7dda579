//! The runtime's own description of itself (metadata V14 or V15), reduced to what a client that
//! writes needs: pallets by name and index, their calls, events, errors (with the runtime's doc
//! text), storage items and constants, the signed extensions and the extrinsic's types.
//!
//! Every encoding and decoding in this crate's extrinsic layer goes through this, so one code path
//! serves spec 218 (the RAO runtime chopsticks runs), finney's spec 343 and whatever comes next.
//! The type registry itself stays `scale-info`'s; values are encoded and decoded against it with
//! `scale-value`, so nothing here walks a registry to encode a value by hand.

use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use parity_scale_codec::{Compact, Decode};
use scale_info::{form::PortableForm, PortableRegistry, TypeDef};

use super::ExtrinsicError;

/// The metadata magic number, "meta" read as a little-endian u32.
const MAGIC: u32 = 0x6174_656d;

/// How a storage map hashes each key part (the SCALE order of `frame-metadata`'s enum).
pub use frame_metadata::v14::StorageHasher;

/// One storage item of a pallet.
#[derive(Debug, Clone)]
pub struct StorageEntry {
    pub name: String,
    /// One hasher per key part; empty for a plain value.
    pub hashers: Vec<StorageHasher>,
    /// The key's type: one part, or a tuple of parts (one per hasher). `None` for a plain value.
    pub key_ty: Option<u32>,
    pub value_ty: u32,
    /// The encoded default returned for a missing key (empty for an `Option` item).
    pub default: Vec<u8>,
    /// `true`: a missing key reads as `None`, not as the default.
    pub optional: bool,
}

/// One constant of a pallet.
#[derive(Debug, Clone)]
pub struct Constant {
    pub name: String,
    pub ty: u32,
    pub value: Vec<u8>,
}

/// One pallet: its index in the runtime and the types of its calls, events and errors.
#[derive(Debug, Clone)]
pub struct Pallet {
    pub name: String,
    pub index: u8,
    pub call_ty: Option<u32>,
    pub event_ty: Option<u32>,
    pub error_ty: Option<u32>,
    /// The storage prefix (the pallet's name in practice).
    pub storage_prefix: String,
    pub storage: Vec<StorageEntry>,
    pub constants: Vec<Constant>,
}

/// One signed extension, in the order the runtime lists them (the order of their data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedExtension {
    pub identifier: String,
    /// The explicit data's type (carried in the extrinsic).
    pub ty: u32,
    /// The implicit ("additional signed") data's type (signed, never sent).
    pub additional_ty: u32,
}

/// One runtime-API method (V15 only): what `state_call` of `{api}_{method}` returns.
#[derive(Debug, Clone)]
pub struct RuntimeApiMethod {
    /// `{trait}_{method}`, the name `state_call` takes.
    pub name: String,
    pub inputs: Vec<(String, u32)>,
    pub output: u32,
}

/// The runtime's metadata, V14 or V15, in one shape.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// 14 or 15.
    pub version: u32,
    pub types: PortableRegistry,
    pub pallets: Vec<Pallet>,
    /// The extrinsic format version (4 is the only one written here).
    pub extrinsic_version: u8,
    pub address_ty: u32,
    pub call_ty: u32,
    pub signature_ty: u32,
    pub signed_extensions: Vec<SignedExtension>,
    /// Runtime-API methods (empty for V14 metadata).
    pub runtime_apis: Vec<RuntimeApiMethod>,
}

impl Metadata {
    /// From `state_getMetadata`'s bytes (`"meta"` ‖ version ‖ metadata).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ExtrinsicError> {
        let prefixed = RuntimeMetadataPrefixed::decode(&mut &bytes[..])
            .map_err(|e| ExtrinsicError::Metadata(format!("the runtime metadata does not decode: {e}")))?;
        if prefixed.0 != MAGIC {
            return Err(ExtrinsicError::Metadata(format!(
                "the bytes are not runtime metadata (magic {:#010x}, expected \"meta\")",
                prefixed.0
            )));
        }
        match prefixed.1 {
            RuntimeMetadata::V14(m) => Self::from_v14(m),
            RuntimeMetadata::V15(m) => Self::from_v15(m),
            other => Err(ExtrinsicError::Metadata(format!(
                "runtime metadata V{} is not supported (V14 and V15 are)",
                other.version()
            ))),
        }
    }

    /// From `state_call("Metadata_metadata_at_version", v)`: `Option<OpaqueMetadata>`.
    pub fn from_versioned_option(bytes: &[u8]) -> Result<Self, ExtrinsicError> {
        let inner = Option::<Vec<u8>>::decode(&mut &bytes[..])
            .map_err(|e| ExtrinsicError::Metadata(format!("Metadata_metadata_at_version result: {e}")))?
            .ok_or_else(|| ExtrinsicError::Metadata("the runtime does not offer that metadata version".into()))?;
        Self::from_bytes(&inner)
    }

    fn from_v14(m: frame_metadata::v14::RuntimeMetadataV14) -> Result<Self, ExtrinsicError> {
        // V14 names the extrinsic's parts only as type parameters of the extrinsic type.
        let ext_ty = m.types.resolve(m.extrinsic.ty.id).ok_or_else(|| malformed("the extrinsic type is missing"))?;
        let param = |name: &str| {
            ext_ty
                .type_params
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.ty.map(|t| t.id))
                .ok_or_else(|| malformed(&format!("the extrinsic type has no '{name}' parameter")))
        };
        let (address_ty, call_ty, signature_ty) = (param("Address")?, param("Call")?, param("Signature")?);
        let pallets = m.pallets.into_iter().map(pallet_v14).collect();
        Ok(Self {
            version: 14,
            types: m.types,
            pallets,
            extrinsic_version: m.extrinsic.version,
            address_ty,
            call_ty,
            signature_ty,
            signed_extensions: m
                .extrinsic
                .signed_extensions
                .into_iter()
                .map(|e| SignedExtension {
                    identifier: e.identifier,
                    ty: e.ty.id,
                    additional_ty: e.additional_signed.id,
                })
                .collect(),
            runtime_apis: Vec::new(),
        })
    }

    fn from_v15(m: frame_metadata::v15::RuntimeMetadataV15) -> Result<Self, ExtrinsicError> {
        let pallets = m
            .pallets
            .into_iter()
            .map(|p| {
                pallet_v14(frame_metadata::v14::PalletMetadata {
                    name: p.name,
                    storage: p.storage,
                    calls: p.calls,
                    event: p.event,
                    constants: p
                        .constants
                        .into_iter()
                        .map(|c| frame_metadata::v14::PalletConstantMetadata {
                            name: c.name,
                            ty: c.ty,
                            value: c.value,
                            docs: c.docs,
                        })
                        .collect(),
                    error: p.error,
                    index: p.index,
                })
            })
            .collect();
        let runtime_apis = m
            .apis
            .into_iter()
            .flat_map(|api| {
                let trait_name = api.name;
                api.methods.into_iter().map(move |method| RuntimeApiMethod {
                    name: format!("{trait_name}_{}", method.name),
                    inputs: method.inputs.into_iter().map(|i| (i.name, i.ty.id)).collect(),
                    output: method.output.id,
                })
            })
            .collect();
        Ok(Self {
            version: 15,
            types: m.types,
            pallets,
            extrinsic_version: m.extrinsic.version,
            address_ty: m.extrinsic.address_ty.id,
            call_ty: m.extrinsic.call_ty.id,
            signature_ty: m.extrinsic.signature_ty.id,
            signed_extensions: m
                .extrinsic
                .signed_extensions
                .into_iter()
                .map(|e| SignedExtension {
                    identifier: e.identifier,
                    ty: e.ty.id,
                    additional_ty: e.additional_signed.id,
                })
                .collect(),
            runtime_apis,
        })
    }

    pub fn pallet(&self, name: &str) -> Result<&Pallet, ExtrinsicError> {
        self.pallets
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ExtrinsicError::Unknown(format!("the runtime has no pallet {name}")))
    }

    pub fn pallet_by_index(&self, index: u8) -> Option<&Pallet> {
        self.pallets.iter().find(|p| p.index == index)
    }

    /// The variant named `name` of a pallet's call, event or error enum.
    pub fn variant(&self, enum_ty: u32, name: &str) -> Option<&scale_info::Variant<PortableForm>> {
        self.variants(enum_ty).iter().find(|v| v.name == name)
    }

    pub fn variant_by_index(&self, enum_ty: u32, index: u8) -> Option<&scale_info::Variant<PortableForm>> {
        self.variants(enum_ty).iter().find(|v| v.index == index)
    }

    fn variants(&self, enum_ty: u32) -> &[scale_info::Variant<PortableForm>] {
        match self.types.resolve(enum_ty).map(|t| &t.type_def) {
            Some(TypeDef::Variant(v)) => &v.variants,
            _ => &[],
        }
    }

    pub fn storage(&self, pallet: &str, item: &str) -> Result<(&Pallet, &StorageEntry), ExtrinsicError> {
        let p = self.pallet(pallet)?;
        let e = p
            .storage
            .iter()
            .find(|e| e.name == item)
            .ok_or_else(|| ExtrinsicError::Unknown(format!("the runtime has no storage item {pallet}.{item}")))?;
        Ok((p, e))
    }

    pub fn constant(&self, pallet: &str, name: &str) -> Result<&Constant, ExtrinsicError> {
        self.pallet(pallet)?
            .constants
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ExtrinsicError::Unknown(format!("the runtime has no constant {pallet}.{name}")))
    }

    /// The runtime-API method `{trait}_{method}` (V15 metadata only).
    pub fn runtime_api(&self, name: &str) -> Option<&RuntimeApiMethod> {
        self.runtime_apis.iter().find(|m| m.name == name)
    }

    /// The type's path as Rust names it (`sp_runtime::generic::era::Era`), or its shape.
    pub fn type_name(&self, ty: u32) -> String {
        match self.types.resolve(ty) {
            Some(t) if !t.path.segments.is_empty() => t.path.segments.join("::"),
            Some(t) => match &t.type_def {
                TypeDef::Primitive(p) => format!("{p:?}").to_lowercase(),
                TypeDef::Tuple(tu) if tu.fields.is_empty() => "()".into(),
                TypeDef::Compact(c) => format!("Compact<{}>", self.type_name(c.type_param.id)),
                TypeDef::Sequence(s) => format!("Vec<{}>", self.type_name(s.type_param.id)),
                TypeDef::Array(a) => format!("[{}; {}]", self.type_name(a.type_param.id), a.len),
                other => format!("{other:?}").chars().take(60).collect(),
            },
            None => format!("(type {ty} missing from the registry)"),
        }
    }

    /// The type inside single-field wrappers (`CheckMortality(Era)` → `Era`).
    pub fn innermost(&self, ty: u32) -> u32 {
        let mut ty = ty;
        for _ in 0..8 {
            match self.types.resolve(ty).map(|t| &t.type_def) {
                Some(TypeDef::Composite(c)) if c.fields.len() == 1 => ty = c.fields[0].ty.id,
                _ => break,
            }
        }
        ty
    }

    /// Whether values of the type take no bytes at all (`()`, empty structs, tuples of those).
    /// Signed extensions with zero-sized data can be filled without knowing what they are.
    pub fn is_zero_sized(&self, ty: u32) -> bool {
        self.zero_sized_at(ty, 0)
    }

    fn zero_sized_at(&self, ty: u32, depth: u32) -> bool {
        if depth > 32 {
            return false;
        }
        match self.types.resolve(ty).map(|t| &t.type_def) {
            Some(TypeDef::Composite(c)) => c.fields.iter().all(|f| self.zero_sized_at(f.ty.id, depth + 1)),
            Some(TypeDef::Tuple(t)) => t.fields.iter().all(|f| self.zero_sized_at(f.id, depth + 1)),
            Some(TypeDef::Array(a)) => a.len == 0 || self.zero_sized_at(a.type_param.id, depth + 1),
            _ => false,
        }
    }
}

fn malformed(what: &str) -> ExtrinsicError {
    ExtrinsicError::Metadata(format!("malformed runtime metadata: {what}"))
}

fn pallet_v14(p: frame_metadata::v14::PalletMetadata<PortableForm>) -> Pallet {
    use frame_metadata::v14::{StorageEntryModifier, StorageEntryType};
    let (storage_prefix, storage) = match p.storage {
        Some(s) => (
            s.prefix,
            s.entries
                .into_iter()
                .map(|e| {
                    let optional = matches!(e.modifier, StorageEntryModifier::Optional);
                    let (hashers, key_ty, value_ty) = match e.ty {
                        StorageEntryType::Plain(v) => (Vec::new(), None, v.id),
                        StorageEntryType::Map { hashers, key, value } => (hashers, Some(key.id), value.id),
                    };
                    StorageEntry { name: e.name, hashers, key_ty, value_ty, default: e.default, optional }
                })
                .collect(),
        ),
        None => (p.name.clone(), Vec::new()),
    };
    Pallet {
        index: p.index,
        call_ty: p.calls.map(|c| c.ty.id),
        event_ty: p.event.map(|e| e.ty.id),
        error_ty: p.error.map(|e| e.ty.id),
        storage_prefix,
        storage,
        constants: p.constants.into_iter().map(|c| Constant { name: c.name, ty: c.ty.id, value: c.value }).collect(),
        name: p.name,
    }
}

/// Reads a SCALE compact length prefix, returning it and the rest.
pub(crate) fn split_compact_len(bytes: &[u8]) -> Result<(usize, &[u8]), ExtrinsicError> {
    let mut rest = bytes;
    let len =
        Compact::<u32>::decode(&mut rest).map_err(|e| ExtrinsicError::Malformed(format!("bad length prefix: {e}")))?.0;
    Ok((len as usize, rest))
}
