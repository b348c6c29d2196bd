//! The ABI view of WIT types: a tree computed once per function that carries, for every
//! node, the `wasm_wave` type (to build values), the wasm32 size and alignment (from
//! [`SizeAlign`]), the field/payload offsets and the flattened core types.

use std::collections::HashMap;
use std::sync::Arc;

use wasm_wave::value::Type as WaveType;
use wit_parser::{
    FlagsRepr, Handle, Int, Resolve, SizeAlign, Type as WitType, TypeDefKind, TypeId,
};

use super::{AbiError, CoreType, MAX_FLAT_PARAMS};

/// One node of the ABI type tree.
#[derive(Debug)]
pub(crate) struct AbiType {
    pub kind: Kind,
    /// The `wasm_wave` type of values of this type.
    pub wave: WaveType,
    /// Size in linear memory (wasm32).
    pub size: u32,
    /// Alignment in linear memory (wasm32).
    pub align: u32,
    /// The flattened core types, or `None` if there are more than `MAX_FLAT_PARAMS` of them
    /// (such a type is never passed flat).
    pub flat: Option<Vec<CoreType>>,
    /// A human-readable name for error messages (the WIT name if the type has one).
    pub name: String,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    /// `own<T>` / `borrow<T>`: an `i32` handle chosen by the host, a `u32` value.
    Handle,
    List(Arc<AbiType>),
    /// `list<T, N>`: stored inline, flattened as N copies of T; a wave `list<T>` value.
    FixedList {
        elem: Arc<AbiType>,
        len: u32,
    },
    /// `map<K, V>`: despecialised to `list<tuple<K, V>>`.
    Map {
        key: Arc<AbiType>,
        value: Arc<AbiType>,
        /// Offset of the value in a `tuple<K, V>` entry.
        value_offset: u32,
        entry_size: u32,
        entry_align: u32,
    },
    Record(Vec<Field>),
    Tuple(Vec<Field>),
    Variant(Cases),
    Enum(Cases),
    Option(Cases),
    Result(Cases),
    Flags {
        names: Vec<String>,
        repr: FlagsLayout,
    },
}

#[derive(Debug)]
pub(crate) struct Field {
    pub name: String,
    pub ty: Arc<AbiType>,
    pub offset: u32,
}

/// The cases of a variant-like type (variant, enum, option, result).
#[derive(Debug)]
pub(crate) struct Cases {
    pub cases: Vec<Case>,
    pub tag: Tag,
    /// Offset of the payload in memory.
    pub payload_offset: u32,
    /// The joined flat types of the payloads (the flat type minus the discriminant), if flat.
    pub payload_flat: Option<Vec<CoreType>>,
}

#[derive(Debug)]
pub(crate) struct Case {
    pub name: String,
    pub ty: Option<Arc<AbiType>>,
}

/// Discriminant size in memory.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tag {
    U8,
    U16,
    U32,
}

impl Tag {
    fn from_int(int: Int) -> Result<Self, AbiError> {
        match int {
            Int::U8 => Ok(Tag::U8),
            Int::U16 => Ok(Tag::U16),
            Int::U32 => Ok(Tag::U32),
            Int::U64 => Err(AbiError::Internal("64-bit discriminant".into())),
        }
    }
}

/// Memory representation of flags.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FlagsLayout {
    U8,
    U16,
    /// This many little-endian `u32` words.
    U32s(usize),
}

/// Builds [`AbiType`] trees from WIT types, sharing the nodes of named types.
pub(crate) struct Builder<'a> {
    resolve: &'a Resolve,
    sizes: SizeAlign,
    cache: HashMap<TypeId, Arc<AbiType>>,
}

fn to_u32(n: usize, what: &str) -> Result<u32, AbiError> {
    u32::try_from(n).map_err(|_| AbiError::UnsupportedType {
        ty: what.to_string(),
        reason: "its size does not fit in 32-bit memory".into(),
    })
}

