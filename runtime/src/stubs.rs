//! Typed worker-to-worker calls ("stubless RPC", as Golem 1.2 calls it): a caller imports a
//! *stub interface* of the component it calls, and the executor links those imports to
//! `golem:rpc` itself; no stub component is built or composed.
//!
//! For an exported interface `ns:pkg/iface` the stub interface is `ns:pkg-stub/stub-iface`:
//!
//! ```wit
//! resource iface {                               // a client for one worker
//!     constructor(location: uri);                // its URI
//!     blocking-f: func(params...) -> result;     // calls f and waits
//!     f: func(params...) -> future-f-result;     // calls f, returns at once
//! }
//! resource future-f-result {
//!     subscribe: func() -> pollable;
//!     get: func() -> option<result>;             // `bool` (done) for f without a result
//! }
//! ```
//!
//! [`stub_wit`] writes it for a component (`golemw stubgen`); [`stub_target`] is how the host
//! knows an import module is one, and which interface it calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use wit_parser::{Handle, Resolve, Type, TypeDefKind, TypeOwner, WorldId, WorldItem, WorldKey};

use crate::error::{Error, Result};

/// The interface a stub interface calls: `ns:pkg-stub/stub-iface[@v]` -> `ns:pkg/iface[@v]`;
/// `None` if `module` is not a stub interface.
pub fn stub_target(module: &str) -> Option<String> {
    let (package, rest) = module.split_once('/')?;
    let (iface, version) = match rest.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (rest, None),
    };
    let package = package.strip_suffix("-stub")?;
    let iface = iface.strip_prefix("stub-")?;
    if package.is_empty() || iface.is_empty() {
        return None;
    }
    Some(match version {
        Some(version) => format!("{package}/{iface}@{version}"),
        None => format!("{package}/{iface}"),
    })
}

/// What a stub import does, from its core name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StubFunction {
    /// `[constructor]iface`: a client for the worker at a URI.
    Client,
    /// `[method]iface.blocking-f`: call `f` and wait.
    Blocking(String),
    /// `[method]iface.f`: call `f`, return a future.
    Start(String),
    /// `[method]future-f-result.subscribe`.
    Subscribe,
    /// `[method]future-f-result.get`.
    Get,
    /// `[resource-drop]iface`.
    DropClient,
    /// `[resource-drop]future-f-result`.
    DropFuture,
}

impl StubFunction {
    /// Reads a stub import's core name; `None` for anything a stub interface does not have.
    pub fn parse(name: &str) -> Option<StubFunction> {
        let is_future =
            |resource: &str| resource.starts_with("future-") && resource.ends_with("-result");
        if let Some(resource) = name.strip_prefix("[constructor]") {
            return (!is_future(resource)).then_some(StubFunction::Client);
        }
        if let Some(resource) = name.strip_prefix("[resource-drop]") {
            return Some(match is_future(resource) {
                true => StubFunction::DropFuture,
                false => StubFunction::DropClient,
            });
        }
        let (resource, method) = name.strip_prefix("[method]")?.split_once('.')?;
        match (is_future(resource), method) {
            (true, "subscribe") => Some(StubFunction::Subscribe),
            (true, "get") => Some(StubFunction::Get),
            (true, _) => None,
            (false, method) => Some(match method.strip_prefix("blocking-") {
                Some(function) => StubFunction::Blocking(function.to_string()),
                None => StubFunction::Start(method.to_string()),
            }),
        }
    }
}

/// Whether the host provides the stub import `module.name`.
pub fn is_stub_import(module: &str, name: &str) -> bool {
    stub_target(module).is_some() && StubFunction::parse(name).is_some()
}

