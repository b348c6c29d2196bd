//! Component binaries, as Golem users build them (cargo-component, Rust's `wasm32-wasip2`
//! target, wit-component with the preview 1 adapter): golemw runs the component's *main module*
//! itself, with its own host functions standing in for everything the component wires around
//! it.
//!
//! A component made by wit-component holds a main module (the guest's code, with the canonical
//! ABI's exports and imports named by interface), optionally the `wasi_snapshot_preview1`
//! adapter (a module that implements preview 1 on WASI 0.2 for the main module), and small
//! shim and fixup modules that tie the adapter's imports to the main module's table. golemw
//! provides preview 1 directly, and the main module's interface imports by name, so it needs
//! only the main module and the component's WIT world: [`unwrap`] returns the main module with
//! that world embedded as a `component-type` section, the form a core-module guest already has.
//!
//! What cannot run that way is refused with the reason: more than one main module (a composed
//! component, e.g. a caller with a generated RPC stub), nested components, strings other than
//! UTF-8.

use wasmparser::{CanonicalFunction, CanonicalOption, Parser, Payload};

use crate::error::{Error, Result};

/// Whether `bytes` are a component binary (rather than a core module).
pub fn is_component(bytes: &[u8]) -> bool {
    Parser::is_component(bytes)
}

/// A core module of a component, as [`unwrap`] sorts them.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    /// Guest code: the modules golemw would have to run.
    Main,
    /// The preview 1 adapter: golemw provides preview 1 itself.
    Adapter,
    /// wit-component's glue (shim, fixups): nothing runs in it.
    Glue,
}

/// The main module of a component binary, with the component's WIT world embedded as a
/// `component-type` custom section.
pub fn unwrap(bytes: &[u8]) -> Result<Vec<u8>> {
    let refuse = |reason: String| Error::InvalidComponent(reason);
    let decoded = wit_component::decode(bytes)
        .map_err(|e| refuse(format!("its component type does not decode: {e:#}")))?;
    let (resolve, world) = match decoded {
        wit_component::DecodedWasm::Component(resolve, world) => (resolve, world),
        wit_component::DecodedWasm::WitPackage(..) => {
            return Err(refuse(
                "it is a WIT package (types only), not a component with code".into(),
            ))
        }
    };
    let mut modules = Vec::new();
    // Depth inside nested modules and components: only the outermost component's own
    // sections are looked at, and whether a nested component is open (wit-component nests
    // small components without code to export interfaces with their types; one with a module
    // of its own is a composition).
    let mut depth = 0usize;
    let mut in_component = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| refuse(format!("not a valid component: {e}")))?;
        match payload {
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                if in_component > 0 {
                    return Err(refuse(
                        "it nests a component with code of its own (a composition); golemw runs \
                         components with one main module"
                            .into(),
                    ));
                }
                if depth == 0 {
                    let module =
                        &bytes[unchecked_range.start as usize..unchecked_range.end as usize];
                    modules.push((role_of(module)?, module.to_vec()));
                }
                depth += 1;
            }
            Payload::ComponentSection { .. } => {
                depth += 1;
                in_component += 1;
            }
            Payload::End(_) => {
                depth = depth.saturating_sub(1);
                // The end of a nested component (a module's end was counted by `depth` alone).
                if in_component > depth {
                    in_component = depth;
                }
            }
            Payload::ComponentCanonicalSection(reader) if depth == 0 => {
                for function in reader {
                    let function =
                        function.map_err(|e| refuse(format!("not a valid component: {e}")))?;
                    let options = match &function {
                        CanonicalFunction::Lift { options, .. }
                        | CanonicalFunction::Lower { options, .. } => options,
                        _ => continue,
                    };
                    if options.iter().any(|o| {
                        matches!(o, CanonicalOption::UTF16 | CanonicalOption::CompactUTF16)
                    }) {
                        return Err(refuse(
                            "it passes strings as UTF-16; golemw supports UTF-8 strings".into(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let mut mains: Vec<Vec<u8>> = modules
        .into_iter()
        .filter(|(role, _)| *role == Role::Main)
        .map(|(_, module)| module)
        .collect();
    let mut main = match mains.len() {
        1 => mains.remove(0),
        0 => return Err(refuse("it has no module with code of its own".into())),
        n => {
            return Err(refuse(format!(
                "it has {n} main modules (a composed component); golemw runs components with one"
            )))
        }
    };
    wit_component::embed_component_metadata(
        &mut main,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .map_err(|e| refuse(format!("its WIT world could not be embedded: {e:#}")))?;
    Ok(main)
}

/// Sorts a core module of a component by what it imports and exports: the adapter reaches
/// into the main module (`__main_module__`) and exports preview 1; a main module defines the
/// memory the canonical ABI uses and exports it; wit-component's shim and fixup modules have
/// none (they only fill and call through a table).
fn role_of(module: &[u8]) -> Result<Role> {
    let invalid = |e: wasmparser::BinaryReaderError| {
        Error::InvalidComponent(format!("a module inside it is not valid: {e}"))
    };
    let mut imports_main_module = false;
    let mut exports_preview1 = false;
    let mut exports_memory = false;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    imports_main_module |= import.module == "__main_module__";
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    exports_preview1 |= export.name == "fd_write" || export.name == "proc_exit";
                    exports_memory |= export.kind == wasmparser::ExternalKind::Memory;
                }
            }
            _ => {}
        }
    }
    Ok(if imports_main_module || exports_preview1 {
        Role::Adapter
    } else if exports_memory {
        Role::Main
    } else {
        Role::Glue
    })
}