/// Concatenates flat type lists, giving up (`None`) beyond `MAX_FLAT_PARAMS`.
fn concat_flat<'t>(
    parts: impl IntoIterator<Item = &'t Option<Vec<CoreType>>>,
) -> Option<Vec<CoreType>> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(part.as_ref()?);
        if out.len() > MAX_FLAT_PARAMS {
            return None;
        }
    }
    Some(out)
}

/// The canonical ABI `join` of two flat types of variant payloads.
fn join(a: CoreType, b: CoreType) -> CoreType {
    match (a, b) {
        _ if a == b => a,
        (CoreType::I32, CoreType::F32) | (CoreType::F32, CoreType::I32) => CoreType::I32,
        _ => CoreType::I64,
    }
}

/// The flat types of a variant's payloads, joined position by position.
fn join_flat<'t>(cases: impl IntoIterator<Item = Option<&'t AbiType>>) -> Option<Vec<CoreType>> {
    let mut out: Vec<CoreType> = Vec::new();
    for ty in cases.into_iter().flatten() {
        let flat = ty.flat.as_ref()?;
        for (i, t) in flat.iter().enumerate() {
            match out.get_mut(i) {
                Some(slot) => *slot = join(*slot, *t),
                None => out.push(*t),
            }
        }
    }
    // One more for the discriminant.
    if out.len() + 1 > MAX_FLAT_PARAMS {
        return None;
    }
    Some(out)
}

impl<'a> Builder<'a> {
    pub fn new(resolve: &'a Resolve) -> Result<Self, AbiError> {
        let mut sizes = SizeAlign::default();
        sizes
            .fill(resolve)
            .map_err(|e| AbiError::InvalidWit(format!("{e:#}")))?;
        Ok(Builder {
            resolve,
            sizes,
            cache: HashMap::new(),
        })
    }

    pub fn size(&self, ty: &WitType) -> Result<u32, AbiError> {
        to_u32(self.sizes.size(ty).size_wasm32(), "type")
    }

    pub fn align(&self, ty: &WitType) -> u32 {
        // Alignments are at most 8.
        self.sizes.align(ty).align_wasm32() as u32
    }

    /// Layout of a sequence of values stored like a record: (offsets, size, align).
    pub fn record_layout(&self, types: &[WitType]) -> Result<(Vec<u32>, u32, u32), AbiError> {
        let info = self.sizes.record(types.iter());
        let offsets = self
            .sizes
            .field_offsets(types.iter())
            .into_iter()
            .map(|(off, _)| to_u32(off.size_wasm32(), "record"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            offsets,
            to_u32(info.size.size_wasm32(), "record")?,
            info.align.align_wasm32() as u32,
        ))
    }

    pub fn build(&mut self, ty: &WitType) -> Result<Arc<AbiType>, AbiError> {
        let (kind, wave, flat, name) = match ty {
            WitType::Bool => (Kind::Bool, WaveType::BOOL, CoreType::I32, "bool"),
            WitType::U8 => (Kind::U8, WaveType::U8, CoreType::I32, "u8"),
            WitType::U16 => (Kind::U16, WaveType::U16, CoreType::I32, "u16"),
            WitType::U32 => (Kind::U32, WaveType::U32, CoreType::I32, "u32"),
            WitType::U64 => (Kind::U64, WaveType::U64, CoreType::I64, "u64"),
            WitType::S8 => (Kind::S8, WaveType::S8, CoreType::I32, "s8"),
            WitType::S16 => (Kind::S16, WaveType::S16, CoreType::I32, "s16"),
            WitType::S32 => (Kind::S32, WaveType::S32, CoreType::I32, "s32"),
            WitType::S64 => (Kind::S64, WaveType::S64, CoreType::I64, "s64"),
            WitType::F32 => (Kind::F32, WaveType::F32, CoreType::F32, "f32"),
            WitType::F64 => (Kind::F64, WaveType::F64, CoreType::F64, "f64"),
            WitType::Char => (Kind::Char, WaveType::CHAR, CoreType::I32, "char"),
            WitType::String => {
                return Ok(Arc::new(AbiType {
                    kind: Kind::String,
                    wave: WaveType::STRING,
                    size: 8,
                    align: 4,
                    flat: Some(vec![CoreType::I32, CoreType::I32]),
                    name: "string".into(),
                }))
            }
            WitType::ErrorContext => {
                return Err(AbiError::UnsupportedType {
                    ty: "error-context".into(),
                    reason: "error contexts are not supported".into(),
                })
            }
            WitType::Id(id) => return self.build_id(*id),
        };
        Ok(Arc::new(AbiType {
            kind,
            wave,
            size: self.size(ty)?,
            align: self.align(ty),
            flat: Some(vec![flat]),
            name: name.into(),
        }))
    }

