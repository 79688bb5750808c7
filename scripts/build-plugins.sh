#!/usr/bin/env bash
# Build every guest in plugins/ as a wasm32-wasip2 component (release): the Rust workspace,
# then the Python, JavaScript and C guests (scripts/build-polyglot.sh).
# Output: plugins/target/wasm32-wasip2/release/*.wasm — where the sandbox tests look
# (override with TASKER_PLUGIN_BUILD_DIR).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wasm32-wasip2

command -v cargo >/dev/null 2>&1 || {
    echo "build-plugins: cargo is not on PATH; install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
}

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "build-plugins: adding the $target target" >&2
        rustup target add "$target" || {
            echo "build-plugins: could not add the $target target (rustup target add $target)" >&2
            exit 1
        }
    fi
else
    # Without rustup we cannot add the target; check that the sysroot has it.
    sysroot="$(rustc --print sysroot)"
    if [ ! -d "$sysroot/lib/rustlib/$target" ]; then
        echo "build-plugins: the $target target is missing from $sysroot and rustup is not available to add it" >&2
        exit 1
    fi
fi

cd "$root/plugins"
cargo build --release --target "$target" "$@"

out="$root/plugins/target/$target/release"
count=$(find "$out" -maxdepth 1 -name '*.wasm' | wc -l)
echo "build-plugins: $count components in $out" >&2

# Stage each component as <name>@<version>.wasm: the registry reads name@version from the
# file name, and the version is the crate's. Well-behaved plugins go to plugins/dist (the
# default plugin directory); the hostile test set to plugins/dist-hostile.
for d in dist dist-hostile; do
    mkdir -p "$root/plugins/$d"
    find "$root/plugins/$d" -maxdepth 1 -name '*.wasm' -delete
done
for wasm in "$out"/*.wasm; do
    name="$(basename "$wasm" .wasm)"
    pkgid="$(cd "$root/plugins" && cargo pkgid -p "$name" 2>/dev/null)" || continue
    version="${pkgid##*[#@]}"
    case "$name" in
        hostile_*) dest="$root/plugins/dist-hostile" ;;
        *) dest="$root/plugins/dist" ;;
    esac
    cp "$wasm" "$dest/$name@$version.wasm"
done
echo "build-plugins: staged Rust components in plugins/dist and plugins/dist-hostile" >&2

# Python, JavaScript and C guests (toolchains from scripts/install-toolchains.sh). All four
# languages are built by default and a missing toolchain is an error, so CI cannot skip
# one silently; a developer may narrow it explicitly, e.g. TASKER_PLUGIN_LANGS="python c".
"$root/scripts/build-polyglot.sh"
