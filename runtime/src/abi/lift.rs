//! Lifting: flat core values and guest memory to wave values. Everything read from the guest
//! is validated: pointers (bounds, alignment), discriminants, chars and UTF-8.

use std::borrow::Cow;

use wasm_wave::value::Value;
use wasm_wave::wasm::{WasmValue, WasmValueError};

use super::lower::{canon_f32, canon_f64};
use super::types::{AbiType, Cases, FlagsLayout, Kind, Tag};
use super::{AbiError, CoreType, CoreValue, GuestMemory};

/// A pointer passed as a core `i32` (types are checked before lifting).
pub(crate) fn ptr_arg(v: CoreValue) -> Result<u32, AbiError> {
    match v {
        CoreValue::I32(x) => Ok(x as u32),
        other => Err(AbiError::Internal(format!(
            "a pointer must be an i32, got {}",
            other.ty()
        ))),
    }
}

pub(crate) fn check_aligned(ptr: u32, align: u32, ty: &str) -> Result<(), AbiError> {
    if !ptr.is_multiple_of(align) {
        return Err(AbiError::MisalignedPointer {
            address: ptr,
            align,
            ty: ty.to_string(),
        });
    }
    Ok(())
}

/// Checks that the `len` bytes at `ptr` are in guest memory, without reading them all.
pub(crate) fn check_range(mem: &dyn GuestMemory, ptr: u32, len: u64) -> Result<(), AbiError> {
    if len == 0 {
        return Ok(());
    }
    let out_of_bounds = || AbiError::OutOfBounds {
        address: u64::from(ptr),
        length: len,
    };
    let end = u64::from(ptr) + len;
    if end > 1 << 32 {
        return Err(out_of_bounds());
    }
    // Linear memory is contiguous from 0: if its last byte is readable, the range is. This
    // keeps a bogus length from making the host allocate a huge buffer.
    let mut probe = [0u8; 1];
    match mem.read((end - 1) as u32, &mut probe) {
        Err(AbiError::OutOfBounds { .. }) => Err(out_of_bounds()),
        other => other,
    }
}

/// Iterates over flat core values.
pub(crate) struct FlatIter<'a> {
    vals: &'a [CoreValue],
    pos: usize,
}

