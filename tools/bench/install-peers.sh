#!/bin/sh
# Installs what the benchmark's comparison with Wasmer's journal (figure 10) runs against:
# wasmer-cli, the same Wasmer release golemw embeds, built from crates.io (about 45 minutes on
# 2 cores), into <target>/peers/bin/wasmer; and Binaryen's wasm-opt (Wasmer's journal
# snapshots need an asyncified guest). `cargo run --release -p golemw-bench` finds both;
# without them that figure reports "not measured" and the others run as usual.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cargo install wasmer-cli --version 7.4.2 --features cranelift --locked \
    --root "$target/peers" --target-dir "$target/peers-build"
if ! command -v wasm-opt >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get install -y binaryen
    else
        echo "install Binaryen (wasm-opt) with your package manager" >&2
        exit 1
    fi
fi
"$target/peers/bin/wasmer" --version
wasm-opt --version
