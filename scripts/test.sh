#!/usr/bin/env bash
# The whole test suite on a fresh machine: adds the wasm target, starts PostgreSQL, builds the
# plugins, then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_wasm_target
ensure_postgres
default_database_url
scripts/build-plugins.sh

echo "==> cargo test"
# Traps capture native backtraces when this is set; tests do not need them.
unset RUST_BACKTRACE
cargo test --workspace "$@"