impl<'a> FlatIter<'a> {
    pub fn new(vals: &'a [CoreValue]) -> Self {
        FlatIter { vals, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [CoreValue], AbiError> {
        let vals = self
            .pos
            .checked_add(n)
            .and_then(|end| self.vals.get(self.pos..end))
            .ok_or_else(|| AbiError::Internal("too few flat values".into()))?;
        self.pos += n;
        Ok(vals)
    }

    fn next(&mut self, want: CoreType) -> Result<CoreValue, AbiError> {
        let v = self.take(1)?[0];
        if v.ty() != want {
            return Err(AbiError::Internal(format!(
                "expected an {want} flat value, got {}",
                v.ty()
            )));
        }
        Ok(v)
    }

    fn i32(&mut self) -> Result<i32, AbiError> {
        match self.next(CoreType::I32)? {
            CoreValue::I32(x) => Ok(x),
            _ => unreachable_type(),
        }
    }

    fn i64(&mut self) -> Result<i64, AbiError> {
        match self.next(CoreType::I64)? {
            CoreValue::I64(x) => Ok(x),
            _ => unreachable_type(),
        }
    }

    fn f32(&mut self) -> Result<f32, AbiError> {
        match self.next(CoreType::F32)? {
            CoreValue::F32(x) => Ok(x),
            _ => unreachable_type(),
        }
    }

    fn f64(&mut self) -> Result<f64, AbiError> {
        match self.next(CoreType::F64)? {
            CoreValue::F64(x) => Ok(x),
            _ => unreachable_type(),
        }
    }
}

fn unreachable_type<T>() -> Result<T, AbiError> {
    Err(AbiError::Internal("flat value type changed".into()))
}

/// Converts a joined flat value of a variant back to the flat type of the case's payload.
fn coerce_from(have: CoreValue, want: CoreType) -> Result<CoreValue, AbiError> {
    Ok(match (have, want) {
        (v, want) if v.ty() == want => v,
        (CoreValue::I32(x), CoreType::F32) => CoreValue::F32(f32::from_bits(x as u32)),
        (CoreValue::I64(x), CoreType::I32) => CoreValue::I32(x as i32),
        (CoreValue::I64(x), CoreType::F32) => CoreValue::F32(f32::from_bits(x as u32)),
        (CoreValue::I64(x), CoreType::F64) => CoreValue::F64(f64::from_bits(x as u64)),
        (v, want) => {
            return Err(AbiError::Internal(format!(
                "cannot convert joined {} to {want}",
                v.ty()
            )))
        }
    })
}

fn char_of(value: u32) -> Result<char, AbiError> {
    char::from_u32(value).ok_or(AbiError::InvalidChar { value })
}

fn get<const N: usize>(buf: &[u8], offset: usize) -> Result<[u8; N], AbiError> {
    offset
        .checked_add(N)
        .and_then(|end| buf.get(offset..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AbiError::Internal("load outside of the value's layout".into()))
}

fn get_u32(buf: &[u8], offset: usize) -> Result<u32, AbiError> {
    Ok(u32::from_le_bytes(get(buf, offset)?))
}

fn get_tag(buf: &[u8], offset: usize, tag: Tag) -> Result<u32, AbiError> {
    Ok(match tag {
        Tag::U8 => u32::from(get::<1>(buf, offset)?[0]),
        Tag::U16 => u32::from(u16::from_le_bytes(get(buf, offset)?)),
        Tag::U32 => get_u32(buf, offset)?,
    })
}

fn build_error(ty: &AbiType, e: WasmValueError) -> AbiError {
    AbiError::Internal(format!("building a `{}` value: {e}", ty.wave))
}

/// Lifting context: the guest memory that pointers point into.
pub(crate) struct Lift<'m> {
    pub mem: &'m dyn GuestMemory,
}

impl Lift<'_> {
    /// Reads `len` bytes at `ptr`, checking the bounds before allocating the host buffer.
    fn read_range(&self, ptr: u32, len: u64) -> Result<Vec<u8>, AbiError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        check_range(self.mem, ptr, len)?;
        let mut buf = vec![0u8; len as usize];
        match self.mem.read(ptr, &mut buf) {
            Err(AbiError::OutOfBounds { .. }) => Err(AbiError::OutOfBounds {
                address: u64::from(ptr),
                length: len,
            }),
            other => other.map(|()| buf),
        }
    }

    /// Reads the `size` bytes of a value of alignment `align` at `ptr`.
    pub fn read_aligned(
        &self,
        ptr: u32,
        size: u32,
        align: u32,
        ty: &str,
    ) -> Result<Vec<u8>, AbiError> {
        check_aligned(ptr, align, ty)?;
        self.read_range(ptr, u64::from(size))
    }

