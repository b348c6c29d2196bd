//! The component model's canonical ABI on a core wasm module.
//!
//! Guests are core modules built with `wit-bindgen` for `wasm32-wasip1`: their exports and
//! imports follow the canonical ABI (flattening, memory layout, `cabi_realloc`) without a
//! component wrapper. This module converts between [`wasm_wave`] values and the core values
//! and linear-memory contents of such a guest, for both directions:
//!
//! * [`Direction::Export`]: the host calls a guest export. [`FunctionAbi::lower_params`]
//!   turns the arguments into core values (allocating strings, lists and, when there are
//!   more than 16 flat params, the params tuple in guest memory via `cabi_realloc`);
//!   [`FunctionAbi::lift_result`] reads the result back (flat, or from the result area the
//!   guest returned a pointer to). The guest's `cabi_post_<export>` (see
//!   [`post_return_name`]) must be called after the result has been lifted.
//! * [`Direction::Import`]: the guest calls a host function. [`FunctionAbi::lift_params`]
//!   reads the arguments (and returns the return pointer if there is one) and
//!   [`FunctionAbi::lower_result`] writes the host's result back.
//!
//! Resource handles (`own<T>`, `borrow<T>`) are `u32` values: the host chooses the numbers.
//! `map<K, V>` is passed as `list<tuple<K, V>>`; fixed-length lists `list<T, N>` are stored
//! inline and represented as wave `list<T>` values of exactly N elements. Futures, streams
//! and error contexts are not supported.
//!
//! The guest is untrusted: every memory access is bounds-checked through [`GuestMemory`] and
//! every pointer, discriminant, `char` and string read from the guest is validated.

mod lift;
mod lower;
mod types;

/// A string as a WAVE literal.
pub fn wave_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use wasm_wave::value::{Type, Value};
use wit_parser::abi::{AbiVariant, WasmType};
use wit_parser::{Function, Resolve};

use self::types::{AbiType, Builder};

/// The canonical ABI's limit on flat params; beyond it params go through memory.
pub const MAX_FLAT_PARAMS: usize = 16;
/// The canonical ABI's limit on flat results; beyond it results go through memory.
pub const MAX_FLAT_RESULTS: usize = 1;

/// A core wasm value type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreType {
    I32,
    I64,
    F32,
    F64,
}

impl fmt::Display for CoreType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CoreType::I32 => "i32",
            CoreType::I64 => "i64",
            CoreType::F32 => "f32",
            CoreType::F64 => "f64",
        })
    }
}

/// A core wasm value, independent of the engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoreValue {
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl CoreValue {
    /// The type of this value.
    pub fn ty(&self) -> CoreType {
        match self {
            CoreValue::I32(_) => CoreType::I32,
            CoreValue::I64(_) => CoreType::I64,
            CoreValue::F32(_) => CoreType::F32,
            CoreValue::F64(_) => CoreType::F64,
        }
    }

    /// The zero value of a type.
    pub fn zero(ty: CoreType) -> Self {
        match ty {
            CoreType::I32 => CoreValue::I32(0),
            CoreType::I64 => CoreValue::I64(0),
            CoreType::F32 => CoreValue::F32(0.0),
            CoreType::F64 => CoreValue::F64(0.0),
        }
    }
}

/// The guest's linear memory and allocator, as the ABI needs them.
///
/// Implementations must fail (not panic) on out-of-bounds accesses, preferably with
/// [`AbiError::OutOfBounds`].
pub trait GuestMemory {
    /// Reads `out.len()` bytes at `offset`.
    fn read(&self, offset: u32, out: &mut [u8]) -> Result<(), AbiError>;
    /// Writes `bytes` at `offset`.
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), AbiError>;
    /// Calls the guest's `cabi_realloc(old_ptr, old_size, align, new_size)`.
    fn realloc(
        &mut self,
        old_ptr: u32,
        old_size: u32,
        align: u32,
        new_size: u32,
    ) -> Result<u32, AbiError>;
}

/// Which side defines the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The guest exports the function; the host calls it.
    Export,
    /// The guest imports the function; the host implements it and the guest calls it.
    Import,
}

