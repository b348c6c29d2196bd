//! `golem:rpc`'s `wit-value`: a WIT value flattened into a list of nodes, node 0 the root,
//! inner nodes naming their children by index. Worker-to-worker calls carry their parameters
//! and results this way; this module converts between such trees and the typed values the
//! canonical ABI lowers into a callee (and lifts from it).
//!
//! The tree comes from a guest, so nothing in it is trusted: every index is checked, every node
//! may be used once only (a tree, not a graph: a node shared by many parents could make a
//! handful of nodes stand for an exponentially large value), and conversion follows the callee's
//! types, which are finite, so it cannot loop on a node that names itself.

use std::fmt::Write as _;

use wasm_wave::value::{Type, Value};
use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue};

use crate::abi::wave_string;

/// Nodes a `wit-value` may have: far above any real call's parameters, and a bound on the
/// memory a conversion takes.
pub const NODES_MAX: usize = 1 << 20;

/// One node of a tree (the cases of WIT `wit-node`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Node {
    Record(Vec<i32>),
    Variant(u32, Option<i32>),
    Enum(u32),
    Flags(Vec<bool>),
    Tuple(Vec<i32>),
    List(Vec<i32>),
    Option(Option<i32>),
    Result(Result<Option<i32>, Option<i32>>),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    S8(i8),
    S16(i16),
    S32(i32),
    S64(i64),
    F32(f32),
    F64(f64),
    Char(char),
    Bool(bool),
    String(String),
    /// A resource handle: the URI of the worker owning it and its index.
    Handle(String, u64),
}

impl Node {
    /// The node's case name, as the WIT calls it (for error messages).
    fn case(&self) -> &'static str {
        match self {
            Node::Record(_) => "record-value",
            Node::Variant(..) => "variant-value",
            Node::Enum(_) => "enum-value",
            Node::Flags(_) => "flags-value",
            Node::Tuple(_) => "tuple-value",
            Node::List(_) => "list-value",
            Node::Option(_) => "option-value",
            Node::Result(_) => "result-value",
            Node::U8(_) => "prim-u8",
            Node::U16(_) => "prim-u16",
            Node::U32(_) => "prim-u32",
            Node::U64(_) => "prim-u64",
            Node::S8(_) => "prim-s8",
            Node::S16(_) => "prim-s16",
            Node::S32(_) => "prim-s32",
            Node::S64(_) => "prim-s64",
            Node::F32(_) => "prim-float32",
            Node::F64(_) => "prim-float64",
            Node::Char(_) => "prim-char",
            Node::Bool(_) => "prim-bool",
            Node::String(_) => "prim-string",
            Node::Handle(..) => "handle",
        }
    }
}

/// A `wit-value`: a tree of nodes, `nodes[0]` the root.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WitValue {
    pub nodes: Vec<Node>,
}

