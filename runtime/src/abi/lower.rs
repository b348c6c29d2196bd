//! Lowering: wave values to flat core values and to guest memory.

use std::borrow::Cow;

use wasm_wave::value::Value;
use wasm_wave::wasm::{WasmTypeKind, WasmValue};

use super::types::{AbiType, Cases, FlagsLayout, Kind, Tag};
use super::{truncate, AbiError, CoreType, CoreValue, GuestMemory};

/// The longest string the canonical ABI can pass.
const MAX_STRING_BYTE_LENGTH: usize = (1 << 31) - 1;

/// Canonical NaN for `f32` (the spec allows any NaN; canonical keeps replay deterministic).
pub(crate) fn canon_f32(x: f32) -> f32 {
    if x.is_nan() {
        f32::from_bits(0x7fc0_0000)
    } else {
        x
    }
}

/// Canonical NaN for `f64`.
pub(crate) fn canon_f64(x: f64) -> f64 {
    if x.is_nan() {
        f64::from_bits(0x7ff8_0000_0000_0000)
    } else {
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Type checking of host values, before anything is allocated in the guest.

struct Mismatch {
    /// Path segments from the mismatch up to the root (reversed).
    path: Vec<String>,
    message: String,
}

impl Mismatch {
    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }
}

fn describe(v: &Value) -> String {
    let text = super::to_wave(v).unwrap_or_else(|_| "?".into());
    format!("{} `{}`", v.kind(), truncate(&text, 60))
}

fn mismatch(ty: &AbiType, v: &Value) -> Mismatch {
    Mismatch {
        path: Vec::new(),
        message: format!("expected `{}`, got {}", ty.wave, describe(v)),
    }
}

fn expected_kind(kind: &Kind) -> WasmTypeKind {
    match kind {
        Kind::Bool => WasmTypeKind::Bool,
        Kind::S8 => WasmTypeKind::S8,
        Kind::U8 => WasmTypeKind::U8,
        Kind::S16 => WasmTypeKind::S16,
        Kind::U16 => WasmTypeKind::U16,
        Kind::S32 => WasmTypeKind::S32,
        Kind::U32 | Kind::Handle => WasmTypeKind::U32,
        Kind::S64 => WasmTypeKind::S64,
        Kind::U64 => WasmTypeKind::U64,
        Kind::F32 => WasmTypeKind::F32,
        Kind::F64 => WasmTypeKind::F64,
        Kind::Char => WasmTypeKind::Char,
        Kind::String => WasmTypeKind::String,
        Kind::List(_) | Kind::FixedList { .. } => WasmTypeKind::List,
        Kind::Map { .. } => WasmTypeKind::Map,
        Kind::Record(_) => WasmTypeKind::Record,
        Kind::Tuple(_) => WasmTypeKind::Tuple,
        Kind::Variant(_) => WasmTypeKind::Variant,
        Kind::Enum(_) => WasmTypeKind::Enum,
        Kind::Option(_) => WasmTypeKind::Option,
        Kind::Result(_) => WasmTypeKind::Result,
        Kind::Flags { .. } => WasmTypeKind::Flags,
    }
}

/// Checks that `v` is a value of type `ty`; the error describes where and how it is not.
pub(crate) fn check_value(ty: &AbiType, v: &Value) -> Result<(), String> {
    check(ty, v).map_err(|m| {
        if m.path.is_empty() {
            m.message
        } else {
            let path: String = m.path.iter().rev().map(String::as_str).collect();
            format!("at `{path}`: {}", m.message)
        }
    })
}

fn check(ty: &AbiType, v: &Value) -> Result<(), Mismatch> {
    if v.kind() != expected_kind(&ty.kind) {
        return Err(mismatch(ty, v));
    }
    match &ty.kind {
        Kind::List(elem) => {
            for (i, e) in v.unwrap_list().enumerate() {
                check(elem, &e).map_err(|m| m.at(format!("[{i}]")))?;
            }
        }
        Kind::FixedList { elem, len } => {
            let items: Vec<_> = v.unwrap_list().collect();
            if items.len() != *len as usize {
                return Err(Mismatch {
                    path: Vec::new(),
                    message: format!(
                        "expected a list of exactly {len} elements, got {}",
                        items.len()
                    ),
                });
            }
            for (i, e) in items.iter().enumerate() {
                check(elem, e).map_err(|m| m.at(format!("[{i}]")))?;
            }
        }
        Kind::Map { key, value, .. } => {
            for (i, (k, val)) in v.unwrap_map().enumerate() {
                check(key, &k).map_err(|m| m.at(format!("[key {i}]")))?;
                check(value, &val).map_err(|m| m.at(format!("[value {i}]")))?;
            }
        }
        Kind::Record(fields) => {
            let got: Vec<_> = v.unwrap_record().collect();
            let names_match =
                got.len() == fields.len() && got.iter().zip(fields).all(|((n, _), f)| *n == f.name);
            if !names_match {
                let want: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
                let have: Vec<_> = got.iter().map(|(n, _)| n.as_ref()).collect();
                return Err(Mismatch {
                    path: Vec::new(),
                    message: format!(
                        "expected a record with fields {{{}}}, got one with {{{}}}",
                        want.join(", "),
                        have.join(", ")
                    ),
                });
            }
            for ((_, fv), f) in got.iter().zip(fields) {
                check(&f.ty, fv).map_err(|m| m.at(format!(".{}", f.name)))?;
            }
        }
        Kind::Tuple(fields) => {
            let got: Vec<_> = v.unwrap_tuple().collect();
            if got.len() != fields.len() {
                return Err(Mismatch {
                    path: Vec::new(),
                    message: format!(
                        "expected a tuple of {} elements, got {}",
                        fields.len(),
                        got.len()
                    ),
                });
            }
            for (i, (e, f)) in got.iter().zip(fields).enumerate() {
                check(&f.ty, e).map_err(|m| m.at(format!(".{i}")))?;
            }
        }
        Kind::Variant(cases) | Kind::Enum(cases) | Kind::Option(cases) | Kind::Result(cases) => {
            let (index, payload) = case_of(&ty.kind, v).ok_or_else(|| Mismatch {
                path: Vec::new(),
                message: format!("`{}` has no such case: got {}", ty.wave, describe(v)),
            })?;
            let case = &cases.cases[index];
            match (&case.ty, payload) {
                (None, None) => {}
                (Some(t), Some(p)) => {
                    check(t, &p).map_err(|m| m.at(format!("<{}>", case.name)))?;
                }
                (Some(_), None) => {
                    return Err(Mismatch {
                        path: Vec::new(),
                        message: format!("case `{}` needs a payload", case.name),
                    })
                }
                (None, Some(_)) => {
                    return Err(Mismatch {
                        path: Vec::new(),
                        message: format!("case `{}` has no payload", case.name),
                    })
                }
            }
        }
        Kind::Flags { names, .. } => {
            for flag in v.unwrap_flags() {
                if !names.iter().any(|n| *n == flag) {
                    return Err(Mismatch {
                        path: Vec::new(),
                        message: format!("`{}` has no flag `{flag}`", ty.wave),
                    });
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The case index and payload of a variant-like value, if the case exists in the type.
fn case_of<'v>(kind: &Kind, v: &'v Value) -> Option<(usize, Option<Cow<'v, Value>>)> {
    match kind {
        Kind::Variant(cases) => {
            let (name, payload) = v.unwrap_variant();
            let index = cases.cases.iter().position(|c| c.name == name)?;
            Some((index, payload))
        }
        Kind::Enum(cases) => {
            let name = v.unwrap_enum();
            let index = cases.cases.iter().position(|c| c.name == name)?;
            Some((index, None))
        }
        Kind::Option(_) => Some(match v.unwrap_option() {
            None => (0, None),
            Some(p) => (1, Some(p)),
        }),
        Kind::Result(_) => Some(match v.unwrap_result() {
            Ok(p) => (0, p),
            Err(p) => (1, p),
        }),
        _ => None,
    }
}

fn ill_typed(ty: &AbiType) -> AbiError {
    AbiError::Internal(format!(
        "value does not match `{}` after type checking",
        ty.wave
    ))
}

/// Guards every `unwrap_*` call so that an unchecked value errors instead of panicking.
fn ensure(ty: &AbiType, v: &Value) -> Result<(), AbiError> {
    if v.kind() == expected_kind(&ty.kind) {
        Ok(())
    } else {
        Err(ill_typed(ty))
    }
}

/// Bits of a flags value, in 32-bit words.
fn flag_words(ty: &AbiType, names: &[String], v: &Value) -> Result<Vec<u32>, AbiError> {
    let mut words = vec![0u32; names.len().div_ceil(32).max(1)];
    for flag in v.unwrap_flags() {
        let index = names
            .iter()
            .position(|n| *n == flag)
            .ok_or_else(|| ill_typed(ty))?;
        words[index / 32] |= 1 << (index % 32);
    }
    Ok(words)
}

/// Converts a lowered payload value to the joined flat type of its variant.
fn coerce_to(v: CoreValue, want: CoreType) -> Result<CoreValue, AbiError> {
    Ok(match (v, want) {
        (v, want) if v.ty() == want => v,
        (CoreValue::F32(x), CoreType::I32) => CoreValue::I32(x.to_bits() as i32),
        (CoreValue::I32(x), CoreType::I64) => CoreValue::I64(x as u32 as i64),
        (CoreValue::F32(x), CoreType::I64) => CoreValue::I64(x.to_bits() as i64),
        (CoreValue::F64(x), CoreType::I64) => CoreValue::I64(x.to_bits() as i64),
        (v, want) => {
            return Err(AbiError::Internal(format!(
                "cannot join {} into {want}",
                v.ty()
            )))
        }
    })
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) -> Result<(), AbiError> {
    offset
        .checked_add(bytes.len())
        .and_then(|end| buf.get_mut(offset..end))
        .ok_or_else(|| AbiError::Internal("store outside of the value's layout".into()))?
        .copy_from_slice(bytes);
    Ok(())
}

fn put_tag(buf: &mut [u8], offset: usize, tag: Tag, index: usize) -> Result<(), AbiError> {
    let index = index as u32;
    match tag {
        Tag::U8 => put(buf, offset, &[index as u8]),
        Tag::U16 => put(buf, offset, &(index as u16).to_le_bytes()),
        Tag::U32 => put(buf, offset, &index.to_le_bytes()),
    }
}

/// Lowering context: the guest memory that strings and lists are allocated in.
pub(crate) struct Lower<'m> {
    pub mem: &'m mut dyn GuestMemory,
}

impl Lower<'_> {
    /// Allocates `size` bytes aligned to `align` with the guest's `cabi_realloc`.
    pub fn alloc(&mut self, size: u32, align: u32, what: &str) -> Result<u32, AbiError> {
        let ptr = self.mem.realloc(0, 0, align, size)?;
        if !ptr.is_multiple_of(align) {
            return Err(AbiError::AllocationFailed {
                size,
                align,
                reason: format!(
                    "cabi_realloc returned the misaligned pointer {ptr:#x} for `{what}`"
                ),
            });
        }
        if u64::from(ptr) + u64::from(size) > 1 << 32 {
            return Err(AbiError::AllocationFailed {
                size,
                align,
                reason: format!("cabi_realloc returned {ptr:#x}, which ends beyond 4 GiB"),
            });
        }
        Ok(ptr)
    }

    /// Appends the flat core values of `v` to `out`.
    pub fn lower_flat(
        &mut self,
        ty: &AbiType,
        v: &Value,
        out: &mut Vec<CoreValue>,
    ) -> Result<(), AbiError> {
        ensure(ty, v)?;
        match &ty.kind {
            Kind::Bool => out.push(CoreValue::I32(v.unwrap_bool() as i32)),
            Kind::S8 => out.push(CoreValue::I32(v.unwrap_s8() as i32)),
            Kind::U8 => out.push(CoreValue::I32(v.unwrap_u8() as i32)),
            Kind::S16 => out.push(CoreValue::I32(v.unwrap_s16() as i32)),
            Kind::U16 => out.push(CoreValue::I32(v.unwrap_u16() as i32)),
            Kind::S32 => out.push(CoreValue::I32(v.unwrap_s32())),
            Kind::U32 | Kind::Handle => out.push(CoreValue::I32(v.unwrap_u32() as i32)),
            Kind::S64 => out.push(CoreValue::I64(v.unwrap_s64())),
            Kind::U64 => out.push(CoreValue::I64(v.unwrap_u64() as i64)),
            Kind::F32 => out.push(CoreValue::F32(canon_f32(v.unwrap_f32()))),
            Kind::F64 => out.push(CoreValue::F64(canon_f64(v.unwrap_f64()))),
            Kind::Char => out.push(CoreValue::I32(v.unwrap_char() as u32 as i32)),
            Kind::String | Kind::List(_) | Kind::Map { .. } => {
                let (ptr, len) = self.lower_indirect(ty, v)?;
                out.push(CoreValue::I32(ptr as i32));
                out.push(CoreValue::I32(len as i32));
            }
            Kind::FixedList { elem, .. } => {
                for e in v.unwrap_list() {
                    self.lower_flat(elem, &e, out)?;
                }
            }
            Kind::Record(fields) => {
                for (f, (_, fv)) in fields.iter().zip(v.unwrap_record()) {
                    self.lower_flat(&f.ty, &fv, out)?;
                }
            }
            Kind::Tuple(fields) => {
                for (f, e) in fields.iter().zip(v.unwrap_tuple()) {
                    self.lower_flat(&f.ty, &e, out)?;
                }
            }
            Kind::Variant(cases)
            | Kind::Enum(cases)
            | Kind::Option(cases)
            | Kind::Result(cases) => {
                let (index, payload) = case_of(&ty.kind, v).ok_or_else(|| ill_typed(ty))?;
                self.lower_flat_variant(cases, index, payload.as_deref(), out)?;
            }
            Kind::Flags { names, repr } => {
                let words = flag_words(ty, names, v)?;
                let count = match repr {
                    FlagsLayout::U8 | FlagsLayout::U16 => 1,
                    FlagsLayout::U32s(n) => *n,
                };
                out.extend(words.iter().take(count).map(|w| CoreValue::I32(*w as i32)));
            }
        }
        Ok(())
    }

    fn lower_flat_variant(
        &mut self,
        cases: &Cases,
        index: usize,
        payload: Option<&Value>,
        out: &mut Vec<CoreValue>,
    ) -> Result<(), AbiError> {
        let joined = cases
            .payload_flat
            .as_ref()
            .ok_or_else(|| AbiError::Internal("flat lowering of a non-flat variant".into()))?;
        out.push(CoreValue::I32(index as i32));
        let mut lowered = Vec::with_capacity(joined.len());
        if let (Some(case_ty), Some(p)) = (&cases.cases[index].ty, payload) {
            self.lower_flat(case_ty, p, &mut lowered)?;
        }
        for (i, want) in joined.iter().enumerate() {
            out.push(match lowered.get(i) {
                Some(v) => coerce_to(*v, *want)?,
                None => CoreValue::zero(*want),
            });
        }
        Ok(())
    }

    /// Stores `v` at `offset` in `buf`, the host copy of a region of guest memory.
    pub fn store(
        &mut self,
        ty: &AbiType,
        v: &Value,
        buf: &mut [u8],
        offset: usize,
    ) -> Result<(), AbiError> {
        ensure(ty, v)?;
        match &ty.kind {
            Kind::Bool => put(buf, offset, &[v.unwrap_bool() as u8]),
            Kind::S8 => put(buf, offset, &v.unwrap_s8().to_le_bytes()),
            Kind::U8 => put(buf, offset, &[v.unwrap_u8()]),
            Kind::S16 => put(buf, offset, &v.unwrap_s16().to_le_bytes()),
            Kind::U16 => put(buf, offset, &v.unwrap_u16().to_le_bytes()),
            Kind::S32 => put(buf, offset, &v.unwrap_s32().to_le_bytes()),
            Kind::U32 | Kind::Handle => put(buf, offset, &v.unwrap_u32().to_le_bytes()),
            Kind::S64 => put(buf, offset, &v.unwrap_s64().to_le_bytes()),
            Kind::U64 => put(buf, offset, &v.unwrap_u64().to_le_bytes()),
            Kind::F32 => put(
                buf,
                offset,
                &canon_f32(v.unwrap_f32()).to_bits().to_le_bytes(),
            ),
            Kind::F64 => put(
                buf,
                offset,
                &canon_f64(v.unwrap_f64()).to_bits().to_le_bytes(),
            ),
            Kind::Char => put(buf, offset, &(v.unwrap_char() as u32).to_le_bytes()),
            Kind::String | Kind::List(_) | Kind::Map { .. } => {
                let (ptr, len) = self.lower_indirect(ty, v)?;
                put(buf, offset, &ptr.to_le_bytes())?;
                put(buf, offset + 4, &len.to_le_bytes())
            }
            Kind::FixedList { elem, .. } => {
                for (i, e) in v.unwrap_list().enumerate() {
                    self.store(elem, &e, buf, offset + i * elem.size as usize)?;
                }
                Ok(())
            }
            Kind::Record(fields) => {
                for (f, (_, fv)) in fields.iter().zip(v.unwrap_record()) {
                    self.store(&f.ty, &fv, buf, offset + f.offset as usize)?;
                }
                Ok(())
            }
            Kind::Tuple(fields) => {
                for (f, e) in fields.iter().zip(v.unwrap_tuple()) {
                    self.store(&f.ty, &e, buf, offset + f.offset as usize)?;
                }
                Ok(())
            }
            Kind::Variant(cases)
            | Kind::Enum(cases)
            | Kind::Option(cases)
            | Kind::Result(cases) => {
                let (index, payload) = case_of(&ty.kind, v).ok_or_else(|| ill_typed(ty))?;
                put_tag(buf, offset, cases.tag, index)?;
                if let (Some(case_ty), Some(p)) = (&cases.cases[index].ty, payload) {
                    self.store(case_ty, &p, buf, offset + cases.payload_offset as usize)?;
                }
                Ok(())
            }
            Kind::Flags { names, repr } => {
                let words = flag_words(ty, names, v)?;
                match repr {
                    FlagsLayout::U8 => put(buf, offset, &[words[0] as u8]),
                    FlagsLayout::U16 => put(buf, offset, &(words[0] as u16).to_le_bytes()),
                    FlagsLayout::U32s(n) => {
                        for (i, w) in words.iter().take(*n).enumerate() {
                            put(buf, offset + 4 * i, &w.to_le_bytes())?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Allocates a string, list or map in guest memory: `(ptr, len)`.
    fn lower_indirect(&mut self, ty: &AbiType, v: &Value) -> Result<(u32, u32), AbiError> {
        match &ty.kind {
            Kind::String => self.lower_string(&v.unwrap_string()),
            Kind::List(elem) => {
                let items: Vec<Cow<'_, Value>> = v.unwrap_list().collect();
                let (ptr, mut buf) = self.alloc_array(items.len(), elem.size, elem.align, ty)?;
                if matches!(elem.kind, Kind::U8) {
                    // list<u8>: one byte per element, copied in bulk.
                    for (slot, item) in buf.iter_mut().zip(&items) {
                        ensure(elem, item)?;
                        *slot = item.unwrap_u8();
                    }
                } else {
                    let size = elem.size as usize;
                    for (i, item) in items.iter().enumerate() {
                        self.store(elem, item, &mut buf, i * size)?;
                    }
                }
                self.mem.write(ptr, &buf)?;
                Ok((ptr, items.len() as u32))
            }
            Kind::Map {
                key,
                value,
                value_offset,
                entry_size,
                entry_align,
            } => {
                let entries: Vec<_> = v.unwrap_map().collect();
                let (ptr, mut buf) =
                    self.alloc_array(entries.len(), *entry_size, *entry_align, ty)?;
                let size = *entry_size as usize;
                for (i, (k, val)) in entries.iter().enumerate() {
                    self.store(key, k, &mut buf, i * size)?;
                    self.store(value, val, &mut buf, i * size + *value_offset as usize)?;
                }
                self.mem.write(ptr, &buf)?;
                Ok((ptr, entries.len() as u32))
            }
            _ => Err(ill_typed(ty)),
        }
    }

    fn lower_string(&mut self, s: &str) -> Result<(u32, u32), AbiError> {
        if s.len() > MAX_STRING_BYTE_LENGTH {
            return Err(AbiError::StringTooLong { length: s.len() });
        }
        let len = s.len() as u32;
        let ptr = self.alloc(len, 1, "string")?;
        if len > 0 {
            self.mem.write(ptr, s.as_bytes())?;
        }
        Ok((ptr, len))
    }

    /// Allocates `count` elements in the guest and a zeroed host buffer to fill them in.
    fn alloc_array(
        &mut self,
        count: usize,
        elem_size: u32,
        elem_align: u32,
        ty: &AbiType,
    ) -> Result<(u32, Vec<u8>), AbiError> {
        let too_large = || AbiError::ListTooLarge {
            length: count,
            elem_size,
        };
        let bytes = count
            .checked_mul(elem_size as usize)
            .filter(|b| *b <= u32::MAX as usize)
            .ok_or_else(too_large)?;
        u32::try_from(count).map_err(|_| too_large())?;
        let ptr = self.alloc(bytes as u32, elem_align, &ty.name)?;
        Ok((ptr, vec![0u8; bytes]))
    }
}
