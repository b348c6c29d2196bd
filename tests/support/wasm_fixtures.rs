//! Hand-built core modules for the instance-snapshot tests: workers whose state is somewhere a
//! wit-bindgen guest never keeps it.
//!
//! Both modules implement the WIT world [`GLOBALS_WIT`] (`golemw:globals/globals`, exporting
//! `golemw:globals/api` with `incr: func() -> u64` and `get: func() -> u64`), carry it in a
//! `component-type:golemw:globals` custom section, import nothing and export `memory` (one
//! page), `cabi_realloc` and the two functions as `golemw:globals/api#incr` and
//! `golemw:globals/api#get`.

use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, CustomSection, ExportKind, ExportSection, Function,
    FunctionSection, GlobalSection, GlobalType, HeapType, Module, RefType, TableSection, TableType,
    TypeSection, ValType,
};
use wit_parser::Resolve;

/// The WIT world the fixtures implement.
pub const GLOBALS_WIT: &str = "package golemw:globals;

interface api {
    incr: func() -> u64;
    get: func() -> u64;
}

world globals {
    export api;
}
";

/// The core export names of the two functions.
pub const GLOBALS_INCR: &str = "golemw:globals/api#incr";
/// See [`GLOBALS_INCR`].
pub const GLOBALS_GET: &str = "golemw:globals/api#get";

/// The name of the fixtures' `component-type` custom section.
pub const GLOBALS_COMPONENT_TYPE: &str = "component-type:golemw:globals";

/// A worker whose whole state is a mutable `i64` global that is not exported: `incr` adds 1 to
/// it and returns the new value, `get` returns it. Linear memory stays all zeros (no function
/// has parameters or results in memory, so `cabi_realloc` is never called), so a snapshot
/// that restored memory but not the globals would bring the counter back as 0.
pub fn module_with_global_state() -> Vec<u8> {
    globals_module(false)
}

/// Like [`module_with_global_state`], but `incr` also runs `table.grow` on a (not exported)
/// `funcref` table, growing it by one null entry per call. Table contents are instance state
/// that a snapshot of memory and globals does not capture, so a runtime must refuse to
/// snapshot this module (it can still run it and replay it).
pub fn module_with_table_mutation() -> Vec<u8> {
    globals_module(true)
}

/// The `component-type` custom section payload for [`GLOBALS_WIT`].
pub fn globals_component_type() -> Vec<u8> {
    let mut resolve = Resolve::new();
    let package = resolve
        .push_str("globals.wit", GLOBALS_WIT)
        .expect("GLOBALS_WIT parses");
    let world = resolve
        .select_world(&[package], Some("globals"))
        .expect("world globals");
    wit_component::metadata::encode(
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        None,
        false,
    )
    .expect("encode the component-type section")
}

fn globals_module(grow_table: bool) -> Vec<u8> {
    // Function indices (no imports): 0 cabi_realloc, 1 incr, 2 get.
    // Global indices: 0 the counter, 1 cabi_realloc's bump pointer.
    const COUNTER: u32 = 0;
    const BUMP: u32 = 1;

    let mut module = Module::new();

    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // 0: cabi_realloc
    types.ty().function([], [ValType::I64]); // 1: incr, get
    module.section(&types);

    let mut functions = FunctionSection::new();
    functions.function(0);
    functions.function(1);
    functions.function(1);
    module.section(&functions);

    if grow_table {
        let mut tables = TableSection::new();
        tables.table(TableType {
            element_type: RefType::FUNCREF,
            table64: false,
            minimum: 1,
            maximum: None,
            shared: false,
        });
        module.section(&tables);
    }

    module.section(&crate::fixtures::one_page_memory());

    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I64,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i64_const(0),
    );
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(1024),
    );
    module.section(&globals);

    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("cabi_realloc", ExportKind::Func, 0);
    exports.export(GLOBALS_INCR, ExportKind::Func, 1);
    exports.export(GLOBALS_GET, ExportKind::Func, 2);
    module.section(&exports);

    let mut code = CodeSection::new();

    // cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: a bump allocator that never
    // frees and never grows memory. new_size 0 gives `align` (a non-null dangling pointer).
    let mut realloc = Function::new([(1, ValType::I32)]); // local 4: the new pointer
    realloc
        .instructions()
        .local_get(3)
        .i32_eqz()
        .if_(BlockType::Empty)
        .local_get(2)
        .return_()
        .end()
        // ptr = (bump + align - 1) & -align
        .global_get(BUMP)
        .local_get(2)
        .i32_add()
        .i32_const(1)
        .i32_sub()
        .i32_const(0)
        .local_get(2)
        .i32_sub()
        .i32_and()
        .local_tee(4)
        // bump = ptr + new_size
        .local_get(3)
        .i32_add()
        .global_set(BUMP)
        // copy the old contents (old_size bytes; 0 for a fresh allocation)
        .local_get(4)
        .local_get(0)
        .local_get(1)
        .memory_copy(0, 0)
        .local_get(4)
        .end();
    code.function(&realloc);

    let mut incr = Function::new([]);
    {
        let mut body = incr.instructions();
        if grow_table {
            // table.grow 0 (ref.null func, 1): returns the old size, or -1.
            body.ref_null(HeapType::FUNC)
                .i32_const(1)
                .table_grow(0)
                .drop();
        }
        body.global_get(COUNTER)
            .i64_const(1)
            .i64_add()
            .global_set(COUNTER)
            .global_get(COUNTER)
            .end();
    }
    code.function(&incr);

    let mut get = Function::new([]);
    get.instructions().global_get(COUNTER).end();
    code.function(&get);

    module.section(&code);

    module.section(&CustomSection {
        name: GLOBALS_COMPONENT_TYPE.into(),
        data: globals_component_type().into(),
    });
    module.finish()
}