impl WitValue {
    /// Reads a `wit-value` record as the canonical ABI lifted it from a guest.
    pub fn from_lifted(value: &Value) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for (field, list) in value.unwrap_record() {
            if field != "nodes" {
                continue;
            }
            for node in list.unwrap_list() {
                if nodes.len() >= NODES_MAX {
                    return Err(format!("a wit-value has more than {NODES_MAX} nodes"));
                }
                nodes.push(node_from_lifted(&node)?);
            }
        }
        Ok(WitValue { nodes })
    }

    /// The WAVE text of this value as a WIT `wit-value` record (what a guest is handed).
    pub fn to_wave(&self) -> String {
        let mut out = String::from("{nodes: [");
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_node(&mut out, node);
        }
        out.push_str("]}");
        out
    }

    /// The typed value this tree stands for, read as type `ty`. Errors say where (`.field`,
    /// `[i]`) the tree and the type part ways.
    pub fn to_typed(&self, ty: &Type) -> Result<Value, String> {
        if self.nodes.is_empty() {
            return Err("the wit-value has no nodes".into());
        }
        let mut used = vec![false; self.nodes.len()];
        let mut reader = Reader {
            nodes: &self.nodes,
            used: &mut used,
        };
        reader.read(0, ty, &mut String::new())
    }

    /// The tree of a typed value of type `ty` (root first, children after their parent).
    pub fn from_typed(value: &Value, ty: &Type) -> Result<Self, String> {
        let mut tree = WitValue::default();
        tree.push(value, ty)?;
        Ok(tree)
    }

    /// The tuple of a function's results, as `golem:rpc` returns them: `tuple-value([])` for a
    /// function without a result, `tuple-value([1])` and the result's tree otherwise.
    pub fn results_tuple(result: Option<(&Value, &Type)>) -> Result<Self, String> {
        let mut tree = WitValue {
            nodes: vec![Node::Tuple(Vec::new())],
        };
        if let Some((value, ty)) = result {
            let child = tree.push(value, ty)?;
            tree.nodes[0] = Node::Tuple(vec![child]);
        }
        Ok(tree)
    }

    /// Appends the nodes of `value` and returns the index of its root.
    fn push(&mut self, value: &Value, ty: &Type) -> Result<i32, String> {
        if self.nodes.len() >= NODES_MAX {
            return Err(format!("the value needs more than {NODES_MAX} nodes"));
        }
        let index = self.nodes.len();
        self.nodes.push(Node::Tuple(Vec::new()));
        let node = match ty.kind() {
            WasmTypeKind::Bool => Node::Bool(value.unwrap_bool()),
            WasmTypeKind::S8 => Node::S8(value.unwrap_s8()),
            WasmTypeKind::S16 => Node::S16(value.unwrap_s16()),
            WasmTypeKind::S32 => Node::S32(value.unwrap_s32()),
            WasmTypeKind::S64 => Node::S64(value.unwrap_s64()),
            WasmTypeKind::U8 => Node::U8(value.unwrap_u8()),
            WasmTypeKind::U16 => Node::U16(value.unwrap_u16()),
            WasmTypeKind::U32 => Node::U32(value.unwrap_u32()),
            WasmTypeKind::U64 => Node::U64(value.unwrap_u64()),
            WasmTypeKind::F32 => Node::F32(value.unwrap_f32()),
            WasmTypeKind::F64 => Node::F64(value.unwrap_f64()),
            WasmTypeKind::Char => Node::Char(value.unwrap_char()),
            WasmTypeKind::String => Node::String(value.unwrap_string().into_owned()),
            WasmTypeKind::List | WasmTypeKind::FixedLengthList => {
                let element = ty
                    .list_element_type()
                    .ok_or("a list type without elements")?;
                let mut children = Vec::new();
                for item in value.unwrap_list() {
                    children.push(self.push(&item, &element)?);
                }
                Node::List(children)
            }
            WasmTypeKind::Record => {
                let types: Vec<Type> = ty.record_fields().map(|(_, t)| t).collect();
                let mut children = Vec::new();
                for ((_, field), ty) in value.unwrap_record().zip(&types) {
                    children.push(self.push(&field, ty)?);
                }
                Node::Record(children)
            }
            WasmTypeKind::Tuple => {
                let types: Vec<Type> = ty.tuple_element_types().collect();
                let mut children = Vec::new();
                for (item, ty) in value.unwrap_tuple().zip(&types) {
                    children.push(self.push(&item, ty)?);
                }
                Node::Tuple(children)
            }
            WasmTypeKind::Variant => {
                let (case, payload) = value.unwrap_variant();
                let (position, case_type) = ty
                    .variant_cases()
                    .enumerate()
                    .find(|(_, (name, _))| *name == case)
                    .map(|(i, (_, t))| (i, t))
                    .ok_or_else(|| format!("no variant case {case}"))?;
                let child = match (payload, case_type) {
                    (Some(payload), Some(ty)) => Some(self.push(&payload, &ty)?),
                    _ => None,
                };
                Node::Variant(position as u32, child)
            }
            WasmTypeKind::Enum => {
                let case = value.unwrap_enum();
                let position = ty
                    .enum_cases()
                    .position(|name| name == case)
                    .ok_or_else(|| format!("no enum case {case}"))?;
                Node::Enum(position as u32)
            }
            WasmTypeKind::Option => match value.unwrap_option() {
                Some(inner) => {
                    let some = ty.option_some_type().ok_or("an option without a type")?;
                    Node::Option(Some(self.push(&inner, &some)?))
                }
                None => Node::Option(None),
            },
            WasmTypeKind::Result => {
                let (ok, err) = ty.result_types().ok_or("a result without types")?;
                match value.unwrap_result() {
                    Ok(payload) => Node::Result(Ok(match (payload, ok) {
                        (Some(p), Some(t)) => Some(self.push(&p, &t)?),
                        _ => None,
                    })),
                    Err(payload) => Node::Result(Err(match (payload, err) {
                        (Some(p), Some(t)) => Some(self.push(&p, &t)?),
                        _ => None,
                    })),
                }
            }
            WasmTypeKind::Flags => {
                let set: Vec<String> = value.unwrap_flags().map(|f| f.into_owned()).collect();
                Node::Flags(
                    ty.flags_names()
                        .map(|name| set.contains(&name.into_owned()))
                        .collect(),
                )
            }
            other => return Err(format!("a {other} cannot be sent as a wit-value")),
        };
        self.nodes[index] = node;
        Ok(index as i32)
    }
}

