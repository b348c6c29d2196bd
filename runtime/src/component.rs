//! Components: wasm modules stored under a UUID and a version, validated at upload, compiled once.
//!
//! A component is a core module carrying its WIT world in a `component-type` custom section (what
//! `wit-bindgen` emits for `wasm32-wasip1`). The world gives every export's types, so invocations
//! are typed. The compiled module is cached on disk so a second start does not recompile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use lmdb::{Cursor, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wit_parser::{WorldItem, WorldKey};

use crate::abi::{Direction, FunctionAbi};
use crate::error::{Error, Result};
use crate::ids::{ComponentId, ComponentVersion};
use crate::oplog::now_ms;
use crate::storage::{codec, Storage};

/// Golem's host interface: its WIT interface id, which is also the core import module of its
/// functions.
pub const GOLEM_HOST_MODULE: &str = "golem:api/host@0.2.0";
/// `golem:rpc`'s interface (worker-to-worker calls), and the core import module of its functions.
pub const GOLEM_RPC_MODULE: &str = "golem:rpc/types@0.1.0";
/// The WASI 0.2 interface of pollables (the futures of `golem:rpc` are awaited through it), by
/// its version-less key (see [`interface_key`]).
pub const WASI_POLL_MODULE: &str = "wasi:io/poll@0.2";
/// The golem interfaces whose functions the host implements through the canonical ABI (WASI
/// 0.2's are listed by `host::wasi2`).
pub const HOST_INTERFACES: [&str; 3] = [GOLEM_HOST_MODULE, GOLEM_RPC_MODULE, WASI_POLL_MODULE];

/// The key the host knows an interface by: its id, except that WASI 0.2 interfaces drop their
/// patch version (`wasi:io/poll@0.2.6` -> `wasi:io/poll@0.2`). Toolchains import whatever 0.2.x
/// they were built with, and wit-component links any of them to the newest: so does golemw.
pub fn interface_key(id: &str) -> std::borrow::Cow<'_, str> {
    if let Some((name, version)) = id.split_once('@') {
        if name.starts_with("wasi:") && version.starts_with("0.2.") {
            return std::borrow::Cow::Owned(format!("{name}@0.2"));
        }
    }
    std::borrow::Cow::Borrowed(id)
}

/// Whether the runtime provides the core import `module.name` (the host's answer, handed in by
/// whoever opens the store, so that checking components does not depend on the host).
pub type ProvidedImports = fn(module: &str, name: &str) -> bool;

/// Refuse uploads larger than this: far above any real guest, well below LMDB's comfort.
const COMPONENT_BYTES_MAX: usize = 512 << 20;
/// zstd level for stored wasm: uploads are rare, reads are rare (compiled cache), favour size.
const WASM_ZSTD_LEVEL: i32 = 9;

/// One stored version of a component.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The component's UUID (shared by all its versions).
    pub id: ComponentId,
    /// The user-facing name.
    pub name: String,
    /// 0 for the first upload, +1 per update.
    pub version: ComponentVersion,
    /// Size of the wasm module in bytes.
    pub size: u64,
    /// Upload time, ms since the epoch.
    pub created_at_ms: u64,
    /// CRC32 of the wasm bytes, to tell identical uploads apart.
    pub wasm_crc32: u32,
    /// The exported functions, as users name them.
    pub exports: Vec<String>,
}

/// An exported function, ready to call.
pub struct ExportedFunction {
    /// Name as users type it, e.g. `golem:it/api.{add-item}`.
    pub display_name: String,
    /// Name of the core wasm export, e.g. `golem:it/api#add-item`.
    pub core_name: String,
    /// Lowering and lifting of its params and result.
    pub abi: FunctionAbi,
}

/// An imported host function with the ABI to lift its params and lower its result.
pub struct ImportedFunction {
    /// Core import module: the WIT interface, e.g. `golem:api/host@0.2.0`.
    pub module: String,
    /// Core import field name, e.g. `get-self-metadata`.
    pub name: String,
    pub abi: FunctionAbi,
}

