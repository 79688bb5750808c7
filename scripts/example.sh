#!/usr/bin/env bash
# Runs an example workflow end to end on a fresh machine: adds the wasm target, builds the
# tasker binary and just the plugins the example's template names (installing a Python,
# JavaScript or C toolchain only when one of them is written in it), then runs it. No
# database server is needed: without DATABASE_URL the embedded store (.tasker/tasker.db) is
# used; set DATABASE_URL=postgres://... to run it on PostgreSQL instead.
#   scripts/example.sh            # order fulfilment (default; Rust handlers only)
#   scripts/example.sh pipeline   # CSV data pipeline; the report lands in examples/pipeline/out
#   scripts/example.sh polyglot   # Rust, Python, C and JavaScript steps in one DAG
#   scripts/example.sh hooks      # an audit hook, a failure notifier and a retry policy
#   scripts/example.sh http       # steps calling a local HTTP API (examples/http/api.py, python3)
# The plugins are staged in (and run from) .tasker/example-plugins, or $TASKER_STAGE_DIR.
# TASKER_BIN runs an already built tasker instead of building one (tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

started=$SECONDS
example=${1:-order}
case "$example" in
    order) template=examples/order/order.yaml args=(--context @examples/order/context.json) ;;
    pipeline) template=examples/pipeline/pipeline.yaml args=() ;;
    polyglot) template=examples/polyglot/polyglot.yaml args=(--context @examples/polyglot/context.json) ;;
    hooks) template=examples/hooks/hooks.yaml args=(--context @examples/hooks/context.json) ;;
    # The context gets the API's real URL once it listens (below).
    http) template=examples/http/http.yaml args=() ;;
    *)
        echo "unknown example '$example': use order, pipeline, polyglot, hooks or http" >&2
        exit 2 ;;
esac

ensure_wasm_target
# The dev profile: it builds in about half the time of --release, and the workspace
# optimises wasmtime and cranelift in it anyway (Cargo.toml), which is what a run spends its
# time in. `cargo test` reuses the same build.
tasker=${TASKER_BIN:-target/debug/tasker}
if [ -z "${TASKER_BIN:-}" ]; then
    if [ -x "$tasker" ]; then
        echo "==> building tasker"
    else
        echo "==> building tasker: the first build takes a few minutes"
    fi
    cargo build -p tasker-cli --bin tasker
fi
# Its own plugin directory: plugins/dist keeps the full set that scripts/build-plugins.sh
# stages (and the tests use).
export TASKER_STAGE_DIR="${TASKER_STAGE_DIR:-.tasker/example-plugins}"
export TASKER_PLUGIN_DIR="$TASKER_STAGE_DIR"
plugins=$("$tasker" templates plugins "$template")
echo "==> the $example example runs: $(echo $plugins)"
scripts/build-plugins.sh --only $plugins
if [ "$example" = http ]; then
    # The shop API on a free loopback port, for this run only: its port file, request log and
    # the context naming it live in a scratch directory that goes with the server on exit.
    command -v python3 >/dev/null || { echo "the http example needs python3 for its API server" >&2; exit 1; }
    api_dir=$(mktemp -d "${TMPDIR:-/tmp}/tasker-http-example.XXXXXX")
    api_pid=
    stop_api() {
        if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
        rm -rf "$api_dir"
    }
    trap stop_api EXIT
    trap 'exit 130' INT TERM
    # The token the API checks and the steps' secret grant reads (env:EXAMPLE_API_TOKEN).
    if [ -z "${EXAMPLE_API_TOKEN:-}" ]; then
        EXAMPLE_API_TOKEN="tok_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    fi
    export EXAMPLE_API_TOKEN
    python3 examples/http/api.py --port-file "$api_dir/port" --log "$api_dir/requests.log" &
    api_pid=$!
    for _ in $(seq 100); do
        [ -s "$api_dir/port" ] && break
        kill -0 "$api_pid" 2>/dev/null || { echo "the API server exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -s "$api_dir/port" ] || { echo "the API server did not start listening within 10 s" >&2; exit 1; }
    api="http://127.0.0.1:$(cat "$api_dir/port")"
    python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); c["api"] = sys.argv[2]; json.dump(c, open(sys.argv[3], "w"), indent=2)' \
        examples/http/context.json "$api" "$api_dir/context.json"
    args=(--context "@$api_dir/context.json")
    echo "==> the shop API (examples/http/api.py) listens on $api"
fi
if [ -n "${DATABASE_URL:-}" ]; then where=PostgreSQL; else where="the embedded store .tasker/tasker.db"; fi
# `tasker run` creates only an embedded store; a PostgreSQL database is `tasker migrate`'s.
if [ -n "${DATABASE_URL:-}" ]; then
    echo "==> tasker migrate"
    "$tasker" migrate
fi
echo "==> running $template on $where"
status=0
"$tasker" run "$template" "${args[@]}" || status=$?
case "$example" in
    pipeline)
        echo "==> report: examples/pipeline/out/report.md"
        cat examples/pipeline/out/report.md || true ;;
    hooks)
        echo "==> audit trail: examples/hooks/out/events.jsonl"
        cat examples/hooks/out/events.jsonl || true ;;
    http)
        echo "==> what the API served"
        cat "$api_dir/requests.log" || true ;;
esac
echo "==> done in $((SECONDS - started)) s"
exit "$status"