    fn build_id(&mut self, id: TypeId) -> Result<Arc<AbiType>, AbiError> {
        if let Some(cached) = self.cache.get(&id) {
            return Ok(cached.clone());
        }
        let resolve = self.resolve;
        let def = resolve
            .types
            .get(id)
            .ok_or_else(|| AbiError::InvalidWit(format!("unknown type id {id:?}")))?;
        let ty = WitType::Id(id);
        let size = self.size(&ty)?;
        let align = self.align(&ty);
        let built = match &def.kind {
            TypeDefKind::Type(inner) => {
                // A type alias: same representation as its target.
                self.build(inner)?
            }
            TypeDefKind::Handle(Handle::Own(_) | Handle::Borrow(_)) => Arc::new(AbiType {
                kind: Kind::Handle,
                wave: WaveType::U32,
                size,
                align,
                flat: Some(vec![CoreType::I32]),
                name: def
                    .name
                    .clone()
                    .unwrap_or_else(|| handle_name(resolve, &def.kind)),
            }),
            TypeDefKind::Resource => {
                return Err(AbiError::UnsupportedType {
                    ty: def.name.clone().unwrap_or_else(|| "resource".into()),
                    reason: "a resource can only be passed as an own/borrow handle".into(),
                })
            }
            TypeDefKind::Future(_) | TypeDefKind::Stream(_) => {
                return Err(AbiError::UnsupportedType {
                    ty: def.kind.as_str().into(),
                    reason: "futures and streams are not supported".into(),
                })
            }
            TypeDefKind::Unknown => {
                return Err(AbiError::InvalidWit("unresolved type".into()));
            }
            TypeDefKind::List(elem) => {
                let elem = self.build(elem)?;
                let wave = WaveType::list(elem.wave.clone());
                self.node(
                    def.name.as_deref(),
                    Kind::List(elem),
                    wave,
                    size,
                    align,
                    Some(vec![CoreType::I32, CoreType::I32]),
                )
            }
            TypeDefKind::FixedLengthList(elem_ty, len) => {
                if *len == 0 {
                    return Err(AbiError::UnsupportedType {
                        ty: def.name.clone().unwrap_or_else(|| "list<_, 0>".into()),
                        reason: "fixed-length lists of no elements are not supported".into(),
                    });
                }
                let elem = self.build(elem_ty)?;
                let wave = WaveType::list(elem.wave.clone());
                let flat = match &elem.flat {
                    Some(f) if f.len().saturating_mul(*len as usize) <= MAX_FLAT_PARAMS => {
                        Some(f.repeat(*len as usize))
                    }
                    _ => None,
                };
                self.node(
                    def.name.as_deref(),
                    Kind::FixedList { elem, len: *len },
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Map(key_ty, value_ty) => {
                let key = self.build(key_ty)?;
                let value = self.build(value_ty)?;
                let wave =
                    WaveType::map(key.wave.clone(), value.wave.clone()).ok_or_else(|| {
                        AbiError::UnsupportedType {
                            ty: format!("map<{}, {}>", key.wave, value.wave),
                            reason: "invalid map key type".into(),
                        }
                    })?;
                let (offsets, entry_size, entry_align) =
                    self.record_layout(&[*key_ty, *value_ty])?;
                self.node(
                    def.name.as_deref(),
                    Kind::Map {
                        key,
                        value,
                        value_offset: offsets[1],
                        entry_size,
                        entry_align,
                    },
                    wave,
                    size,
                    align,
                    Some(vec![CoreType::I32, CoreType::I32]),
                )
            }
            TypeDefKind::Record(record) => {
                let types: Vec<WitType> = record.fields.iter().map(|f| f.ty).collect();
                let (offsets, _, _) = self.record_layout(&types)?;
                let mut fields = Vec::with_capacity(types.len());
                for (f, offset) in record.fields.iter().zip(offsets) {
                    fields.push(Field {
                        name: f.name.clone(),
                        ty: self.build(&f.ty)?,
                        offset,
                    });
                }
                let wave =
                    WaveType::record(fields.iter().map(|f| (f.name.as_str(), f.ty.wave.clone())))
                        .ok_or_else(|| empty(def.name.as_deref(), "record"))?;
                let flat = concat_flat(fields.iter().map(|f| &f.ty.flat));
                self.node(
                    def.name.as_deref(),
                    Kind::Record(fields),
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Tuple(tuple) => {
                let (offsets, _, _) = self.record_layout(&tuple.types)?;
                let mut fields = Vec::with_capacity(tuple.types.len());
                for (i, (t, offset)) in tuple.types.iter().zip(offsets).enumerate() {
                    fields.push(Field {
                        name: i.to_string(),
                        ty: self.build(t)?,
                        offset,
                    });
                }
                let wave =
                    WaveType::tuple(fields.iter().map(|f| f.ty.wave.clone()).collect::<Vec<_>>())
                        .ok_or_else(|| empty(def.name.as_deref(), "tuple"))?;
                let flat = concat_flat(fields.iter().map(|f| &f.ty.flat));
                self.node(
                    def.name.as_deref(),
                    Kind::Tuple(fields),
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Flags(flags) => {
                let names: Vec<String> = flags.flags.iter().map(|f| f.name.clone()).collect();
                let wave = WaveType::flags(names.iter().map(String::as_str))
                    .ok_or_else(|| empty(def.name.as_deref(), "flags"))?;
                let repr = match flags.repr() {
                    FlagsRepr::U8 => FlagsLayout::U8,
                    FlagsRepr::U16 => FlagsLayout::U16,
                    FlagsRepr::U32(n) => FlagsLayout::U32s(n),
                };
                let words = flags.repr().count();
                let flat = (words <= MAX_FLAT_PARAMS).then(|| vec![CoreType::I32; words]);
                self.node(
                    def.name.as_deref(),
                    Kind::Flags { names, repr },
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Variant(variant) => {
                let payload_offset = self
                    .payload_offset(variant.tag(), variant.cases.iter().map(|c| c.ty.as_ref()))?;
                let mut cases = Vec::with_capacity(variant.cases.len());
                for c in &variant.cases {
                    cases.push(Case {
                        name: c.name.clone(),
                        ty: c.ty.as_ref().map(|t| self.build(t)).transpose()?,
                    });
                }
                let wave = WaveType::variant(
                    cases
                        .iter()
                        .map(|c| (c.name.as_str(), c.ty.as_ref().map(|t| t.wave.clone()))),
                )
                .ok_or_else(|| empty(def.name.as_deref(), "variant"))?;
                let cases = Cases::new(cases, Tag::from_int(variant.tag())?, payload_offset);
                let flat = cases.flat();
                self.node(
                    def.name.as_deref(),
                    Kind::Variant(cases),
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Enum(enum_) => {
                let cases: Vec<Case> = enum_
                    .cases
                    .iter()
                    .map(|c| Case {
                        name: c.name.clone(),
                        ty: None,
                    })
                    .collect();
                let wave = WaveType::enum_ty(cases.iter().map(|c| c.name.as_str()))
                    .ok_or_else(|| empty(def.name.as_deref(), "enum"))?;
                let cases = Cases::new(cases, Tag::from_int(enum_.tag())?, 0);
                self.node(
                    def.name.as_deref(),
                    Kind::Enum(cases),
                    wave,
                    size,
                    align,
                    Some(vec![CoreType::I32]),
                )
            }
            TypeDefKind::Option(some_ty) => {
                let payload_offset = self.payload_offset(Int::U8, [Some(some_ty)])?;
                let some = self.build(some_ty)?;
                let wave = WaveType::option(some.wave.clone());
                let cases = vec![
                    Case {
                        name: "none".into(),
                        ty: None,
                    },
                    Case {
                        name: "some".into(),
                        ty: Some(some),
                    },
                ];
                let cases = Cases::new(cases, Tag::U8, payload_offset);
                let flat = cases.flat();
                self.node(
                    def.name.as_deref(),
                    Kind::Option(cases),
                    wave,
                    size,
                    align,
                    flat,
                )
            }
            TypeDefKind::Result(result) => {
                let payload_offset =
                    self.payload_offset(Int::U8, [result.ok.as_ref(), result.err.as_ref()])?;
                let ok = result.ok.as_ref().map(|t| self.build(t)).transpose()?;
                let err = result.err.as_ref().map(|t| self.build(t)).transpose()?;
                let wave = WaveType::result(
                    ok.as_ref().map(|t| t.wave.clone()),
                    err.as_ref().map(|t| t.wave.clone()),
                );
                let cases = vec![
                    Case {
                        name: "ok".into(),
                        ty: ok,
                    },
                    Case {
                        name: "err".into(),
                        ty: err,
                    },
                ];
                let cases = Cases::new(cases, Tag::U8, payload_offset);
                let flat = cases.flat();
                self.node(
                    def.name.as_deref(),
                    Kind::Result(cases),
                    wave,
                    size,
                    align,
                    flat,
                )
            }
        };
        self.cache.insert(id, built.clone());
        Ok(built)
    }

    fn payload_offset<'t>(
        &self,
        tag: Int,
        cases: impl IntoIterator<Item = Option<&'t WitType>>,
    ) -> Result<u32, AbiError> {
        to_u32(
            self.sizes.payload_offset(tag, cases).size_wasm32(),
            "variant",
        )
    }

    fn node(
        &self,
        name: Option<&str>,
        kind: Kind,
        wave: WaveType,
        size: u32,
        align: u32,
        flat: Option<Vec<CoreType>>,
    ) -> Arc<AbiType> {
        let name = match name {
            Some(n) => n.to_string(),
            None => wave.to_string(),
        };
        Arc::new(AbiType {
            kind,
            wave,
            size,
            align,
            flat,
            name,
        })
    }
}

impl Cases {
    fn new(cases: Vec<Case>, tag: Tag, payload_offset: u32) -> Self {
        let payload_flat = join_flat(cases.iter().map(|c| c.ty.as_deref()));
        Cases {
            cases,
            tag,
            payload_offset,
            payload_flat,
        }
    }

    /// The full flat type: the discriminant, then the joined payloads.
    fn flat(&self) -> Option<Vec<CoreType>> {
        let payload = self.payload_flat.as_ref()?;
        let mut flat = Vec::with_capacity(payload.len() + 1);
        flat.push(CoreType::I32);
        flat.extend_from_slice(payload);
        Some(flat)
    }
}

fn empty(name: Option<&str>, what: &str) -> AbiError {
    AbiError::UnsupportedType {
        ty: name.unwrap_or(what).to_string(),
        reason: format!("a {what} with no members has no value representation"),
    }
}

fn handle_name(resolve: &Resolve, kind: &TypeDefKind) -> String {
    let (prefix, id) = match kind {
        TypeDefKind::Handle(Handle::Own(id)) => ("own", *id),
        TypeDefKind::Handle(Handle::Borrow(id)) => ("borrow", *id),
        _ => return "handle".into(),
    };
    let res = resolve
        .types
        .get(id)
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| "resource".into());
    format!("{prefix}<{res}>")
}
