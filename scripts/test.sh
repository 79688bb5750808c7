#!/usr/bin/env bash
# The whole test suite on a fresh machine: adds the wasm target, starts PostgreSQL, installs
# Debian's Prometheus, Chromium and chromedriver (the metrics and browser tests) and the
# pinned Python/JS/C guest toolchains, builds the plugins in all four languages, then runs
# every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

started=$SECONDS
ensure_wasm_target
ensure_postgres
default_database_url
ensure_debian_packages prometheus:prometheus promtool:prometheus chromium:chromium chromedriver:chromium-driver
echo "==> installing the Python, JavaScript and C guest toolchains (first time: a few minutes)"
scripts/install-toolchains.sh
echo "==> building every plugin in four languages"
scripts/build-plugins.sh

echo "==> building the tasker binary the end-to-end suites run"
cargo build -p tasker-cli --bin tasker
echo "==> cargo test (first build of the workspace: several minutes)"
# Traps capture native backtraces when this is set; tests do not need them.
unset RUST_BACKTRACE
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
rm -rf target/test-reports
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# Figures that long tests checked (e.g. the chaos test).
for f in target/test-reports/*.txt; do
    [ -f "$f" ] && { cat "$f"; echo; }
done
echo "==> done in $((SECONDS - started)) s"
# One closing line for the whole run (cargo prints one summary per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
