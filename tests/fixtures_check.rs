//! The inputs of the instance-snapshot tests are what they claim to be: the hand-built
//! `golemw:globals` modules validate, carry their WIT world and keep their state where they
//! say; the `memory` and `init` guests build with the expected exports; and all of them run
//! (and replay) in golemw.

use golemw_runtime::{Executor, ExecutorOptions, WorkerId};
use golemw_tests::Completes;
use golemw_tests::{
    guest_wasm, module_with_global_state, module_with_table_mutation, GLOBALS_COMPONENT_TYPE,
    GLOBALS_GET, GLOBALS_INCR,
};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef, ValType};
use wit_parser::{Type, WorldItem};

/// What a core module looks like from outside, read with wasmparser.
#[derive(Default, Debug)]
struct Shape {
    imports: Vec<(String, String)>,
    /// Export name -> (kind, index).
    exports: Vec<(String, ExternalKind, u32)>,
    /// Function index -> type index, imported functions included.
    func_types: Vec<u32>,
    /// Type index -> (params, results) for function types.
    types: Vec<(Vec<ValType>, Vec<ValType>)>,
    /// Defined globals: (type, mutable).
    globals: Vec<(ValType, bool)>,
    tables: usize,
    table_mutations: usize,
    custom_sections: Vec<String>,
}

fn shape(wasm: &[u8]) -> Shape {
    wasmparser::validate(wasm).unwrap_or_else(|e| panic!("the module does not validate: {e}"));
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::TypeSection(reader) => {
                for ty in reader.into_iter_err_on_gc_types() {
                    let ty = ty.unwrap();
                    shape
                        .types
                        .push((ty.params().to_vec(), ty.results().to_vec()));
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.unwrap();
                    if let TypeRef::Func(ty) = import.ty {
                        shape.func_types.push(ty);
                    }
                    shape
                        .imports
                        .push((import.module.to_string(), import.name.to_string()));
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    shape.func_types.push(ty.unwrap());
                }
            }
            Payload::TableSection(reader) => shape.tables += reader.count() as usize,
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let ty = global.unwrap().ty;
                    shape.globals.push((ty.content_type, ty.mutable));
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.unwrap();
                    shape
                        .exports
                        .push((export.name.to_string(), export.kind, export.index));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    if matches!(
                        ops.read().unwrap(),
                        Operator::TableGrow { .. }
                            | Operator::TableSet { .. }
                            | Operator::TableFill { .. }
                            | Operator::TableCopy { .. }
                            | Operator::TableInit { .. }
                    ) {
                        shape.table_mutations += 1;
                    }
                }
            }
            Payload::CustomSection(section) => {
                shape.custom_sections.push(section.name().to_string());
            }
            _ => {}
        }
    }
    shape
}

impl Shape {
    fn export(&self, name: &str) -> Option<(ExternalKind, u32)> {
        self.exports
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, kind, index)| (*kind, *index))
    }

    /// The signature of exported function `name`.
    fn export_signature(&self, name: &str) -> (Vec<ValType>, Vec<ValType>) {
        match self.export(name) {
            Some((ExternalKind::Func, index)) => {
                self.types[self.func_types[index as usize] as usize].clone()
            }
            other => panic!("{name} is not an exported function: {other:?}"),
        }
    }

    fn export_names(&self) -> Vec<&str> {
        self.exports.iter().map(|(n, _, _)| n.as_str()).collect()
    }
}