    /// Lifts a value from flat core values.
    pub fn lift_flat(&self, ty: &AbiType, it: &mut FlatIter<'_>) -> Result<Value, AbiError> {
        Ok(match &ty.kind {
            Kind::Bool => Value::make_bool(it.i32()? != 0),
            Kind::S8 => Value::make_s8(it.i32()? as i8),
            Kind::U8 => Value::make_u8(it.i32()? as u8),
            Kind::S16 => Value::make_s16(it.i32()? as i16),
            Kind::U16 => Value::make_u16(it.i32()? as u16),
            Kind::S32 => Value::make_s32(it.i32()?),
            Kind::U32 | Kind::Handle => Value::make_u32(it.i32()? as u32),
            Kind::S64 => Value::make_s64(it.i64()?),
            Kind::U64 => Value::make_u64(it.i64()? as u64),
            Kind::F32 => Value::make_f32(canon_f32(it.f32()?)),
            Kind::F64 => Value::make_f64(canon_f64(it.f64()?)),
            Kind::Char => Value::make_char(char_of(it.i32()? as u32)?),
            Kind::String | Kind::List(_) | Kind::Map { .. } => {
                let ptr = it.i32()? as u32;
                let len = it.i32()? as u32;
                self.lift_indirect(ty, ptr, len)?
            }
            Kind::FixedList { elem, len } => {
                let items = (0..*len)
                    .map(|_| self.lift_flat(elem, it))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::make_list(&ty.wave, items).map_err(|e| build_error(ty, e))?
            }
            Kind::Record(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    values.push(self.lift_flat(&f.ty, it)?);
                }
                Value::make_record(&ty.wave, fields.iter().map(|f| f.name.as_str()).zip(values))
                    .map_err(|e| build_error(ty, e))?
            }
            Kind::Tuple(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    values.push(self.lift_flat(&f.ty, it)?);
                }
                Value::make_tuple(&ty.wave, values).map_err(|e| build_error(ty, e))?
            }
            Kind::Variant(cases)
            | Kind::Enum(cases)
            | Kind::Option(cases)
            | Kind::Result(cases) => {
                let index = self.case_index(ty, cases, it.i32()? as u32)?;
                let joined = cases.payload_flat.as_ref().ok_or_else(|| {
                    AbiError::Internal("flat lifting of a non-flat variant".into())
                })?;
                let payload_vals = it.take(joined.len())?;
                let payload = match &cases.cases[index].ty {
                    None => None,
                    Some(case_ty) => {
                        let case_flat = case_ty.flat.as_ref().ok_or_else(|| {
                            AbiError::Internal("flat lifting of a non-flat payload".into())
                        })?;
                        let coerced = case_flat
                            .iter()
                            .zip(payload_vals)
                            .map(|(want, have)| coerce_from(*have, *want))
                            .collect::<Result<Vec<_>, _>>()?;
                        Some(self.lift_flat(case_ty, &mut FlatIter::new(&coerced))?)
                    }
                };
                make_case(ty, index, payload)?
            }
            Kind::Flags { names, repr } => {
                let count = match repr {
                    FlagsLayout::U8 | FlagsLayout::U16 => 1,
                    FlagsLayout::U32s(n) => *n,
                };
                let mut words = Vec::with_capacity(count);
                for _ in 0..count {
                    words.push(it.i32()? as u32);
                }
                make_flags(ty, names, &words)?
            }
        })
    }

    fn case_index(&self, ty: &AbiType, cases: &Cases, value: u32) -> Result<usize, AbiError> {
        if (value as usize) < cases.cases.len() {
            Ok(value as usize)
        } else {
            Err(AbiError::InvalidDiscriminant {
                ty: ty.name.clone(),
                value,
                cases: cases.cases.len(),
            })
        }
    }

    /// Loads a value stored at `offset` in `buf`, the host copy of a region of guest memory.
    pub fn load(&self, ty: &AbiType, buf: &[u8], offset: usize) -> Result<Value, AbiError> {
        Ok(match &ty.kind {
            Kind::Bool => Value::make_bool(get::<1>(buf, offset)?[0] != 0),
            Kind::S8 => Value::make_s8(i8::from_le_bytes(get(buf, offset)?)),
            Kind::U8 => Value::make_u8(get::<1>(buf, offset)?[0]),
            Kind::S16 => Value::make_s16(i16::from_le_bytes(get(buf, offset)?)),
            Kind::U16 => Value::make_u16(u16::from_le_bytes(get(buf, offset)?)),
            Kind::S32 => Value::make_s32(i32::from_le_bytes(get(buf, offset)?)),
            Kind::U32 | Kind::Handle => Value::make_u32(get_u32(buf, offset)?),
            Kind::S64 => Value::make_s64(i64::from_le_bytes(get(buf, offset)?)),
            Kind::U64 => Value::make_u64(u64::from_le_bytes(get(buf, offset)?)),
            Kind::F32 => Value::make_f32(canon_f32(f32::from_le_bytes(get(buf, offset)?))),
            Kind::F64 => Value::make_f64(canon_f64(f64::from_le_bytes(get(buf, offset)?))),
            Kind::Char => Value::make_char(char_of(get_u32(buf, offset)?)?),
            Kind::String | Kind::List(_) | Kind::Map { .. } => {
                let ptr = get_u32(buf, offset)?;
                let len = get_u32(buf, offset + 4)?;
                self.lift_indirect(ty, ptr, len)?
            }
            Kind::FixedList { elem, len } => {
                let size = elem.size as usize;
                let items = (0..*len as usize)
                    .map(|i| self.load(elem, buf, offset + i * size))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::make_list(&ty.wave, items).map_err(|e| build_error(ty, e))?
            }
            Kind::Record(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    values.push(self.load(&f.ty, buf, offset + f.offset as usize)?);
                }
                Value::make_record(&ty.wave, fields.iter().map(|f| f.name.as_str()).zip(values))
                    .map_err(|e| build_error(ty, e))?
            }
            Kind::Tuple(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for f in fields {
                    values.push(self.load(&f.ty, buf, offset + f.offset as usize)?);
                }
                Value::make_tuple(&ty.wave, values).map_err(|e| build_error(ty, e))?
            }
            Kind::Variant(cases)
            | Kind::Enum(cases)
            | Kind::Option(cases)
            | Kind::Result(cases) => {
                let index = self.case_index(ty, cases, get_tag(buf, offset, cases.tag)?)?;
                let payload = match &cases.cases[index].ty {
                    None => None,
                    Some(case_ty) => {
                        Some(self.load(case_ty, buf, offset + cases.payload_offset as usize)?)
                    }
                };
                make_case(ty, index, payload)?
            }
            Kind::Flags { names, repr } => {
                let words = match repr {
                    FlagsLayout::U8 => vec![u32::from(get::<1>(buf, offset)?[0])],
                    FlagsLayout::U16 => vec![u32::from(u16::from_le_bytes(get(buf, offset)?))],
                    FlagsLayout::U32s(n) => (0..*n)
                        .map(|i| get_u32(buf, offset + 4 * i))
                        .collect::<Result<Vec<_>, _>>()?,
                };
                make_flags(ty, names, &words)?
            }
        })
    }

    /// Lifts a string, list or map from `(ptr, len)`.
    fn lift_indirect(&self, ty: &AbiType, ptr: u32, len: u32) -> Result<Value, AbiError> {
        match &ty.kind {
            Kind::String => {
                let bytes = self.read_range(ptr, u64::from(len))?;
                let s = String::from_utf8(bytes).map_err(|e| AbiError::InvalidUtf8 {
                    address: ptr,
                    length: len,
                    reason: e.utf8_error().to_string(),
                })?;
                Ok(Value::make_string(Cow::Owned(s)))
            }
            Kind::List(elem) => {
                check_aligned(ptr, elem.align, &ty.name)?;
                let bytes = self.read_range(ptr, u64::from(len) * u64::from(elem.size))?;
                let items = if matches!(elem.kind, Kind::U8) {
                    // list<u8>: the bytes are the elements.
                    bytes.into_iter().map(Value::make_u8).collect()
                } else {
                    let size = elem.size as usize;
                    (0..len as usize)
                        .map(|i| self.load(elem, &bytes, i * size))
                        .collect::<Result<Vec<_>, _>>()?
                };
                Value::make_list(&ty.wave, items).map_err(|e| build_error(ty, e))
            }
            Kind::Map {
                key,
                value,
                value_offset,
                entry_size,
                entry_align,
            } => {
                check_aligned(ptr, *entry_align, &ty.name)?;
                let bytes = self.read_range(ptr, u64::from(len) * u64::from(*entry_size))?;
                let size = *entry_size as usize;
                let entries = (0..len as usize)
                    .map(|i| {
                        let k = self.load(key, &bytes, i * size)?;
                        let v = self.load(value, &bytes, i * size + *value_offset as usize)?;
                        Ok((k, v))
                    })
                    .collect::<Result<Vec<_>, AbiError>>()?;
                Value::make_map(&ty.wave, entries).map_err(|e| build_error(ty, e))
            }
            _ => Err(AbiError::Internal(format!(
                "`{}` is not passed by pointer",
                ty.wave
            ))),
        }
    }
}

fn make_case(ty: &AbiType, index: usize, payload: Option<Value>) -> Result<Value, AbiError> {
    let made = match &ty.kind {
        Kind::Variant(cases) => Value::make_variant(&ty.wave, &cases.cases[index].name, payload),
        Kind::Enum(cases) => Value::make_enum(&ty.wave, &cases.cases[index].name),
        Kind::Option(_) => Value::make_option(&ty.wave, if index == 0 { None } else { payload }),
        Kind::Result(_) => Value::make_result(
            &ty.wave,
            if index == 0 {
                Ok(payload)
            } else {
                Err(payload)
            },
        ),
        _ => return Err(AbiError::Internal("not a variant".into())),
    };
    made.map_err(|e| build_error(ty, e))
}

/// Flags whose bits are set; bits beyond the last flag are ignored, as the spec says.
fn make_flags(ty: &AbiType, names: &[String], words: &[u32]) -> Result<Value, AbiError> {
    let set = names.iter().enumerate().filter_map(|(i, name)| {
        let word = words.get(i / 32).copied().unwrap_or(0);
        (word & (1 << (i % 32)) != 0).then_some(name.as_str())
    });
    Value::make_flags(&ty.wave, set).map_err(|e| build_error(ty, e))
}