/// The stub WIT package for the interfaces a component's world exports (its decoded WIT, see
/// `component::decode_world`; see the module docs for the shape): one
/// `stub-<iface>` interface per exported interface, in package `<ns>:<pkg>-stub`. `origin`
/// names the component in the header comment. Functions the world exports directly, outside
/// an interface, have no stub (a stub resource is named after its interface).
pub fn stub_wit(resolve: &Resolve, world: WorldId, origin: &str) -> Result<String> {
    let world = &resolve.worlds[world];
    let mut interfaces = Vec::new();
    for (key, item) in &world.exports {
        if let (WorldKey::Interface(id), WorldItem::Interface { .. }) = (key, item) {
            interfaces.push(*id);
        }
    }
    let first = interfaces.first().ok_or_else(|| {
        Error::InvalidComponent(
            "it exports no interface (a stub is made of the functions of exported interfaces)"
                .into(),
        )
    })?;
    let package = resolve.interfaces[*first]
        .package
        .map(|p| resolve.packages[p].name.clone())
        .ok_or_else(|| Error::InvalidComponent("its exported interface has no package".into()))?;
    let version = package
        .version
        .as_ref()
        .map(|v| format!("@{v}"))
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Written by `golemw stubgen` from {origin}: typed calls to its workers, which golemw\n\
         // links to golem:rpc. Import an interface of this package in the calling component's world."
    );
    let _ = writeln!(
        out,
        "package {}:{}-stub{version};",
        package.namespace, package.name
    );
    for id in interfaces {
        let iface = &resolve.interfaces[id];
        let Some(name) = iface.name.clone() else {
            continue;
        };
        let target = resolve.id_of(id).unwrap_or_default();
        let mut printer = TypePrinter {
            resolve,
            uses: BTreeMap::new(),
        };
        let mut body = String::new();
        let mut futures = String::new();
        let mut methods = String::new();
        for func in iface.functions.values() {
            let params = func
                .params
                .iter()
                .map(|p| Ok(format!("{}: {}", p.name, printer.print(&p.ty)?)))
                .collect::<Result<Vec<_>>>()?
                .join(", ");
            let result = match &func.result {
                Some(ty) => Some(printer.print(ty)?),
                None => None,
            };
            let arrow = result
                .as_ref()
                .map(|r| format!(" -> {r}"))
                .unwrap_or_default();
            let f = &func.name;
            let _ = writeln!(
                methods,
                "        /// Calls `{f}` and waits for its result.\n        blocking-{f}: func({params}){arrow};\n        /// Calls `{f}` and returns at once; the future gives its result.\n        {f}: func({params}) -> future-{f}-result;"
            );
            let get = match &result {
                Some(r) => format!("option<{r}>"),
                None => "bool".into(),
            };
            let _ = writeln!(
                futures,
                "\n    /// The result of a call of `{f}`, once it has one.\n    resource future-{f}-result {{\n        subscribe: func() -> wasi-io-pollable;\n        get: func() -> {get};\n    }}"
            );
        }
        let _ = writeln!(
            body,
            "    use golem:rpc/types@0.1.0.{{uri as golem-rpc-uri}};"
        );
        let _ = writeln!(
            body,
            "    use wasi:io/poll@0.2.0.{{pollable as wasi-io-pollable}};"
        );
        for (owner, names) in &printer.uses {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = writeln!(body, "    use {owner}.{{{}}};", names.join(", "));
        }
        let _ = writeln!(
            out,
            "\n/// Calls to `{target}` of other workers.\ninterface stub-{name} {{\n{body}{futures}\n    /// A client for the workers of `{target}`: one worker, by its URI.\n    resource {name} {{\n        constructor(location: golem-rpc-uri);\n{methods}    }}\n}}"
        );
    }
    Ok(out)
}

/// Prints WIT types, collecting the named types it refers to (to `use` them).
struct TypePrinter<'a> {
    resolve: &'a Resolve,
    /// Interface -> names used from it.
    uses: BTreeMap<String, BTreeSet<String>>,
}