/// Reads a tree against a type, marking each node used.
struct Reader<'a> {
    nodes: &'a [Node],
    used: &'a mut [bool],
}

impl Reader<'_> {
    fn child(&mut self, index: i32, path: &str) -> Result<&Node, String> {
        let at = usize::try_from(index)
            .ok()
            .filter(|i| *i < self.nodes.len())
            .ok_or_else(|| {
                format!(
                    "{}node index {index} is out of range (the value has {} nodes)",
                    at_path(path),
                    self.nodes.len()
                )
            })?;
        if std::mem::replace(&mut self.used[at], true) {
            return Err(format!(
                "{}node {at} is used twice (a wit-value is a tree)",
                at_path(path)
            ));
        }
        Ok(&self.nodes[at])
    }

    fn read(&mut self, index: i32, ty: &Type, path: &mut String) -> Result<Value, String> {
        let node = self.child(index, path)?.clone();
        let mismatch = |node: &Node| {
            format!(
                "{}expected {}, found {}",
                at_path(path),
                describe(ty),
                node.case()
            )
        };
        let made = |r: Result<Value, wasm_wave::wasm::WasmValueError>, path: &str| {
            r.map_err(|e| format!("{}{e}", at_path(path)))
        };
        let value = match (ty.kind(), &node) {
            (WasmTypeKind::Bool, Node::Bool(v)) => Value::make_bool(*v),
            (WasmTypeKind::S8, Node::S8(v)) => Value::make_s8(*v),
            (WasmTypeKind::S16, Node::S16(v)) => Value::make_s16(*v),
            (WasmTypeKind::S32, Node::S32(v)) => Value::make_s32(*v),
            (WasmTypeKind::S64, Node::S64(v)) => Value::make_s64(*v),
            (WasmTypeKind::U8, Node::U8(v)) => Value::make_u8(*v),
            (WasmTypeKind::U16, Node::U16(v)) => Value::make_u16(*v),
            (WasmTypeKind::U32, Node::U32(v)) => Value::make_u32(*v),
            (WasmTypeKind::U64, Node::U64(v)) => Value::make_u64(*v),
            (WasmTypeKind::F32, Node::F32(v)) => Value::make_f32(*v),
            (WasmTypeKind::F64, Node::F64(v)) => Value::make_f64(*v),
            (WasmTypeKind::Char, Node::Char(v)) => Value::make_char(*v),
            (WasmTypeKind::String, Node::String(v)) => Value::make_string(v.as_str().into()),
            (WasmTypeKind::List | WasmTypeKind::FixedLengthList, Node::List(children)) => {
                let element = ty
                    .list_element_type()
                    .ok_or("a list type without elements")?;
                let mut items = Vec::with_capacity(children.len());
                for (i, child) in children.iter().enumerate() {
                    let len = path.len();
                    let _ = write!(path, "[{i}]");
                    items.push(self.read(*child, &element, path)?);
                    path.truncate(len);
                }
                made(Value::make_list(ty, items), path)?
            }
            (WasmTypeKind::Record, Node::Record(children)) => {
                let fields: Vec<(String, Type)> = ty
                    .record_fields()
                    .map(|(name, t)| (name.into_owned(), t))
                    .collect();
                if children.len() != fields.len() {
                    return Err(format!(
                        "{}the record has {} fields, the node gives {}",
                        at_path(path),
                        fields.len(),
                        children.len()
                    ));
                }
                let mut values = Vec::with_capacity(fields.len());
                for ((name, field_ty), child) in fields.iter().zip(children) {
                    let len = path.len();
                    let _ = write!(path, ".{name}");
                    values.push(self.read(*child, field_ty, path)?);
                    path.truncate(len);
                }
                made(
                    Value::make_record(ty, fields.iter().map(|(n, _)| n.as_str()).zip(values)),
                    path,
                )?
            }
            (WasmTypeKind::Tuple, Node::Tuple(children)) => {
                let types: Vec<Type> = ty.tuple_element_types().collect();
                if children.len() != types.len() {
                    return Err(format!(
                        "{}the tuple has {} elements, the node gives {}",
                        at_path(path),
                        types.len(),
                        children.len()
                    ));
                }
                let mut values = Vec::with_capacity(types.len());
                for (i, (element, child)) in types.iter().zip(children).enumerate() {
                    let len = path.len();
                    let _ = write!(path, ".{i}");
                    values.push(self.read(*child, element, path)?);
                    path.truncate(len);
                }
                made(Value::make_tuple(ty, values), path)?
            }
            (WasmTypeKind::Variant, Node::Variant(case, payload)) => {
                let cases: Vec<(String, Option<Type>)> = ty
                    .variant_cases()
                    .map(|(name, t)| (name.into_owned(), t))
                    .collect();
                let (name, case_ty) = cases.get(*case as usize).ok_or_else(|| {
                    format!(
                        "{}variant case {case} does not exist (the type has {})",
                        at_path(path),
                        cases.len()
                    )
                })?;
                let value = match (case_ty, payload) {
                    (Some(case_ty), Some(child)) => {
                        let len = path.len();
                        let _ = write!(path, "({name})");
                        let value = self.read(*child, case_ty, path)?;
                        path.truncate(len);
                        Some(value)
                    }
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(format!("{}case {name} needs a payload", at_path(path)))
                    }
                    (None, Some(_)) => {
                        return Err(format!("{}case {name} has no payload", at_path(path)))
                    }
                };
                made(Value::make_variant(ty, name, value), path)?
            }
            (WasmTypeKind::Enum, Node::Enum(case)) => {
                let name = ty
                    .enum_cases()
                    .nth(*case as usize)
                    .ok_or_else(|| format!("{}enum case {case} does not exist", at_path(path)))?;
                made(Value::make_enum(ty, &name), path)?
            }
            (WasmTypeKind::Flags, Node::Flags(bits)) => {
                let names: Vec<String> = ty.flags_names().map(|n| n.into_owned()).collect();
                if bits.len() > names.len() {
                    return Err(format!(
                        "{}{} flags given, the type has {}",
                        at_path(path),
                        bits.len(),
                        names.len()
                    ));
                }
                let set = names
                    .iter()
                    .zip(bits)
                    .filter(|(_, on)| **on)
                    .map(|(name, _)| name.as_str());
                made(Value::make_flags(ty, set), path)?
            }
            (WasmTypeKind::Option, Node::Option(inner)) => {
                let some = ty.option_some_type().ok_or("an option without a type")?;
                let value = match inner {
                    Some(child) => {
                        let len = path.len();
                        path.push('?');
                        let value = self.read(*child, &some, path)?;
                        path.truncate(len);
                        Some(value)
                    }
                    None => None,
                };
                made(Value::make_option(ty, value), path)?
            }
            (WasmTypeKind::Result, Node::Result(outcome)) => {
                let (ok, err) = ty.result_types().ok_or("a result without types")?;
                let (side, payload, payload_ty) = match outcome {
                    Ok(p) => ("ok", p, ok),
                    Err(p) => ("err", p, err),
                };
                let value = match (payload_ty, payload) {
                    (Some(t), Some(child)) => {
                        let len = path.len();
                        let _ = write!(path, "({side})");
                        let value = self.read(*child, &t, path)?;
                        path.truncate(len);
                        Some(value)
                    }
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(format!("{}{side} needs a payload", at_path(path)))
                    }
                    (None, Some(_)) => {
                        return Err(format!("{}{side} has no payload", at_path(path)))
                    }
                };
                let outcome = match outcome {
                    Ok(_) => Ok(value),
                    Err(_) => Err(value),
                };
                made(Value::make_result(ty, outcome), path)?
            }
            (_, Node::Handle(..)) => {
                return Err(format!(
                    "{}resource handles cannot be passed between workers by this golemw",
                    at_path(path)
                ))
            }
            (_, node) => return Err(mismatch(node)),
        };
        Ok(value)
    }
}

