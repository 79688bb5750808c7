#!/usr/bin/env bash
# Runs an example workflow end to end on a fresh machine: adds the wasm target, builds the
# plugins and the tasker binary, then runs the example. No database server is needed: without
# DATABASE_URL the embedded store (.tasker/tasker.db) is used; set DATABASE_URL=postgres://...
# to run it on PostgreSQL instead.
#   scripts/example.sh            # order fulfilment (default)
#   scripts/example.sh pipeline   # CSV data pipeline; the report lands in examples/pipeline/out
#   scripts/example.sh polyglot   # Rust, Python, C and JavaScript steps in one DAG
#   scripts/example.sh hooks      # an audit hook, a failure notifier and a retry policy
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

example=${1:-order}
ensure_wasm_target
scripts/install-toolchains.sh
scripts/build-plugins.sh
echo "==> building tasker"
cargo build --release -p tasker-cli --bin tasker

tasker=target/release/tasker
case "$example" in
    order)
        exec "$tasker" run examples/order/order.yaml --context @examples/order/context.json ;;
    pipeline)
        "$tasker" run examples/pipeline/pipeline.yaml
        echo "==> report: examples/pipeline/out/report.md"
        cat examples/pipeline/out/report.md ;;
    polyglot)
        exec "$tasker" run examples/polyglot/polyglot.yaml --context @examples/polyglot/context.json ;;
    hooks)
        "$tasker" run examples/hooks/hooks.yaml --context @examples/hooks/context.json
        echo "==> audit trail: examples/hooks/out/events.jsonl"
        cat examples/hooks/out/events.jsonl ;;
    *)
        echo "unknown example '$example': use order, pipeline, polyglot or hooks" >&2
        exit 2 ;;
esac