/// What a module's WIT world says, decoded once per component version.
pub struct Interface {
    /// Exports by core name.
    pub exports: BTreeMap<String, Arc<ExportedFunction>>,
    /// Imports of the [`HOST_INTERFACES`] and of stub interfaces (`crate::stubs`), by core
    /// module and field name.
    pub host_imports: BTreeMap<(String, String), Arc<ImportedFunction>>,
    /// Why instances of this module cannot be snapshotted (e.g. it mutates its tables, which a
    /// snapshot does not capture); `None` if they can.
    pub snapshot_blocker: Option<String>,
    /// Byte ranges of linear memory a fresh instance has written before any guest code runs
    /// (its active data segments), when that is all it writes; `None` if it cannot be known
    /// (a `start` function, a data segment at a computed offset). Everywhere else a fresh
    /// instance's memory is zero, so a restore need not look there.
    pub initialized_memory: Option<Vec<std::ops::Range<u64>>>,
}

impl Interface {
    /// Finds an export by any of the names users give it: `ns:pkg/iface.{f}`,
    /// `ns:pkg/iface#f` (with or without `@version`), or a bare `f` / `{f}` if unambiguous.
    pub fn find_export(&self, name: &str) -> Result<Arc<ExportedFunction>> {
        let name = name.trim();
        if let Some(found) = self.exports.get(name) {
            return Ok(found.clone());
        }
        let wanted = normalise_function_name(name);
        let matches: Vec<_> = self
            .exports
            .values()
            .filter(|f| {
                let (iface, func) = split_core_name(&f.core_name);
                let unversioned = iface.map(strip_version);
                match &wanted {
                    (None, w) => w == func,
                    (Some(wi), w) => {
                        w == func
                            && (Some(wi.as_str()) == iface || Some(wi.as_str()) == unversioned)
                    }
                }
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownFunction(format!(
                "unknown function {name:?}; the component exports: {}",
                self.export_names().join(", ")
            ))),
            many => Err(Error::UnknownFunction(format!(
                "function name {name:?} is ambiguous; use one of: {}",
                many.iter()
                    .map(|f| f.display_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Every export's display name.
    pub fn export_names(&self) -> Vec<String> {
        self.exports
            .values()
            .map(|f| f.display_name.clone())
            .collect()
    }
}

/// Splits `ns:pkg/iface@v#func` into (`Some("ns:pkg/iface@v")`, `"func"`), `func` into (None, func).
fn split_core_name(core: &str) -> (Option<&str>, &str) {
    match core.rsplit_once('#') {
        Some((iface, func)) => (Some(iface), func),
        None => (None, core),
    }
}

fn strip_version(iface: &str) -> &str {
    iface.split_once('@').map(|(n, _)| n).unwrap_or(iface)
}

/// Parses a user-typed function name into (interface, function).
fn normalise_function_name(name: &str) -> (Option<String>, String) {
    // `iface.{func}`
    if let Some(stripped) = name.strip_suffix('}') {
        if let Some((iface, func)) = stripped.rsplit_once(".{") {
            return (Some(iface.to_string()), func.to_string());
        }
        if let Some(func) = stripped.strip_prefix('{') {
            return (None, func.to_string());
        }
    }
    match name.rsplit_once('#') {
        Some((iface, func)) => (Some(iface.to_string()), func.to_string()),
        None => (None, name.to_string()),
    }
}

/// Decodes the WIT world of a module from its `component-type` section(s).
pub fn decode_world(wasm: &[u8]) -> Result<(wit_parser::Resolve, wit_parser::WorldId)> {
    let sections = component_type_sections(wasm)?;
    if sections.is_empty() {
        return Err(Error::InvalidComponent(
            "the module has no `component-type` custom section, so it is not a canonical-ABI \
             guest: build it with wit-bindgen for wasm32-wasip1"
                .into(),
        ));
    }
    // Decode from a module holding only those sections: wit-component re-encodes what it is
    // given, and the code section can be megabytes.
    let mut tiny = b"\0asm\x01\0\0\0".to_vec();
    for (name, data) in &sections {
        let mut body = Vec::new();
        leb128_u32(&mut body, name.len() as u32);
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        tiny.push(0);
        leb128_u32(&mut tiny, body.len() as u32);
        tiny.extend_from_slice(&body);
    }
    let (_, bindgen) = wit_component::metadata::decode(&tiny).map_err(|e| {
        Error::InvalidComponent(format!("its component-type section does not decode: {e:#}"))
    })?;
    Ok((bindgen.resolve, bindgen.world))
}

/// Decodes what a module's WIT world says: its exports, and the host interfaces it imports.
pub fn decode_interface(wasm: &[u8]) -> Result<Interface> {
    let (resolve, world) = decode_world(wasm)?;
    let resolve = &resolve;
    let world = &resolve.worlds[world];
    let mut exports = BTreeMap::new();
    for (key, item) in &world.exports {
        match item {
            WorldItem::Function(func) => {
                let abi = FunctionAbi::new(resolve, func, Direction::Export)?;
                exports.insert(
                    func.name.clone(),
                    Arc::new(ExportedFunction {
                        display_name: format!("{{{}}}", func.name),
                        core_name: func.name.clone(),
                        abi,
                    }),
                );
            }
            WorldItem::Interface { id, .. } => {
                let iface_name = match key {
                    WorldKey::Name(name) => name.clone(),
                    WorldKey::Interface(id) => resolve.id_of(*id).unwrap_or_default(),
                };
                for func in resolve.interfaces[*id].functions.values() {
                    let abi = FunctionAbi::new(resolve, func, Direction::Export)?;
                    let core_name = format!("{iface_name}#{}", func.name);
                    exports.insert(
                        core_name.clone(),
                        Arc::new(ExportedFunction {
                            display_name: format!("{iface_name}.{{{}}}", func.name),
                            core_name,
                            abi,
                        }),
                    );
                }
            }
            WorldItem::Type { .. } => {}
        }
    }
    let mut host_imports = BTreeMap::new();
    for (key, item) in &world.imports {
        if let (WorldKey::Interface(id), WorldItem::Interface { .. }) = (key, item) {
            let Some(module) = resolve.id_of(*id) else {
                continue;
            };
            let module = interface_key(&module).into_owned();
            if !HOST_INTERFACES.contains(&module.as_str())
                && !module.starts_with("wasi:")
                && crate::stubs::stub_target(&module).is_none()
            {
                continue;
            }
            for func in resolve.interfaces[*id].functions.values() {
                let abi = FunctionAbi::new(resolve, func, Direction::Import)?;
                host_imports.insert(
                    (module.clone(), func.name.clone()),
                    Arc::new(ImportedFunction {
                        module: module.clone(),
                        name: func.name.clone(),
                        abi,
                    }),
                );
            }
        }
    }
    Ok(Interface {
        exports,
        host_imports,
        snapshot_blocker: None,
        initialized_memory: None,
    })
}

/// Why a module's instances cannot be snapshotted, if they cannot: a snapshot holds memory and
/// globals, not tables, so a module that can change a table at run time is replay-only.
pub fn snapshot_blocker(wasm: &[u8]) -> Result<Option<String>> {
    use wasmparser::{Operator, Payload};
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| Error::InvalidComponent(e.to_string()))?;
        if let Payload::CodeSectionEntry(body) = payload {
            let mut reader = body
                .get_operators_reader()
                .map_err(|e| Error::InvalidComponent(e.to_string()))?;
            while !reader.eof() {
                let op = reader
                    .read()
                    .map_err(|e| Error::InvalidComponent(e.to_string()))?;
                let name = match op {
                    Operator::TableSet { .. } => "table.set",
                    Operator::TableGrow { .. } => "table.grow",
                    Operator::TableFill { .. } => "table.fill",
                    Operator::TableCopy { .. } => "table.copy",
                    Operator::TableInit { .. } => "table.init",
                    _ => continue,
                };
                return Ok(Some(format!(
                    "the module uses {name}: tables are not captured by snapshots, so this worker recovers by replay"
                )));
            }
        }
    }
    Ok(None)
}

/// See [`Interface::initialized_memory`].
pub fn initialized_memory(wasm: &[u8]) -> Result<Option<Vec<std::ops::Range<u64>>>> {
    use wasmparser::{DataKind, Operator, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| Error::InvalidComponent(e.to_string());
    let mut ranges = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            // Code runs at instantiation: it may write anywhere.
            Payload::StartSection { .. } => return Ok(None),
            Payload::DataSection(reader) => {
                for data in reader {
                    let data = data.map_err(invalid)?;
                    let DataKind::Active {
                        memory_index: 0,
                        offset_expr,
                    } = data.kind
                    else {
                        // Passive segments are written by guest code (memory.init), later.
                        continue;
                    };
                    let mut ops = offset_expr.get_operators_reader();
                    let offset = match ops.read().map_err(invalid)? {
                        Operator::I32Const { value } => u64::from(value as u32),
                        Operator::I64Const { value } => value as u64,
                        _ => return Ok(None),
                    };
                    ranges.push(offset..offset + data.data.len() as u64);
                }
            }
            _ => {}
        }
    }
    Ok(Some(ranges))
}

fn leb128_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The `component-type*` custom sections of a module, parsed with wasmparser (which also
/// catches a truncated or garbled module early, with the offset).
fn component_type_sections(wasm: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload =
            payload.map_err(|e| Error::InvalidComponent(format!("not valid WebAssembly: {e}")))?;
        match payload {
            wasmparser::Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => {
                return Err(Error::InvalidComponent(
                    "this is a WebAssembly component; golemw runs core modules built for \
                     wasm32-wasip1 with wit-bindgen (the module before `wasm-tools component new`)"
                        .into(),
                ))
            }
            wasmparser::Payload::CustomSection(section)
                if section.name().starts_with("component-type") =>
            {
                out.push((section.name().to_string(), section.data().to_vec()));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What golemw stores and runs of an upload: a core module as it is, a component binary's main
/// module with its world (size-checked first, so a huge upload is refused before it is parsed).
fn runnable(wasm: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if wasm.len() > COMPONENT_BYTES_MAX || !crate::component_binary::is_component(wasm) {
        return Ok(std::borrow::Cow::Borrowed(wasm));
    }
    Ok(std::borrow::Cow::Owned(crate::component_binary::unwrap(
        wasm,
    )?))
}

/// Validates a module for use as a component: valid wasm, a canonical-ABI guest, every import
/// provided by the runtime, the exports the ABI needs. Returns its decoded interface.
pub fn validate(wasm: &[u8], is_provided_import: ProvidedImports) -> Result<Interface> {
    if wasm.len() > COMPONENT_BYTES_MAX {
        return Err(Error::InvalidComponent(format!(
            "the module is {} bytes; at most {COMPONENT_BYTES_MAX} are accepted",
            wasm.len()
        )));
    }
    if !wasm.starts_with(b"\0asm") {
        return Err(Error::InvalidComponent(
            "not a WebAssembly module (it does not start with the `\\0asm` magic)".into(),
        ));
    }
    let interface = decode_interface(wasm)?;
    wasmparser::Validator::new()
        .validate_all(wasm)
        .map_err(|e| Error::InvalidComponent(format!("not valid WebAssembly: {e}")))?;
    let mut exported = std::collections::BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| Error::InvalidComponent(e.to_string()))? {
            wasmparser::Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| Error::InvalidComponent(e.to_string()))?;
                    if !is_provided_import(import.module, import.name) {
                        return Err(Error::InvalidComponent(format!(
                            "it imports `{}` from `{}`, which golemw does not provide",
                            import.name, import.module
                        )));
                    }
                }
            }
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| Error::InvalidComponent(e.to_string()))?;
                    exported.insert(export.name.to_string());
                }
            }
            _ => {}
        }
    }
    if !exported.contains("memory") {
        return Err(Error::InvalidComponent(
            "it does not export `memory`; canonical-ABI guests must".into(),
        ));
    }
    for func in interface.exports.values() {
        if !exported.contains(&func.core_name) {
            return Err(Error::InvalidComponent(format!(
                "its WIT world exports {} but the module has no export named `{}`",
                func.display_name, func.core_name
            )));
        }
    }
    Ok(interface)
}