/// Errors of the canonical ABI: invalid guest data, ill-typed host values, misuse.
#[derive(Debug, thiserror::Error)]
pub enum AbiError {
    #[error("out-of-bounds guest memory access: {length} bytes at address {address:#x}")]
    OutOfBounds { address: u64, length: u64 },
    #[error("misaligned guest pointer {address:#x} for `{ty}`: must be {align}-byte aligned")]
    MisalignedPointer {
        address: u32,
        align: u32,
        ty: String,
    },
    #[error("invalid UTF-8 in the string of {length} bytes at address {address:#x}: {reason}")]
    InvalidUtf8 {
        address: u32,
        length: u32,
        reason: String,
    },
    #[error("invalid char {value:#x}: not a Unicode scalar value")]
    InvalidChar { value: u32 },
    #[error("invalid discriminant {value} for `{ty}`, which has {cases} cases")]
    InvalidDiscriminant {
        ty: String,
        value: u32,
        cases: usize,
    },
    #[error("`{func}` takes {expected} params, got {got}")]
    WrongParamCount {
        func: String,
        expected: usize,
        got: usize,
    },
    #[error("`{func}`: param {index} (`{name}`) is not a `{expected}`: {detail}")]
    WrongParamType {
        func: String,
        index: usize,
        name: String,
        expected: String,
        detail: String,
    },
    #[error("`{func}`: the result is not a `{expected}`: {detail}")]
    WrongResultType {
        func: String,
        expected: String,
        detail: String,
    },
    #[error("`{func}` returns a `{expected}` but no result value was given")]
    MissingResult { func: String, expected: String },
    #[error("`{func}` returns nothing but a result value was given")]
    UnexpectedResult { func: String },
    #[error("`{func}`: expected {expected} core {what}, got {got}")]
    WrongCoreCount {
        func: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("`{func}`: core {what} {index} must be {expected}, got {got}")]
    WrongCoreType {
        func: String,
        what: &'static str,
        index: usize,
        expected: CoreType,
        got: CoreType,
    },
    #[error("`{func}` returns its result through a return pointer, but none was given")]
    MissingRetptr { func: String },
    #[error("`{func}` returns its result flat, but a return pointer was given")]
    UnexpectedRetptr { func: String },
    #[error(
        "`{func}`: `{method}` is for {expected:?}-direction functions, this one is {actual:?}"
    )]
    WrongDirection {
        func: String,
        method: &'static str,
        expected: Direction,
        actual: Direction,
    },
    #[error("unsupported type `{ty}`: {reason}")]
    UnsupportedType { ty: String, reason: String },
    #[error("guest allocation of {size} bytes (alignment {align}) failed: {reason}")]
    AllocationFailed {
        size: u32,
        align: u32,
        reason: String,
    },
    #[error("a string of {length} bytes is too long for the canonical ABI (at most 2^31-1)")]
    StringTooLong { length: usize },
    #[error("a list of {length} elements of {elem_size} bytes does not fit in 32-bit memory")]
    ListTooLarge { length: usize, elem_size: u32 },
    #[error("invalid WAVE value for type `{ty}`: {message} (in {text:?})")]
    WaveParse {
        ty: String,
        text: String,
        message: String,
    },
    #[error("invalid WAVE value for param {index} (`{name}: {ty}`): {message} (in {text:?})")]
    WaveParam {
        index: usize,
        name: String,
        ty: String,
        text: String,
        message: String,
    },
    #[error("cannot encode the value as WAVE: {0}")]
    WaveWrite(String),
    #[error("invalid WIT: {0}")]
    InvalidWit(String),
    /// For [`GuestMemory`] implementations: the engine failed (e.g. a trap in `cabi_realloc`).
    #[error("guest memory access failed: {0}")]
    Memory(String),
    #[error("internal canonical ABI error: {0}")]
    Internal(String),
}

/// The name of the post-return function of an export: `cabi_post_<export name>`.
pub fn post_return_name(export_name: &str) -> String {
    format!("cabi_post_{export_name}")
}

/// Everything needed to call one WIT function through the canonical ABI, computed once.
#[derive(Debug, Clone)]
pub struct FunctionAbi {
    name: String,
    direction: Direction,
    param_names: Vec<String>,
    param_types: Vec<Type>,
    result_type: Option<Type>,
    params: Vec<Arc<AbiType>>,
    result: Option<Arc<AbiType>>,
    core_params: Vec<CoreType>,
    core_results: Vec<CoreType>,
    indirect_params: bool,
    retptr: bool,
    /// Offsets of the params in the params tuple, and its size and alignment.
    params_offsets: Vec<u32>,
    params_size: u32,
    params_align: u32,
}

fn core_type(ty: WasmType) -> CoreType {
    match ty {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => CoreType::I32,
        WasmType::I64 | WasmType::PointerOrI64 => CoreType::I64,
        WasmType::F32 => CoreType::F32,
        WasmType::F64 => CoreType::F64,
    }
}

