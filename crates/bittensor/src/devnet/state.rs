//! The chain's state as the runtime code sees it while it builds a block or answers a runtime
//! call: storage items by pallet and item name, encoded and decoded with the runtime's metadata
//! (so `System.Account` or `SubtensorModule.Axons` have exactly finney's SCALE layout), over the
//! stored state of a parent block. Writes collect in layers: an extrinsic's call runs in a layer
//! of its own that a failed dispatch throws away (its fee and nonce stay, as on a real chain).

use std::sync::Arc;

use scale_info::TypeDef;
use scale_value::{Composite, Primitive, Value, ValueDef};

use super::store::{Changes, Store, StoreError};
use crate::extrinsic::call::value_u128;
use crate::extrinsic::{storage, ExtrinsicError, Metadata};

/// A fault of the chain itself (its database or its own encoding), never a user's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("devnet runtime encoding: {0}")]
    Codec(#[from] ExtrinsicError),
}

/// Storage over a block's state, with pending writes on top.
pub struct State<'a> {
    store: &'a Store,
    pub md: Arc<Metadata>,
    /// The block whose state is read underneath.
    pub at: u64,
    layers: Vec<Changes>,
}

impl std::fmt::Debug for State<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("at", &self.at).field("layers", &self.layers.len()).finish_non_exhaustive()
    }
}

impl<'a> State<'a> {
    pub fn new(store: &'a Store, md: Arc<Metadata>, at: u64) -> Self {
        Self { store, md, at, layers: vec![Changes::new()] }
    }

    pub fn raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.get(key) {
                return Ok(v.clone());
            }
        }
        Ok(self.store.read(key, self.at)?)
    }

    /// Every key under `prefix` that holds a value, in order (stored and pending writes).
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        let mut all: std::collections::BTreeSet<Vec<u8>> =
            self.store.keys(prefix, u32::MAX, None, self.at)?.into_iter().collect();
        for layer in &self.layers {
            for (k, v) in layer.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
                if v.is_some() {
                    all.insert(k.clone());
                } else {
                    all.remove(k);
                }
            }
        }
        Ok(all.into_iter().collect())
    }

    pub fn set_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.layers.last_mut().expect("a layer").insert(key, value);
    }

    /// Starts a layer that [`State::rollback`] can throw away.
    pub fn begin(&mut self) {
        self.layers.push(Changes::new());
    }

    /// Keeps the top layer's writes.
    pub fn commit(&mut self) {
        if self.layers.len() > 1 {
            let top = self.layers.pop().expect("a layer");
            self.layers.last_mut().expect("a layer").extend(top);
        }
    }

    /// Throws the top layer's writes away.
    pub fn rollback(&mut self) {
        if self.layers.len() > 1 {
            self.layers.pop();
        }
    }

    /// Every write, for the block's commit.
    pub fn into_changes(mut self) -> Changes {
        while self.layers.len() > 1 {
            self.commit();
        }
        self.layers.pop().unwrap_or_default()
    }

    /// The storage key of `pallet.item` at `keys`.
    pub fn key(&self, pallet: &str, item: &str, keys: &[Value]) -> Result<Vec<u8>, StateError> {
        Ok(storage::key(&self.md, pallet, item, keys)?)
    }

    /// The decoded value (the item's default when absent, `None` for an absent optional item).
    pub fn get(&self, pallet: &str, item: &str, keys: &[Value]) -> Result<Option<Value<u32>>, StateError> {
        let raw = self.raw(&self.key(pallet, item, keys)?)?;
        Ok(storage::decode_value(&self.md, pallet, item, raw.as_deref())?)
    }

    /// Whether the key holds a value (not its default).
    pub fn exists(&self, pallet: &str, item: &str, keys: &[Value]) -> Result<bool, StateError> {
        Ok(self.raw(&self.key(pallet, item, keys)?)?.is_some())
    }

    /// A number item (looking through wrappers), 0 when absent without a default.
    pub fn num(&self, pallet: &str, item: &str, keys: &[Value]) -> Result<u128, StateError> {
        Ok(self.get(pallet, item, keys)?.as_ref().and_then(value_u128).unwrap_or(0))
    }

    /// Encodes `value` as the item's type and writes it.
    pub fn put(&mut self, pallet: &str, item: &str, keys: &[Value], value: &Value) -> Result<(), StateError> {
        let key = self.key(pallet, item, keys)?;
        let (_, entry) = self.md.storage(pallet, item)?;
        let mut bytes = Vec::new();
        scale_value::scale::encode_as_type(value, entry.value_ty, &self.md.types, &mut bytes).map_err(|e| {
            ExtrinsicError::Arg(format!(
                "{pallet}.{item}: the value does not fit {}: {e}",
                self.md.type_name(entry.value_ty)
            ))
        })?;
        self.set_raw(key, Some(bytes));
        Ok(())
    }

    pub fn put_num(&mut self, pallet: &str, item: &str, keys: &[Value], n: u128) -> Result<(), StateError> {
        let ty = self.md.storage(pallet, item)?.1.value_ty;
        let v = number_as(&self.md, ty, n);
        self.put(pallet, item, keys, &v)
    }

    pub fn remove(&mut self, pallet: &str, item: &str, keys: &[Value]) -> Result<(), StateError> {
        let key = self.key(pallet, item, keys)?;
        self.set_raw(key, None);
        Ok(())
    }
}