/// `"at .a[2]: "` for error messages, or nothing at the root.
fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("at {path}: ")
    }
}

/// A type as an error message names it: the node case it needs, and the type.
fn describe(ty: &Type) -> String {
    let case = match ty.kind() {
        WasmTypeKind::Bool => "prim-bool",
        WasmTypeKind::S8 => "prim-s8",
        WasmTypeKind::S16 => "prim-s16",
        WasmTypeKind::S32 => "prim-s32",
        WasmTypeKind::S64 => "prim-s64",
        WasmTypeKind::U8 => "prim-u8",
        WasmTypeKind::U16 => "prim-u16",
        WasmTypeKind::U32 => "prim-u32",
        WasmTypeKind::U64 => "prim-u64",
        WasmTypeKind::F32 => "prim-float32",
        WasmTypeKind::F64 => "prim-float64",
        WasmTypeKind::Char => "prim-char",
        WasmTypeKind::String => "prim-string",
        WasmTypeKind::List | WasmTypeKind::FixedLengthList => "list-value",
        WasmTypeKind::Record => "record-value",
        WasmTypeKind::Tuple => "tuple-value",
        WasmTypeKind::Variant => "variant-value",
        WasmTypeKind::Enum => "enum-value",
        WasmTypeKind::Option => "option-value",
        WasmTypeKind::Result => "result-value",
        WasmTypeKind::Flags => "flags-value",
        other => return other.to_string(),
    };
    format!("{case} (for {ty})")
}

