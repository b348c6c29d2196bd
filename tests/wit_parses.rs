//! The WIT packages under `wit/` parse and match the host API spec, and the test guests build
//! into core modules that carry their WIT world.

use golemw_tests::{guest_wasm, repo_root};
use wit_parser::{InterfaceId, PackageId, Resolve, WorldItem};

fn load_wit() -> Resolve {
    let mut resolve = Resolve::new();
    let dir = repo_root().join("wit");
    resolve
        .push_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e:?}", dir.display()));
    resolve
}

fn package(resolve: &Resolve, name: &str) -> PackageId {
    resolve
        .packages
        .iter()
        .find(|(_, p)| p.name.to_string() == name)
        .map(|(id, _)| id)
        .unwrap_or_else(|| {
            let names: Vec<String> = resolve
                .packages
                .iter()
                .map(|(_, p)| p.name.to_string())
                .collect();
            panic!("package {name} not found; packages: {names:?}")
        })
}

fn interface(resolve: &Resolve, pkg: PackageId, name: &str) -> InterfaceId {
    *resolve.packages[pkg]
        .interfaces
        .get(name)
        .unwrap_or_else(|| {
            panic!(
                "interface {name} missing from {}",
                resolve.packages[pkg].name
            )
        })
}

/// Checks that `iface` has function `name` with `params` params and a result or none.
fn check_function(resolve: &Resolve, iface: InterfaceId, name: &str, params: usize, result: bool) {
    let i = &resolve.interfaces[iface];
    let f = i.functions.get(name).unwrap_or_else(|| {
        panic!(
            "function {name} missing from interface {:?}",
            i.name.as_deref()
        )
    });
    assert_eq!(f.params.len(), params, "param count of {name}");
    assert_eq!(f.result.is_some(), result, "whether {name} has a result");
}

fn check_types(resolve: &Resolve, iface: InterfaceId, names: &[&str]) {
    let i = &resolve.interfaces[iface];
    for name in names {
        assert!(
            i.types.contains_key(*name),
            "type {name} missing from interface {:?}",
            i.name.as_deref()
        );
    }
}