/// Component records and wasm in storage, plus the compiled-module cache on disk.
pub struct ComponentStore {
    storage: Arc<Storage>,
    engine: wasmer::Engine,
    cache_dir: PathBuf,
    provided: ProvidedImports,
}

fn version_key(id: &ComponentId, version: ComponentVersion) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(id.0.as_bytes());
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

impl ComponentStore {
    pub fn new(storage: Arc<Storage>, engine: wasmer::Engine, provided: ProvidedImports) -> Self {
        let cache_dir = storage.dir().join("compiled");
        ComponentStore {
            storage,
            engine,
            cache_dir,
            provided,
        }
    }

    /// The wasm engine components are compiled with.
    pub fn engine(&self) -> &wasmer::Engine {
        &self.engine
    }

    /// Stores a new component (version 0) under a fresh UUID. A component binary is stored as
    /// its main module with its world embedded (`crate::component_binary`).
    pub fn add(&self, name: &str, wasm: &[u8]) -> Result<ComponentRecord> {
        validate_component_name(name)?;
        let wasm = &runnable(wasm)?;
        let interface = validate(wasm, self.provided)?;
        if self
            .storage
            .get(self.storage.tables().component_names, name.as_bytes())?
            .is_some()
        {
            return Err(Error::ComponentExists(name.to_string()));
        }
        let record = ComponentRecord {
            id: ComponentId(Uuid::new_v4()),
            name: name.to_string(),
            version: 0,
            size: wasm.len() as u64,
            created_at_ms: now_ms(),
            wasm_crc32: crc32fast::hash(wasm),
            exports: interface.export_names(),
        };
        self.put(&record, wasm, true)?;
        Ok(record)
    }