/// Shortens long texts in error messages.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl FunctionAbi {
    /// Computes the ABI of `func` (whose types live in `resolve`) for `direction`.
    pub fn new(resolve: &Resolve, func: &Function, direction: Direction) -> Result<Self, AbiError> {
        let mut builder = Builder::new(resolve)?;
        let mut params = Vec::with_capacity(func.params.len());
        for p in &func.params {
            let ty = builder
                .build(&p.ty)
                .map_err(|e| in_context(e, &func.name, &p.name))?;
            params.push(ty);
        }
        let result = func
            .result
            .as_ref()
            .map(|t| builder.build(t))
            .transpose()
            .map_err(|e| in_context(e, &func.name, "result"))?;
        let param_wit_types: Vec<_> = func.params.iter().map(|p| p.ty).collect();
        let (params_offsets, params_size, params_align) =
            builder.record_layout(&param_wit_types)?;

        let variant = match direction {
            Direction::Export => AbiVariant::GuestExport,
            Direction::Import => AbiVariant::GuestImport,
        };
        let sig = resolve.wasm_signature(variant, func);
        let abi = FunctionAbi {
            name: func.name.clone(),
            direction,
            param_names: func.params.iter().map(|p| p.name.clone()).collect(),
            param_types: params.iter().map(|p| p.wave.clone()).collect(),
            result_type: result.as_ref().map(|r| r.wave.clone()),
            params,
            result,
            core_params: sig.params.iter().copied().map(core_type).collect(),
            core_results: sig.results.iter().copied().map(core_type).collect(),
            indirect_params: sig.indirect_params,
            retptr: sig.retptr,
            params_offsets,
            params_size,
            params_align,
        };
        abi.check_signature()?;
        Ok(abi)
    }

    /// Checks our own flattening against `wit-parser`'s signature.
    fn check_signature(&self) -> Result<(), AbiError> {
        let mut flat = Some(Vec::new());
        for p in &self.params {
            flat = match (flat, &p.flat) {
                (Some(mut acc), Some(f)) if acc.len() + f.len() <= MAX_FLAT_PARAMS => {
                    acc.extend_from_slice(f);
                    Some(acc)
                }
                _ => None,
            };
        }
        let mut params = flat.unwrap_or_else(|| vec![CoreType::I32]);
        let (mut results, retptr) = match self.result.as_ref().map(|r| &r.flat) {
            None => (vec![], false),
            Some(Some(f)) if f.len() <= MAX_FLAT_RESULTS => (f.clone(), false),
            Some(_) => (vec![CoreType::I32], true),
        };
        if retptr && self.direction == Direction::Import {
            params.push(CoreType::I32);
            results.clear();
        }
        if params != self.core_params || results != self.core_results || retptr != self.retptr {
            return Err(AbiError::Internal(format!(
                "flattening of `{}` disagrees with wit-parser: {params:?} -> {results:?} \
                 vs {:?} -> {:?}",
                self.name, self.core_params, self.core_results
            )));
        }
        Ok(())
    }

    /// The WIT name of the function (e.g. `get` or `[method]counter.get`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The direction this ABI was computed for.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn param_names(&self) -> &[String] {
        &self.param_names
    }

    /// The wave types of the params (resource handles are `u32`).
    pub fn param_types(&self) -> &[Type] {
        &self.param_types
    }

    /// The wave type of the result, if the function returns something.
    pub fn result_type(&self) -> Option<&Type> {
        self.result_type.as_ref()
    }

    /// The core params of the function (after indirect params and, for imports, the retptr).
    pub fn core_params(&self) -> &[CoreType] {
        &self.core_params
    }

    /// The core results of the function (for exports returning through memory, the pointer).
    pub fn core_results(&self) -> &[CoreType] {
        &self.core_results
    }

    /// Whether the params are passed through one pointer to a tuple in memory.
    pub fn indirect_params(&self) -> bool {
        self.indirect_params
    }

    /// Whether the result goes through memory (for exports the guest returns a pointer to
    /// it, for imports the guest passes a return pointer as the last core arg).
    pub fn has_retptr(&self) -> bool {
        self.retptr
    }

    fn expect_direction(&self, method: &'static str, expected: Direction) -> Result<(), AbiError> {
        if self.direction == expected {
            Ok(())
        } else {
            Err(AbiError::WrongDirection {
                func: self.name.clone(),
                method,
                expected,
                actual: self.direction,
            })
        }
    }

    fn check_core(
        &self,
        what: &'static str,
        want: &[CoreType],
        got: &[CoreValue],
    ) -> Result<(), AbiError> {
        if want.len() != got.len() {
            return Err(AbiError::WrongCoreCount {
                func: self.name.clone(),
                what,
                expected: want.len(),
                got: got.len(),
            });
        }
        for (index, (w, g)) in want.iter().zip(got).enumerate() {
            if *w != g.ty() {
                return Err(AbiError::WrongCoreType {
                    func: self.name.clone(),
                    what,
                    index,
                    expected: *w,
                    got: g.ty(),
                });
            }
        }
        Ok(())
    }

    fn check_params(&self, params: &[Value]) -> Result<(), AbiError> {
        if params.len() != self.params.len() {
            return Err(AbiError::WrongParamCount {
                func: self.name.clone(),
                expected: self.params.len(),
                got: params.len(),
            });
        }
        for (index, (ty, value)) in self.params.iter().zip(params).enumerate() {
            lower::check_value(ty, value).map_err(|detail| AbiError::WrongParamType {
                func: self.name.clone(),
                index,
                name: self.param_names[index].clone(),
                expected: ty.wave.to_string(),
                detail,
            })?;
        }
        Ok(())
    }

    /// The result type and value, checked against each other.
    fn check_result<'v>(
        &self,
        result: Option<&'v Value>,
    ) -> Result<Option<(&Arc<AbiType>, &'v Value)>, AbiError> {
        match (&self.result, result) {
            (None, None) => Ok(None),
            (Some(ty), None) => Err(AbiError::MissingResult {
                func: self.name.clone(),
                expected: ty.wave.to_string(),
            }),
            (None, Some(_)) => Err(AbiError::UnexpectedResult {
                func: self.name.clone(),
            }),
            (Some(ty), Some(value)) => {
                lower::check_value(ty, value).map_err(|detail| AbiError::WrongResultType {
                    func: self.name.clone(),
                    expected: ty.wave.to_string(),
                    detail,
                })?;
                Ok(Some((ty, value)))
            }
        }
    }

    /// Export direction (the host calls the guest): lowers `params` into the export's core
    /// args, allocating strings, lists and (beyond 16 flat values) the params tuple in guest
    /// memory with `cabi_realloc`.
    pub fn lower_params(
        &self,
        mem: &mut dyn GuestMemory,
        params: &[Value],
    ) -> Result<Vec<CoreValue>, AbiError> {
        self.expect_direction("lower_params", Direction::Export)?;
        self.check_params(params)?;
        let mut cx = lower::Lower { mem };
        if self.indirect_params {
            let ptr = cx.alloc(self.params_size, self.params_align, "params")?;
            let mut buf = vec![0u8; self.params_size as usize];
            for ((ty, value), offset) in self.params.iter().zip(params).zip(&self.params_offsets) {
                cx.store(ty, value, &mut buf, *offset as usize)?;
            }
            cx.mem.write(ptr, &buf)?;
            Ok(vec![CoreValue::I32(ptr as i32)])
        } else {
            let mut out = Vec::with_capacity(self.core_params.len());
            for (ty, value) in self.params.iter().zip(params) {
                cx.lower_flat(ty, value, &mut out)?;
            }
            Ok(out)
        }
    }

    /// Export direction: lifts the export's core results (a flat value, or a pointer to the
    /// result area) into the result value.
    pub fn lift_result(
        &self,
        mem: &dyn GuestMemory,
        results: &[CoreValue],
    ) -> Result<Option<Value>, AbiError> {
        self.expect_direction("lift_result", Direction::Export)?;
        self.check_core("results", &self.core_results, results)?;
        let Some(ty) = &self.result else {
            return Ok(None);
        };
        let cx = lift::Lift { mem };
        if self.retptr {
            let ptr = lift::ptr_arg(results[0])?;
            let buf = cx.read_aligned(ptr, ty.size, ty.align, &ty.name)?;
            Ok(Some(cx.load(ty, &buf, 0)?))
        } else {
            let mut it = lift::FlatIter::new(results);
            Ok(Some(cx.lift_flat(ty, &mut it)?))
        }
    }

    /// Import direction (the guest calls the host): lifts the guest's core args into the
    /// param values, and returns the return pointer if the signature has one.
    pub fn lift_params(
        &self,
        mem: &dyn GuestMemory,
        args: &[CoreValue],
    ) -> Result<(Vec<Value>, Option<u32>), AbiError> {
        self.expect_direction("lift_params", Direction::Import)?;
        self.check_core("args", &self.core_params, args)?;
        let retptr = match (self.retptr, args.last()) {
            (true, Some(last)) => Some(lift::ptr_arg(*last)?),
            _ => None,
        };
        let cx = lift::Lift { mem };
        let mut values = Vec::with_capacity(self.params.len());
        if self.indirect_params {
            let ptr = lift::ptr_arg(args[0])?;
            let buf = cx.read_aligned(ptr, self.params_size, self.params_align, "params")?;
            for (ty, offset) in self.params.iter().zip(&self.params_offsets) {
                values.push(cx.load(ty, &buf, *offset as usize)?);
            }
        } else {
            let mut it = lift::FlatIter::new(args);
            for ty in &self.params {
                values.push(cx.lift_flat(ty, &mut it)?);
            }
        }
        Ok((values, retptr))
    }

    /// Import direction: lowers the host's result, either into flat core results, or at
    /// `retptr` (allocating strings and lists in guest memory with `cabi_realloc`), in which
    /// case there are no core results.
    pub fn lower_result(
        &self,
        mem: &mut dyn GuestMemory,
        result: Option<&Value>,
        retptr: Option<u32>,
    ) -> Result<Vec<CoreValue>, AbiError> {
        self.expect_direction("lower_result", Direction::Import)?;
        let checked = self.check_result(result)?;
        let mut cx = lower::Lower { mem };
        match (self.retptr, retptr) {
            (true, None) => Err(AbiError::MissingRetptr {
                func: self.name.clone(),
            }),
            (false, Some(_)) => Err(AbiError::UnexpectedRetptr {
                func: self.name.clone(),
            }),
            (true, Some(ptr)) => {
                let Some((ty, value)) = checked else {
                    return Err(AbiError::Internal("return pointer without a result".into()));
                };
                lift::check_aligned(ptr, ty.align, &ty.name)?;
                lift::check_range(&*cx.mem, ptr, u64::from(ty.size))?;
                let mut buf = vec![0u8; ty.size as usize];
                cx.store(ty, value, &mut buf, 0)?;
                cx.mem.write(ptr, &buf)?;
                Ok(Vec::new())
            }
            (false, None) => {
                let mut out = Vec::with_capacity(self.core_results.len());
                if let Some((ty, value)) = checked {
                    cx.lower_flat(ty, value, &mut out)?;
                }
                Ok(out)
            }
        }
    }

    /// Parses the WAVE text of param `index`, with an error naming the param.
    pub fn parse_param(&self, index: usize, text: &str) -> Result<Value, AbiError> {
        let Some(ty) = self.param_types.get(index) else {
            return Err(AbiError::WrongParamCount {
                func: self.name.clone(),
                expected: self.param_types.len(),
                got: index + 1,
            });
        };
        wasm_wave::from_str::<Value>(ty, text).map_err(|e| AbiError::WaveParam {
            index,
            name: self.param_names[index].clone(),
            ty: ty.to_string(),
            text: truncate(text, 200),
            message: e.to_string(),
        })
    }

    /// Parses one WAVE text per param.
    pub fn parse_params(&self, texts: &[&str]) -> Result<Vec<Value>, AbiError> {
        if texts.len() != self.param_types.len() {
            return Err(AbiError::WrongParamCount {
                func: self.name.clone(),
                expected: self.param_types.len(),
                got: texts.len(),
            });
        }
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.parse_param(i, t))
            .collect()
    }
}

fn in_context(e: AbiError, func: &str, what: &str) -> AbiError {
    match e {
        AbiError::UnsupportedType { ty, reason } => AbiError::UnsupportedType {
            ty,
            reason: format!("{reason} (in `{what}` of `{func}`)"),
        },
        other => other,
    }
}

/// Parses a WAVE value of type `ty`.
pub fn parse_wave(ty: &Type, text: &str) -> Result<Value, AbiError> {
    wasm_wave::from_str::<Value>(ty, text).map_err(|e| AbiError::WaveParse {
        ty: ty.to_string(),
        text: truncate(text, 200),
        message: e.to_string(),
    })
}

/// Encodes a value as WAVE text.
pub fn to_wave(value: &Value) -> Result<String, AbiError> {
    wasm_wave::to_string(value).map_err(|e| AbiError::WaveWrite(e.to_string()))
}