#[test]
fn wit_packages_match_the_spec() {
    let resolve = load_wit();

    let api = package(&resolve, "golem:api@0.2.0");
    let host = interface(&resolve, api, "host");
    let save = interface(&resolve, api, "save-snapshot");
    let load = interface(&resolve, api, "load-snapshot");

    // (name, param count, has a result)
    let host_functions: &[(&str, usize, bool)] = &[
        ("create-promise", 0, true),
        ("await-promise", 1, true),
        ("complete-promise", 2, true),
        ("delete-promise", 1, false),
        ("get-self-uri", 1, true),
        ("get-oplog-index", 0, true),
        ("set-oplog-index", 1, false),
        ("oplog-commit", 1, false),
        ("mark-begin-operation", 0, true),
        ("mark-end-operation", 1, false),
        ("get-retry-policy", 0, true),
        ("set-retry-policy", 1, false),
        ("get-oplog-persistence-level", 0, true),
        ("set-oplog-persistence-level", 1, false),
        ("get-idempotence-mode", 0, true),
        ("set-idempotence-mode", 1, false),
        ("generate-idempotency-key", 0, true),
        ("update-worker", 3, false),
        ("get-self-metadata", 0, true),
        ("get-worker-metadata", 1, true),
        // The resource: the constructor's params, then `self` for the method.
        ("[constructor]get-workers", 3, true),
        ("[method]get-workers.get-next", 1, true),
    ];
    for &(name, params, result) in host_functions {
        check_function(&resolve, host, name, params, result);
    }
    assert_eq!(
        resolve.interfaces[host].functions.len(),
        host_functions.len(),
        "host has exactly the functions of the spec"
    );
    check_types(
        &resolve,
        host,
        &[
            "oplog-index",
            "component-version",
            "uuid",
            "component-id",
            "worker-id",
            "promise-id",
            "retry-policy",
            "persistence-level",
            "update-mode",
            "filter-comparator",
            "string-filter-comparator",
            "worker-status",
            "worker-name-filter",
            "worker-status-filter",
            "worker-version-filter",
            "worker-created-at-filter",
            "worker-env-filter",
            "worker-property-filter",
            "worker-all-filter",
            "worker-any-filter",
            "worker-metadata",
            "get-workers",
            // used from other packages
            "uri",
            "duration",
        ],
    );
    check_function(&resolve, save, "save", 0, true);
    check_function(&resolve, load, "load", 1, true);

    let world = *resolve.packages[api]
        .worlds
        .get("golem-host")
        .expect("world golem-host in golem:api");
    let imports: Vec<InterfaceId> = resolve.worlds[world]
        .imports
        .values()
        .filter_map(|item| match item {
            WorldItem::Interface { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    for id in [host, save, load] {
        assert!(
            imports.contains(&id),
            "golem-host imports {:?}",
            resolve.interfaces[id].name
        );
    }

    let rpc = package(&resolve, "golem:rpc@0.1.0");
    let types = interface(&resolve, rpc, "types");
    check_types(
        &resolve,
        types,
        &[
            "node-index",
            "wit-value",
            "wit-node",
            "uri",
            "rpc-error",
            "wasm-rpc",
            "future-invoke-result",
            "pollable",
        ],
    );
    check_function(&resolve, types, "[constructor]wasm-rpc", 1, true);
    check_function(
        &resolve,
        types,
        "[method]wasm-rpc.invoke-and-await",
        3,
        true,
    );
    check_function(&resolve, types, "[method]wasm-rpc.invoke", 3, true);
    check_function(
        &resolve,
        types,
        "[method]wasm-rpc.async-invoke-and-await",
        3,
        true,
    );
    check_function(
        &resolve,
        types,
        "[method]future-invoke-result.subscribe",
        1,
        true,
    );
    check_function(&resolve, types, "[method]future-invoke-result.get", 1, true);

    let clocks = package(&resolve, "wasi:clocks@0.2.0");
    let monotonic = interface(&resolve, clocks, "monotonic-clock");
    check_types(&resolve, monotonic, &["duration", "instant", "pollable"]);
    let io = package(&resolve, "wasi:io@0.2.0");
    let poll = interface(&resolve, io, "poll");
    check_types(&resolve, poll, &["pollable"]);
}

#[test]
fn guests_build_with_their_wit_world() {
    for (name, package) in [
        ("counter", "golemw:counter/api"),
        ("clocks", "golemw:clocks/api"),
        ("types", "golemw:types/api"),
        ("diverge-v1", "golemw:diverge/api"),
        ("diverge-v2", "golemw:diverge/api"),
    ] {
        let path = guest_wasm(name);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        wasmparser::Validator::new()
            .validate_all(&bytes)
            .unwrap_or_else(|e| panic!("{} is not a valid module: {e}", path.display()));

        let mut component_type = false;
        let mut exports = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            match payload.expect("parse guest module") {
                wasmparser::Payload::CustomSection(section) => {
                    component_type |= section.name().starts_with("component-type");
                }
                wasmparser::Payload::ExportSection(section) => {
                    for export in section {
                        exports.push(export.expect("read export").name.to_string());
                    }
                }
                _ => {}
            }
        }
        assert!(
            component_type,
            "{name}: no component-type custom section in {}",
            path.display()
        );
        for required in ["memory", "cabi_realloc"] {
            assert!(
                exports.iter().any(|e| e == required),
                "{name} exports {required}; exports: {exports:?}"
            );
        }
        let prefix = format!("{package}#");
        assert!(
            exports.iter().any(|e| e.starts_with(&prefix)),
            "{name} exports functions of {package}; exports: {exports:?}"
        );
    }
}