/// One lifted `wit-node` variant value.
fn node_from_lifted(node: &Value) -> Result<Node, String> {
    let (case, payload) = node.unwrap_variant();
    let payload = payload.ok_or_else(|| format!("wit-node case {case} without a payload"))?;
    let index_list = |v: &Value| -> Vec<i32> { v.unwrap_list().map(|i| i.unwrap_s32()).collect() };
    let optional_index = |v: Option<std::borrow::Cow<'_, Value>>| v.map(|i| i.unwrap_s32());
    Ok(match case.as_ref() {
        "record-value" => Node::Record(index_list(&payload)),
        "variant-value" => {
            let mut parts = payload.unwrap_tuple();
            let case = parts.next().map(|c| c.unwrap_u32()).unwrap_or_default();
            let child = parts.next().and_then(|c| optional_index(c.unwrap_option()));
            Node::Variant(case, child)
        }
        "enum-value" => Node::Enum(payload.unwrap_u32()),
        "flags-value" => Node::Flags(payload.unwrap_list().map(|b| b.unwrap_bool()).collect()),
        "tuple-value" => Node::Tuple(index_list(&payload)),
        "list-value" => Node::List(index_list(&payload)),
        "option-value" => Node::Option(optional_index(payload.unwrap_option())),
        "result-value" => Node::Result(match payload.unwrap_result() {
            Ok(ok) => Ok(ok.and_then(|v| optional_index(v.unwrap_option()))),
            Err(err) => Err(err.and_then(|v| optional_index(v.unwrap_option()))),
        }),
        "prim-u8" => Node::U8(payload.unwrap_u8()),
        "prim-u16" => Node::U16(payload.unwrap_u16()),
        "prim-u32" => Node::U32(payload.unwrap_u32()),
        "prim-u64" => Node::U64(payload.unwrap_u64()),
        "prim-s8" => Node::S8(payload.unwrap_s8()),
        "prim-s16" => Node::S16(payload.unwrap_s16()),
        "prim-s32" => Node::S32(payload.unwrap_s32()),
        "prim-s64" => Node::S64(payload.unwrap_s64()),
        "prim-float32" => Node::F32(payload.unwrap_f32()),
        "prim-float64" => Node::F64(payload.unwrap_f64()),
        "prim-char" => Node::Char(payload.unwrap_char()),
        "prim-bool" => Node::Bool(payload.unwrap_bool()),
        "prim-string" => Node::String(payload.unwrap_string().into_owned()),
        "handle" => {
            let mut parts = payload.unwrap_tuple();
            let uri = parts
                .next()
                .map(|u| {
                    u.unwrap_record()
                        .find(|(f, _)| f == "value")
                        .map(|(_, v)| v.unwrap_string().into_owned())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            let index = parts.next().map(|i| i.unwrap_u64()).unwrap_or_default();
            Node::Handle(uri, index)
        }
        other => return Err(format!("unknown wit-node case {other}")),
    })
}

/// Writes one node as WAVE (a case of the WIT `wit-node` variant).
fn write_node(out: &mut String, node: &Node) {
    let indexes = |list: &[i32]| {
        list.iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let optional = |child: &Option<i32>| match child {
        Some(i) => format!("some({i})"),
        None => "none".into(),
    };
    let _ = match node {
        Node::Record(c) => write!(out, "record-value([{}])", indexes(c)),
        Node::Variant(case, child) => write!(out, "variant-value(({case}, {}))", optional(child)),
        Node::Enum(case) => write!(out, "enum-value({case})"),
        Node::Flags(bits) => write!(
            out,
            "flags-value([{}])",
            bits.iter()
                .map(bool::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Node::Tuple(c) => write!(out, "tuple-value([{}])", indexes(c)),
        Node::List(c) => write!(out, "list-value([{}])", indexes(c)),
        Node::Option(child) => write!(out, "option-value({})", optional(child)),
        Node::Result(Ok(child)) => write!(out, "result-value(ok({}))", optional(child)),
        Node::Result(Err(child)) => write!(out, "result-value(err({}))", optional(child)),
        Node::U8(v) => write!(out, "prim-u8({v})"),
        Node::U16(v) => write!(out, "prim-u16({v})"),
        Node::U32(v) => write!(out, "prim-u32({v})"),
        Node::U64(v) => write!(out, "prim-u64({v})"),
        Node::S8(v) => write!(out, "prim-s8({v})"),
        Node::S16(v) => write!(out, "prim-s16({v})"),
        Node::S32(v) => write!(out, "prim-s32({v})"),
        Node::S64(v) => write!(out, "prim-s64({v})"),
        Node::F32(v) => write!(out, "prim-float32({})", wave_float(f64::from(*v), true)),
        Node::F64(v) => write!(out, "prim-float64({})", wave_float(*v, false)),
        Node::Char(c) => {
            let text = Value::make_char(*c);
            write!(
                out,
                "prim-char({})",
                wasm_wave::to_string(&text).unwrap_or_else(|_| "'?'".into())
            )
        }
        Node::Bool(v) => write!(out, "prim-bool({v})"),
        Node::String(s) => write!(out, "prim-string({})", wave_string(s)),
        Node::Handle(uri, index) => {
            write!(out, "handle(({{value: {}}}, {index}))", wave_string(uri))
        }
    };
}

/// A float as WAVE writes it (`nan`, `inf`, `-inf`, or digits that read back exactly).
fn wave_float(value: f64, single: bool) -> String {
    if value.is_nan() {
        "nan".into()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.into()
    } else if single {
        format!("{:?}", value as f32)
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::parse_wave;

    fn record_type() -> Type {
        let point = Type::record([("x", Type::S32), ("y", Type::S32)]).unwrap();
        let pet = Type::variant([("cat", Some(Type::STRING)), ("fish", None)]).unwrap();
        Type::record([
            ("n", Type::U64),
            ("s", Type::STRING),
            ("pts", Type::list(Type::option(point))),
            ("pet", pet),
            ("color", Type::enum_ty(["red", "green"]).unwrap()),
            ("perms", Type::flags(["read", "write", "exec"]).unwrap()),
            ("r", Type::result(Some(Type::U32), None)),
            ("t", Type::tuple(vec![Type::CHAR, Type::F32]).unwrap()),
        ])
        .unwrap()
    }

    #[test]
    fn typed_values_round_trip_through_trees() {
        let ty = record_type();
        let text = "{n: 18446744073709551615, s: \"hé\\n\", pts: [some({x: -1, y: 2}), none], \
                    pet: cat(\"tom\"), color: green, perms: {read, exec}, r: err, t: ('x', 1.5)}";
        let value = parse_wave(&ty, text).unwrap();
        let tree = WitValue::from_typed(&value, &ty).unwrap();
        assert_eq!(tree.to_typed(&ty).unwrap(), value);
        // Parents come before their children.
        assert!(matches!(tree.nodes[0], Node::Record(ref c) if c.len() == 8 && c[0] == 1));
    }

    #[test]
    fn the_wave_of_a_tree_reads_back_as_a_wit_value() {
        let ty = record_type();
        let value = parse_wave(
            &ty,
            "{n: 1, s: \"a\\\"b\", pts: [], pet: fish, color: red, perms: {}, r: ok(7), t: ('\\'', nan)}",
        )
        .unwrap();
        let tree = WitValue::from_typed(&value, &ty).unwrap();
        let text = tree.to_wave();
        assert!(text.starts_with("{nodes: [record-value(["), "{text}");
        assert!(text.contains("prim-string(\"a\\\"b\")"), "{text}");
        assert!(text.contains("prim-float32(nan)"), "{text}");
    }

    #[test]
    fn mismatches_name_the_place_and_both_sides() {
        let ty = Type::record([("a", Type::list(Type::U32))]).unwrap();
        let tree = WitValue {
            nodes: vec![
                Node::Record(vec![1]),
                Node::List(vec![2, 3]),
                Node::U32(1),
                Node::String("x".into()),
            ],
        };
        let err = tree.to_typed(&ty).unwrap_err();
        assert!(err.contains("at .a[1]"), "{err}");
        assert!(err.contains("expected prim-u32"), "{err}");
        assert!(err.contains("found prim-string"), "{err}");
    }

    #[test]
    fn hostile_trees_are_refused() {
        let ty = Type::list(Type::list(Type::U8));
        // A node naming itself.
        let cycle = WitValue {
            nodes: vec![Node::List(vec![0])],
        };
        assert!(cycle.to_typed(&ty).unwrap_err().contains("used twice"));
        // One node shared by many parents.
        let shared = WitValue {
            nodes: vec![Node::List(vec![1, 1]), Node::List(vec![])],
        };
        assert!(shared.to_typed(&ty).unwrap_err().contains("used twice"));
        let out_of_range = WitValue {
            nodes: vec![Node::List(vec![-1])],
        };
        assert!(out_of_range
            .to_typed(&ty)
            .unwrap_err()
            .contains("out of range"));
        assert!(WitValue::default().to_typed(&ty).is_err());
        let bad_case = WitValue {
            nodes: vec![Node::Variant(5, None)],
        };
        let variant = Type::variant([("a", None::<Type>)]).unwrap();
        assert!(bad_case
            .to_typed(&variant)
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn results_are_wrapped_in_a_tuple() {
        let none = WitValue::results_tuple(None).unwrap();
        assert_eq!(none.nodes, vec![Node::Tuple(vec![])]);
        let one = WitValue::results_tuple(Some((&Value::make_u64(5), &Type::U64))).unwrap();
        assert_eq!(one.nodes, vec![Node::Tuple(vec![1]), Node::U64(5)]);
    }
}
