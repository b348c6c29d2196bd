#!/usr/bin/env bash
# Builds the example counter guest from source and runs it as a durable worker with golemw.
# Run it twice: the second run continues from the first run's state.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
cargo build --quiet --release --target wasm32-wasip1 \
    --manifest-path tests/guests/Cargo.toml --target-dir target/guests -p counter
# The dev profile optimises dependencies (wasmer, cranelift) and shares its build with `cargo test`.
cargo build --quiet -p golemw
wasm=target/guests/wasm32-wasip1/release/counter.wasm
golemw=target/debug/golemw
data_dir="${GOLEMW_DATA_DIR:-target/example-data}"
"$golemw" --data-dir "$data_dir" run "$wasm" 'golemw:counter/api.{print}' '"hello from a durable worker"'
echo "counter after adding 5: $("$golemw" --data-dir "$data_dir" run "$wasm" add 5)"
"$golemw" --data-dir "$data_dir" worker get counter/main