/// Decodes the module's `component-type` section(s) and returns the functions of export
/// `interface` as (name, param count, result).
fn world_export(wasm: &[u8], interface: &str) -> Vec<(String, usize, Option<Type>)> {
    let (_, bindgen) = wit_component::metadata::decode(wasm)
        .unwrap_or_else(|e| panic!("the component-type section does not decode: {e:#}"));
    let resolve = &bindgen.resolve;
    let world = &resolve.worlds[bindgen.world];
    let names: Vec<String> = world
        .exports
        .keys()
        .map(|k| resolve.name_world_key(k))
        .collect();
    let item = world
        .exports
        .iter()
        .find(|(key, _)| resolve.name_world_key(key) == interface)
        .map(|(_, item)| item)
        .unwrap_or_else(|| panic!("no export {interface} in the world; exports: {names:?}"));
    let WorldItem::Interface { id, .. } = item else {
        panic!("export {interface} is not an interface");
    };
    resolve.interfaces[*id]
        .functions
        .values()
        .map(|f| (f.name.clone(), f.params.len(), f.result))
        .collect()
}

fn check_globals_module(wasm: &[u8]) -> Shape {
    let shape = shape(wasm);
    assert!(
        shape.imports.is_empty(),
        "imports nothing: {:?}",
        shape.imports
    );
    assert!(matches!(
        shape.export("memory"),
        Some((ExternalKind::Memory, 0))
    ));
    assert_eq!(
        shape.export_signature("cabi_realloc"),
        (vec![ValType::I32; 4], vec![ValType::I32])
    );
    for name in [GLOBALS_INCR, GLOBALS_GET] {
        assert_eq!(shape.export_signature(name), (vec![], vec![ValType::I64]));
    }
    // The state: a mutable i64 global, not exported (no global is).
    assert_eq!(shape.globals[0], (ValType::I64, true));
    assert!(
        !shape
            .exports
            .iter()
            .any(|(_, kind, _)| *kind == ExternalKind::Global),
        "no global is exported: {:?}",
        shape.exports
    );
    assert!(
        shape
            .custom_sections
            .iter()
            .any(|s| s == GLOBALS_COMPONENT_TYPE),
        "custom sections: {:?}",
        shape.custom_sections
    );
    let mut functions = world_export(wasm, "golemw:globals/api");
    functions.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        functions,
        vec![
            ("get".to_string(), 0, Some(Type::U64)),
            ("incr".to_string(), 0, Some(Type::U64)),
        ]
    );
    shape
}

#[test]
fn global_state_fixture_is_valid() {
    let shape = check_globals_module(&module_with_global_state());
    assert_eq!(shape.tables, 0);
    assert_eq!(shape.table_mutations, 0);
}

#[test]
fn table_mutation_fixture_is_valid() {
    let shape = check_globals_module(&module_with_table_mutation());
    assert_eq!(shape.tables, 1);
    assert_eq!(shape.table_mutations, 1, "incr runs table.grow");
}

const MEMORY_FUNCTIONS: [&str; 11] = [
    "alloc",
    "free",
    "touch",
    "touch-pages",
    "fill-mib",
    "checksum",
    "memory-bytes",
    "live-bytes",
    "now",
    "clocks",
    "jump",
];

#[test]
fn memory_guest_builds() {
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let shape = shape(&wasm);
    for name in MEMORY_FUNCTIONS {
        let export = format!("golemw:memory/api#{name}");
        assert!(
            matches!(shape.export(&export), Some((ExternalKind::Func, _))),
            "{export} missing; exports: {:?}",
            shape.export_names()
        );
    }
    assert!(shape.export("_initialize").is_none());
    let functions = world_export(&wasm, "golemw:memory/api");
    assert_eq!(functions.len(), MEMORY_FUNCTIONS.len(), "{functions:?}");
}

#[test]
fn init_guest_builds_with_initialize() {
    let wasm = std::fs::read(guest_wasm("init")).unwrap();
    let shape = shape(&wasm);
    assert_eq!(
        shape.export_signature("_initialize"),
        (vec![], vec![]),
        "exports: {:?}",
        shape.export_names()
    );
    for name in ["started-at", "add"] {
        let export = format!("golemw:init/api#{name}");
        assert!(
            shape.export(&export).is_some(),
            "{export} missing; exports: {:?}",
            shape.export_names()
        );
    }
    // `_initialize` reads the clock and random through WASI.
    for import in ["clock_time_get", "random_get"] {
        assert!(
            shape
                .imports
                .iter()
                .any(|(m, n)| m == "wasi_snapshot_preview1" && n == import),
            "{import} not imported: {:?}",
            shape.imports
        );
    }
}

