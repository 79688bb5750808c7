#!/usr/bin/env bash
# Build every guest in plugins/ as a wasm32-wasip2 component (release): the Rust workspace,
# then the Python, JavaScript and C guests (scripts/build-polyglot.sh).
# Output: plugins/target/wasm32-wasip2/release/*.wasm — where the sandbox tests look
# (override with TASKER_PLUGIN_BUILD_DIR).
#
#   scripts/build-plugins.sh --only NAME@VERSION...
# builds just these plugins (Rust crates of plugins/, or Python/JS/C handlers, whose
# toolchains it installs first) and stages exactly them in $TASKER_STAGE_DIR (default
# plugins/dist, emptied first): what `tasker templates plugins FILE...` lists for a workflow.
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

if [ "${1:-}" = "--only" ]; then
    shift
    [ $# -gt 0 ] || { echo "build-plugins: --only needs NAME@VERSION arguments" >&2; exit 2; }
    stage_dir="${TASKER_STAGE_DIR:-$root/plugins/dist}"
    rust=() rust_refs=() poly_names=() langs=()
    for ref in "$@"; do
        case "$ref" in
            blake3:*) echo "build-plugins: $ref names a build by its hash: stage that file by hand" >&2; exit 2 ;;
            *@*) ;;
            *) echo "build-plugins: '$ref' is not NAME@VERSION" >&2; exit 2 ;;
        esac
        name="${ref%@*}" version="${ref##*@}"
        if pkgid="$(cd "$root/plugins" && cargo pkgid -p "$name" 2>/dev/null)"; then
            have="${pkgid##*[#@]}"
            [ "$have" = "$version" ] || { echo "build-plugins: $ref: plugins/ has $name at version $have" >&2; exit 2; }
            rust+=(-p "$name") rust_refs+=("$name@$version")
            continue
        fi
        found=""
        for meta in "$root"/plugins/{python,js,c}/*/plugin.json; do
            [ -f "$meta" ] || continue
            if python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if (m.get("name"), m.get("version")) == (sys.argv[2], sys.argv[3]) else 1)' "$meta" "$name" "$version"; then
                lang="$(basename "$(dirname "$(dirname "$meta")")")"
                found=yes poly_names+=("$name")
                case " ${langs[*]:-} " in *" $lang "*) ;; *) langs+=("$lang") ;; esac
            fi
        done
        [ -n "$found" ] || { echo "build-plugins: no plugin $ref in plugins/ (a Rust crate or a plugins/{python,js,c}/*/plugin.json)" >&2; exit 2; }
    done
    mkdir -p "$stage_dir"
    find "$stage_dir" -maxdepth 1 -name '*.wasm' -delete
    if [ ${#rust[@]} -gt 0 ]; then
        echo "==> building ${#rust_refs[@]} Rust plugins (${rust_refs[*]})" >&2
        (cd "$root/plugins" && cargo build --release --target "$target" "${rust[@]}")
        for ref in "${rust_refs[@]}"; do
            cp "$root/plugins/target/$target/release/${ref%@*}.wasm" "$stage_dir/$ref.wasm"
        done
    fi
    if [ ${#poly_names[@]} -gt 0 ]; then
        echo "==> installing the ${langs[*]} guest toolchains (first time: a few minutes)" >&2
        "$root/scripts/install-toolchains.sh" "${langs[@]}"
        echo "==> building ${poly_names[*]}" >&2
        TASKER_PLUGIN_LANGS="${langs[*]}" TASKER_PLUGIN_ONLY="${poly_names[*]}" TASKER_STAGE_DIR="$stage_dir" \
            "$root/scripts/build-polyglot.sh"
    fi
    echo "build-plugins: staged $# plugins in $stage_dir" >&2
    exit 0
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