impl TypePrinter<'_> {
    fn print(&mut self, ty: &Type) -> Result<String> {
        Ok(match ty {
            Type::Bool => "bool".into(),
            Type::U8 => "u8".into(),
            Type::U16 => "u16".into(),
            Type::U32 => "u32".into(),
            Type::U64 => "u64".into(),
            Type::S8 => "s8".into(),
            Type::S16 => "s16".into(),
            Type::S32 => "s32".into(),
            Type::S64 => "s64".into(),
            Type::F32 => "f32".into(),
            Type::F64 => "f64".into(),
            Type::Char => "char".into(),
            Type::String => "string".into(),
            Type::ErrorContext => return Err(unsupported("error-context")),
            Type::Id(id) => {
                let def = &self.resolve.types[*id];
                if let Some(name) = &def.name {
                    if matches!(def.kind, TypeDefKind::Resource | TypeDefKind::Handle(_)) {
                        return Err(unsupported("a resource"));
                    }
                    let TypeOwner::Interface(owner) = def.owner else {
                        return Err(unsupported(&format!(
                            "type `{name}`, defined outside an interface"
                        )));
                    };
                    let owner = self.resolve.id_of(owner).unwrap_or_default();
                    self.uses.entry(owner).or_default().insert(name.clone());
                    return Ok(name.clone());
                }
                match &def.kind {
                    TypeDefKind::List(t) => format!("list<{}>", self.print(t)?),
                    TypeDefKind::FixedLengthList(t, n) => format!("list<{}, {n}>", self.print(t)?),
                    TypeDefKind::Option(t) => format!("option<{}>", self.print(t)?),
                    TypeDefKind::Map(k, v) => {
                        format!("map<{}, {}>", self.print(k)?, self.print(v)?)
                    }
                    TypeDefKind::Tuple(t) => format!(
                        "tuple<{}>",
                        t.types
                            .iter()
                            .map(|t| self.print(t))
                            .collect::<Result<Vec<_>>>()?
                            .join(", ")
                    ),
                    TypeDefKind::Result(r) => match (&r.ok, &r.err) {
                        (Some(ok), Some(err)) => {
                            format!("result<{}, {}>", self.print(ok)?, self.print(err)?)
                        }
                        (Some(ok), None) => format!("result<{}>", self.print(ok)?),
                        (None, Some(err)) => format!("result<_, {}>", self.print(err)?),
                        (None, None) => "result".into(),
                    },
                    TypeDefKind::Type(t) => self.print(t)?,
                    TypeDefKind::Handle(Handle::Own(_) | Handle::Borrow(_))
                    | TypeDefKind::Resource => return Err(unsupported("a resource")),
                    other => return Err(unsupported(other.as_str())),
                }
            }
        })
    }
}

fn unsupported(what: &str) -> Error {
    Error::InvalidComponent(format!(
        "its exports use {what}, which cannot be passed between workers"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_interfaces_name_their_target() {
        assert_eq!(
            stub_target("golem:it-stub/stub-api").as_deref(),
            Some("golem:it/api")
        );
        assert_eq!(
            stub_target("ns:pkg-stub/stub-iface@1.2.0").as_deref(),
            Some("ns:pkg/iface@1.2.0")
        );
        assert_eq!(stub_target("golem:rpc/types@0.1.0"), None);
        assert_eq!(stub_target("ns:pkg-stub/iface"), None);
        assert_eq!(stub_target("-stub/stub-"), None);
    }

    #[test]
    fn stub_functions_are_read_from_their_core_names() {
        use StubFunction::*;
        for (name, expected) in [
            ("[constructor]api", Some(Client)),
            ("[method]api.blocking-add", Some(Blocking("add".into()))),
            ("[method]api.add", Some(Start("add".into()))),
            ("[method]future-add-result.subscribe", Some(Subscribe)),
            ("[method]future-add-result.get", Some(Get)),
            ("[method]future-add-result.other", None),
            ("[resource-drop]api", Some(DropClient)),
            ("[resource-drop]future-add-result", Some(DropFuture)),
            ("[constructor]future-add-result", None),
            ("add", None),
        ] {
            assert_eq!(StubFunction::parse(name), expected, "{name}");
        }
    }
}