// --- The inputs run in golemw, and replay. ---

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    Executor::open(dir, ExecutorOptions::default()).expect("open the data directory")
}

fn invoke(executor: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    executor
        .invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .result
        .unwrap_or_default()
}

#[test]
fn globals_fixtures_run_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = [
        ("globals", module_with_global_state()),
        ("tables", module_with_table_mutation()),
    ];
    {
        let ex = open(dir.path());
        for (name, wasm) in &fixtures {
            ex.components().add(name, wasm).expect("add component");
            let id = ex.worker_id(name, "w").unwrap();
            for n in 1..=3 {
                assert_eq!(invoke(&ex, &id, "incr", &[]), n.to_string());
            }
        }
    }
    let ex = open(dir.path());
    for (name, _) in &fixtures {
        let id = ex.worker_id(name, "w").unwrap();
        assert_eq!(invoke(&ex, &id, "get", &[]), "3", "{name} after replay");
        assert_eq!(invoke(&ex, &id, "incr", &[]), "4");
    }
}

#[test]
fn memory_guest_runs_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let (checksum, memory_bytes);
    {
        let ex = open(dir.path());
        ex.components().add("memory", &wasm).expect("add component");
        let id = ex.worker_id("memory", "m").unwrap();
        let empty = invoke(&ex, &id, "checksum", &[]);
        assert_eq!(invoke(&ex, &id, "alloc", &["100"]), "0");
        assert_eq!(invoke(&ex, &id, "alloc", &["3"]), "1");
        assert_ne!(invoke(&ex, &id, "checksum", &[]), empty);
        assert_eq!(invoke(&ex, &id, "free", &["0"]), "true");
        assert_eq!(invoke(&ex, &id, "free", &["0"]), "false");
        assert_eq!(invoke(&ex, &id, "alloc", &["5"]), "0", "slot 0 reused");
        invoke(&ex, &id, "fill-mib", &["8"]);
        let live: u64 = invoke(&ex, &id, "live-bytes", &[]).parse().unwrap();
        assert!((8 << 20..9 << 20).contains(&live), "live bytes {live}");
        memory_bytes = invoke(&ex, &id, "memory-bytes", &[]);
        assert!(memory_bytes.parse::<u64>().unwrap() >= live);
        let before = invoke(&ex, &id, "checksum", &[]);
        let touched = invoke(&ex, &id, "touch", &["25"]);
        assert_ne!(invoke(&ex, &id, "touch", &["25"]), touched);
        checksum = invoke(&ex, &id, "checksum", &[]);
        assert_ne!(checksum, before);
        assert_ne!(invoke(&ex, &id, "now", &[]), "0");
    }
    let ex = open(dir.path());
    let id = ex.worker_id("memory", "m").unwrap();
    assert_eq!(invoke(&ex, &id, "checksum", &[]), checksum);
    assert_eq!(invoke(&ex, &id, "memory-bytes", &[]), memory_bytes);
}

#[test]
fn init_guest_initialize_runs_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("init")).unwrap();
    let started;
    {
        let ex = open(dir.path());
        ex.components().add("init", &wasm).expect("add component");
        let id = ex.worker_id("init", "i").unwrap();
        started = invoke(&ex, &id, "started-at", &[]);
        assert_ne!(started, "(0, 0)", "_initialize did not run");
        assert_eq!(invoke(&ex, &id, "add", &["2"]), "2");
    }
    let ex = open(dir.path());
    let id = ex.worker_id("init", "i").unwrap();
    assert_eq!(
        invoke(&ex, &id, "started-at", &[]),
        started,
        "_initialize's host calls are replayed"
    );
    assert_eq!(invoke(&ex, &id, "add", &["1"]), "3");
}