/// `n` shaped as type `ty` wants it: a plain number, or inside single-field wrappers
/// (`TaoCurrency(u64)`, `FixedU128 { bits }`).
pub fn number_as(md: &Metadata, ty: u32, n: u128) -> Value {
    match md.types.resolve(ty).map(|t| &t.type_def) {
        Some(TypeDef::Composite(c)) if c.fields.len() == 1 => {
            let inner = number_as(md, c.fields[0].ty.id, n);
            match &c.fields[0].name {
                Some(name) => Value::named_composite([(name.clone(), inner)]),
                None => Value::unnamed_composite([inner]),
            }
        }
        _ => Value::u128(n),
    }
}

/// The zero value of a type: 0, false, empty sequences, `None`, each enum's first variant. The
/// starting point for a big runtime-API answer (the 70-field metagraph) whose known fields are
/// then filled by name.
pub fn default_value(md: &Metadata, ty: u32) -> Value {
    default_at(md, ty, 0)
}

fn default_at(md: &Metadata, ty: u32, depth: u32) -> Value {
    let Some(t) = md.types.resolve(ty) else { return Value::unnamed_composite([]) };
    if depth > 48 {
        return Value::unnamed_composite([]);
    }
    match &t.type_def {
        TypeDef::Composite(c) => fields_default(md, &c.fields, depth),
        TypeDef::Variant(v) => match v.variants.iter().min_by_key(|v| v.index) {
            Some(first) => {
                Value::variant(first.name.clone(), fields_default(md, &first.fields, depth).value.into_composite())
            }
            None => Value::unnamed_composite([]),
        },
        TypeDef::Sequence(_) | TypeDef::BitSequence(_) => Value::unnamed_composite([]),
        TypeDef::Array(a) => Value::unnamed_composite((0..a.len).map(|_| default_at(md, a.type_param.id, depth + 1))),
        TypeDef::Tuple(tu) => Value::unnamed_composite(tu.fields.iter().map(|f| default_at(md, f.id, depth + 1))),
        TypeDef::Primitive(p) => match p {
            scale_info::TypeDefPrimitive::Bool => Value::bool(false),
            scale_info::TypeDefPrimitive::Char => Value::char('\0'),
            scale_info::TypeDefPrimitive::Str => Value::string(""),
            scale_info::TypeDefPrimitive::I8
            | scale_info::TypeDefPrimitive::I16
            | scale_info::TypeDefPrimitive::I32
            | scale_info::TypeDefPrimitive::I64
            | scale_info::TypeDefPrimitive::I128
            | scale_info::TypeDefPrimitive::I256 => Value::i128(0),
            _ => Value::u128(0),
        },
        TypeDef::Compact(_) => Value::u128(0),
    }
}

fn fields_default(md: &Metadata, fields: &[scale_info::Field<scale_info::form::PortableForm>], depth: u32) -> Value {
    if fields.first().is_some_and(|f| f.name.is_some()) {
        Value::named_composite(
            fields.iter().map(|f| (f.name.clone().unwrap_or_default(), default_at(md, f.ty.id, depth + 1))),
        )
    } else {
        Value::unnamed_composite(fields.iter().map(|f| default_at(md, f.ty.id, depth + 1)))
    }
}

trait IntoComposite {
    fn into_composite(self) -> Composite<()>;
}

impl IntoComposite for ValueDef<()> {
    fn into_composite(self) -> Composite<()> {
        match self {
            ValueDef::Composite(c) => c,
            _ => Composite::Unnamed(Vec::new()),
        }
    }
}

/// Replaces the named field of a composite value (no-op when it has no such field).
pub fn set_field(v: &mut Value, name: &str, new: Value) -> bool {
    if let ValueDef::Composite(Composite::Named(fields)) = &mut v.value {
        if let Some((_, slot)) = fields.iter_mut().find(|(n, _)| n == name) {
            *slot = new;
            return true;
        }
    }
    false
}

/// A field's type id by name, in a composite type.
pub fn field_type(md: &Metadata, ty: u32, name: &str) -> Option<u32> {
    match md.types.resolve(ty).map(|t| &t.type_def) {
        Some(TypeDef::Composite(c)) => c.fields.iter().find(|f| f.name.as_deref() == Some(name)).map(|f| f.ty.id),
        _ => None,
    }
}

/// `Some(v)`.
pub fn some(v: Value) -> Value {
    Value::unnamed_variant("Some", [v])
}

/// `None`.
pub fn none() -> Value {
    Value::unnamed_variant("None", [])
}

/// A decoded value turned back into one that can be encoded again (type ids dropped).
pub fn strip(v: Value<u32>) -> Value {
    v.remove_context()
}

/// A boolean in a decoded value.
pub fn as_bool(v: &Value<u32>) -> Option<bool> {
    match &v.value {
        ValueDef::Primitive(Primitive::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// The items of a decoded sequence.
pub fn items(v: &Value<u32>) -> Vec<&Value<u32>> {
    match &v.value {
        ValueDef::Composite(c) => c.values().collect(),
        _ => Vec::new(),
    }
}