    /// Adds the next version of an existing component.
    pub fn update(&self, name_or_id: &str, wasm: &[u8]) -> Result<ComponentRecord> {
        let latest = self.latest(name_or_id)?;
        let wasm = &runnable(wasm)?;
        let interface = validate(wasm, self.provided)?;
        let record = ComponentRecord {
            version: latest.version + 1,
            size: wasm.len() as u64,
            created_at_ms: now_ms(),
            wasm_crc32: crc32fast::hash(wasm),
            exports: interface.export_names(),
            ..latest
        };
        self.put(&record, wasm, false)?;
        Ok(record)
    }

    fn put(&self, record: &ComponentRecord, wasm: &[u8], new_name: bool) -> Result<()> {
        let compressed = zstd::bulk::compress(wasm, WASM_ZSTD_LEVEL)
            .map_err(|e| Error::Storage(format!("compressing the module: {e}")))?;
        let sealed = codec::seal(&compressed);
        let encoded = codec::encode(record);
        let key = version_key(&record.id, record.version);
        let tables = self.storage.tables();
        self.storage.write(|txn| {
            if new_name {
                txn.put(
                    tables.component_names,
                    &record.name.as_bytes(),
                    &record.id.0.as_bytes(),
                    WriteFlags::NO_OVERWRITE,
                )?;
            }
            txn.put(tables.components, &key, &encoded, WriteFlags::NO_OVERWRITE)?;
            txn.put(
                tables.component_wasm,
                &key,
                &sealed,
                WriteFlags::NO_OVERWRITE,
            )?;
            Ok(())
        })?;
        self.storage.sync()
    }

