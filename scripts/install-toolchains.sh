#!/usr/bin/env bash
# Install the pinned toolchains that build Python, JavaScript and C step handlers, so that
# scripts/build-plugins.sh can build guests in all four languages. Idempotent: each part
# is skipped when what it installs is already there at the pinned version.
#
#   Python  a venv at .tasker/toolchains/py from guest-sdk/python/requirements.txt
#           (componentize-py; also wasm-tools, which the C build uses)
#   JS      guest-sdk/js/node_modules from guest-sdk/js/package-lock.json (`npm ci`):
#           componentize-js with preview2-shim pinned at top level
#   C       Debian packages clang lld wasi-libc libclang-rt-dev-wasm32 (apt-get, as root);
#           wit-bindgen-cli (cargo install --locked, pinned) into .tasker/toolchains/cargo;
#           the WASI preview1 reactor adapter written by guest-sdk/c/adapter (pinned to
#           the host's wasmtime) to .tasker/toolchains/wasi_snapshot_preview1.reactor.wasm
#
# Arguments name the languages to install for (python, js, c; default: all three), so that a
# workflow of Rust handlers installs nothing. C needs the Python venv too (for wasm-tools).
#
# Everything except the Debian packages stays inside the repository (gitignored).
# Set TASKER_TOOLCHAINS_DIR to put the toolchains elsewhere.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${TASKER_TOOLCHAINS_DIR:-$root/.tasker/toolchains}"
mkdir -p "$tools"

WIT_BINDGEN_VERSION=0.63.0
APT_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

say() { echo "install-toolchains: $*" >&2; }
die() {
    echo "install-toolchains: error: $*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not on PATH: $2"
}
# A stamp file holds the hash of what an install was made from; a match means done.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }
langs="${*:-python js c}"
for l in $langs; do
    case "$l" in python | js | c) ;; *) die "unknown language '$l' (python, js, c)" ;; esac
done
wants() { case " $langs " in *" $1 "*) return 0 ;; esac; return 1; }

if wants python || wants c; then
    # --- Python: componentize-py (+ wasm-tools) in a venv ---
    need python3 "install Python 3.10+ (Debian: apt-get install python3 python3-venv)"
    py="$tools/py"
    want="$(digest "$root/guest-sdk/python/requirements.txt")"
    if stamp_ok "$py/.tasker-stamp" "$want" && [ -x "$py/bin/componentize-py" ]; then
        say "python: up to date ($py)"
    else
        say "python: creating $py and installing guest-sdk/python/requirements.txt"
        python3 -m venv "$py" || die "cannot create a venv with python3 (Debian: apt-get install python3-venv)"
        "$py/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$root/guest-sdk/python/requirements.txt" || die "pip install failed (is PyPI reachable?)"
        echo "$want" >"$py/.tasker-stamp"
    fi
fi

if wants js; then
    # --- JavaScript: componentize-js from the lockfile ---
    need node "install Node.js 18+ and npm (Debian: apt-get install nodejs npm)"
    need npm "install npm (Debian: apt-get install npm)"
    js="$root/guest-sdk/js"
    want="$(digest "$js/package.json" "$js/package-lock.json")"
    if stamp_ok "$js/node_modules/.tasker-stamp" "$want" && [ -x "$js/node_modules/.bin/componentize-js" ]; then
        say "js: up to date ($js/node_modules)"
    else
        say "js: npm ci in guest-sdk/js"
        (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $js (is the npm registry reachable?)"
        echo "$want" >"$js/node_modules/.tasker-stamp"
    fi
fi

if wants c; then
    # --- C: clang + wasi-libc from Debian ---
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "c: Debian packages present (${APT_PACKAGES[*]})"
    else
        command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install clang, lld, wasi-libc and clang's wasm32 runtime yourself"
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || die "installing ${missing[*]} needs root: run as root or install them yourself (apt-get install ${missing[*]})"
            sudo=sudo
        fi
        say "c: apt-get install ${missing[*]}"
        $sudo apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi

    # --- C: wit-bindgen (C bindings generator), pinned ---
    need cargo "install the Rust toolchain (https://rustup.rs)"
    wb="$tools/cargo/bin/wit-bindgen"
    if [ -x "$wb" ] && "$wb" --version 2>/dev/null | grep -q " $WIT_BINDGEN_VERSION"; then
        say "c: wit-bindgen $WIT_BINDGEN_VERSION present"
    else
        say "c: cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (C generator only)"
        # --debug: generating bindings for a few WIT files is instant either way, and an
        # unoptimised build installs in about half the time.
        cargo install --locked --quiet --debug --root "$tools/cargo" --no-default-features --features c \
            "wit-bindgen-cli@$WIT_BINDGEN_VERSION" || die "cargo install wit-bindgen-cli@$WIT_BINDGEN_VERSION failed"
    fi

    # --- C: the preview1 reactor adapter (turns a wasm32-wasi module into a component) ---
    adapter="$tools/wasi_snapshot_preview1.reactor.wasm"
    want="$(digest "$root/guest-sdk/c/adapter/Cargo.toml" "$root/guest-sdk/c/adapter/Cargo.lock" "$root/guest-sdk/c/adapter/src/main.rs")"
    if stamp_ok "$adapter.stamp" "$want" && [ -s "$adapter" ]; then
        say "c: WASI adapter present"
    else
        say "c: writing the WASI preview1 reactor adapter"
        CARGO_TARGET_DIR="$tools/target" cargo run --quiet --locked --release \
            --manifest-path "$root/guest-sdk/c/adapter/Cargo.toml" -- "$adapter" \
            || die "building guest-sdk/c/adapter failed"
        echo "$want" >"$adapter.stamp"
    fi
fi

say "toolchains ready in $tools ($langs)"