    /// Resolves a name or UUID to a component id.
    pub fn resolve_id(&self, name_or_id: &str) -> Result<ComponentId> {
        if let Some(bytes) = self
            .storage
            .get(self.storage.tables().component_names, name_or_id.as_bytes())?
        {
            let uuid = Uuid::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: format!("component name entry {name_or_id:?}"),
                detail: e.to_string(),
            })?;
            return Ok(ComponentId(uuid));
        }
        if let Some(uuid) = crate::ids::parse_uuid(name_or_id) {
            let id = ComponentId(uuid);
            if self.get(&id, 0).is_ok() {
                return Ok(id);
            }
        }
        Err(Error::UnknownComponent(name_or_id.to_string()))
    }

    /// Every version of a component, oldest first.
    pub fn versions(&self, id: &ComponentId) -> Result<Vec<ComponentRecord>> {
        let txn = self.storage.env().begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(self.storage.tables().components)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(version_key(id, 0)) {
            let (key, value) = item?;
            if &key[..16] != id.0.as_bytes() {
                break;
            }
            out.push(codec::decode(value, "component record")?);
        }
        Ok(out)
    }

    /// The latest version of a component given by name or UUID.
    pub fn latest(&self, name_or_id: &str) -> Result<ComponentRecord> {
        let id = self.resolve_id(name_or_id)?;
        self.latest_of(&id)
    }

    /// The latest version of a component: one seek past its last version, one step back (not
    /// a decode of every version: this is on the path of every new worker).
    pub fn latest_of(&self, id: &ComponentId) -> Result<ComponentRecord> {
        use lmdb::Cursor;
        let txn = self.storage.env().begin_ro_txn()?;
        let cursor = txn.open_ro_cursor(self.storage.tables().components)?;
        let past_end = version_key(id, ComponentVersion::MAX);
        let step_back = match cursor.get(Some(&past_end), None, lmdb_sys::MDB_SET_RANGE) {
            Ok(_) => lmdb_sys::MDB_PREV,
            Err(lmdb::Error::NotFound) => lmdb_sys::MDB_LAST,
            Err(err) => return Err(err.into()),
        };
        match cursor.get(None, None, step_back) {
            Ok((Some(key), value)) if key.len() == 24 && &key[..16] == id.0.as_bytes() => {
                codec::decode(value, "component record")
            }
            Ok(_) | Err(lmdb::Error::NotFound) => Err(Error::UnknownComponent(id.to_string())),
            Err(err) => Err(err.into()),
        }
    }

    /// One version of a component.
    pub fn get(&self, id: &ComponentId, version: ComponentVersion) -> Result<ComponentRecord> {
        match self
            .storage
            .get(self.storage.tables().components, &version_key(id, version))?
        {
            Some(bytes) => codec::decode(&bytes, "component record"),
            None => {
                let versions = self.versions(id)?;
                match versions.last() {
                    Some(latest) => Err(Error::UnknownComponentVersion {
                        name: latest.name.clone(),
                        version,
                        latest: latest.version,
                    }),
                    None => Err(Error::UnknownComponent(id.to_string())),
                }
            }
        }
    }

    /// The latest version of every component.
    pub fn list(&self) -> Result<Vec<ComponentRecord>> {
        let txn = self.storage.env().begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(self.storage.tables().components)?;
        let mut latest: BTreeMap<Uuid, ComponentRecord> = BTreeMap::new();
        for item in cursor.iter_start() {
            let (_, value) = item?;
            let record: ComponentRecord = codec::decode(value, "component record")?;
            latest.insert(record.id.0, record);
        }
        let mut out: Vec<_> = latest.into_values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The stored wasm bytes of a version.
    pub fn wasm(&self, id: &ComponentId, version: ComponentVersion) -> Result<Vec<u8>> {
        let what = format!("wasm of component {id} version {version}");
        let sealed = self
            .storage
            .get(
                self.storage.tables().component_wasm,
                &version_key(id, version),
            )?
            .ok_or_else(|| Error::UnknownComponent(id.to_string()))?;
        let compressed = codec::check(&sealed, &what)?;
        zstd::stream::decode_all(compressed).map_err(|e| Error::Corrupt {
            what,
            detail: e.to_string(),
        })
    }

    /// The compiled module of a version: from the on-disk cache, else compiled and cached.
    pub fn module(&self, record: &ComponentRecord) -> Result<wasmer::Module> {
        let path = self
            .cache_dir
            .join(format!("{}-v{}.wasmer", record.id, record.version));
        if let Ok(bytes) = std::fs::read(&path) {
            match codec::check(&bytes, "compiled module cache") {
                Ok(payload) => {
                    // SAFETY: the payload was produced by `Module::serialize` of this same
                    // runtime (the file lives in our data directory) and its CRC32 matches, so
                    // it is the artifact we wrote; wasmer checks its own header and engine
                    // version before use and we fall back to compiling when it refuses.
                    match unsafe { wasmer::Module::deserialize(&self.engine, payload.to_vec()) } {
                        Ok(module) => return Ok(module),
                        Err(err) => {
                            tracing::warn!(%err, path = %path.display(), "compiled cache unusable; recompiling")
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "compiled cache is corrupt; recompiling"),
            }
        }
        let wasm = self.wasm(&record.id, record.version)?;
        let module = wasmer::Module::new(&self.engine, &wasm)
            .map_err(|e| Error::InvalidComponent(format!("compilation failed: {e}")))?;
        match module.serialize() {
            Ok(bytes) => {
                let sealed = codec::seal(&bytes);
                let tmp = path.with_extension("tmp");
                let written = std::fs::create_dir_all(&self.cache_dir)
                    .and_then(|()| std::fs::write(&tmp, &sealed))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(err) = written {
                    tracing::warn!(%err, "could not write the compiled module cache");
                }
            }
            Err(err) => tracing::warn!(%err, "could not serialize the compiled module"),
        }
        Ok(module)
    }
}

fn validate_component_name(name: &str) -> Result<()> {
    /// Names are keys in LMDB (max 511 bytes) and appear in paths and URIs.
    const COMPONENT_NAME_BYTES_MAX: usize = 128;
    if name.is_empty()
        || name.len() > COMPONENT_NAME_BYTES_MAX
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(Error::InvalidComponent(format!(
            "component name {name:?} must be 1 to {COMPONENT_NAME_BYTES_MAX} bytes, without `/` or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_normalised() {
        assert_eq!(
            normalise_function_name("golem:it/api.{add-item}"),
            (Some("golem:it/api".into()), "add-item".into())
        );
        assert_eq!(normalise_function_name("{run}"), (None, "run".into()));
        assert_eq!(
            normalise_function_name("a:b/c#f"),
            (Some("a:b/c".into()), "f".into())
        );
        assert_eq!(normalise_function_name("f"), (None, "f".into()));
    }

    #[test]
    fn garbage_is_not_a_module() {
        let err = validate(b"hello", |_, _| true).err().unwrap();
        assert!(err.to_string().contains("magic"), "{err}");
        let err = validate(b"\0asm\x01\0\0\0\x01\x05", |_, _| true)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not valid WebAssembly"), "{err}");
    }
}
