#!/usr/bin/env bash
# Builds the example plugins written in Python, JavaScript and C into
# components: OUT_DIR/<lang>-<plugin>.wasm (e.g. python-enricher-orders.wasm).
#
# Usage: guest-sdk/build-plugins.sh OUT_DIR [python|js|c ...]
#
# Incremental: a plugin is rebuilt only when its sources, its language's SDK,
# the WIT or this script changed (a sha256 stamp sits beside each output).
# Concurrent callers serialise on OUT_DIR/.lock, so one test run builds each
# component once. Exits non-zero naming the missing toolchain when one is
# not installed (run guest-sdk/install-toolchains.sh).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:?usage: build-plugins.sh OUT_DIR [python|js|c ...]}"
shift
langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=(python js c)
mkdir -p "$out"
out="$(cd "$out" && pwd)"

exec 9>"$out/.lock"
flock 9

log() { printf 'build-plugins: %s\n' "$*" >&2; }

# plugin dir name -> WIT world
world_of() {
    case "$1" in
    enricher-*) echo enricher ;;
    projection-*) echo projection ;;
    command-*) echo command-handler ;;
    *) log "cannot tell the world of plugin '$1' (name it enricher-*, projection-* or command-*)"; return 1 ;;
    esac
}

# Hash of every input of a build: the plugin's files, the SDK, the WIT, this script.
stamp_of() {
    local plugin_dir="$1" sdk_dir="$2"
    {
        find "$plugin_dir" "$sdk_dir" "$root/wit" -type f \
            -not -path '*/node_modules/*' -not -path '*/__pycache__/*' -not -name '*.wasm' -print0 |
            sort -z | xargs -0 sha256sum
        sha256sum "$0"
    } | sha256sum | cut -d' ' -f1
}

up_to_date() {
    local target="$1" stamp="$2"
    [ -f "$target" ] && [ -f "$target.stamp" ] && [ "$(cat "$target.stamp")" = "$stamp" ]
}

need() {
    command -v "$1" >/dev/null 2>&1 || {
        log "toolchain missing: '$1' not found (run guest-sdk/install-toolchains.sh $2)"
        exit 3
    }
}

# One plugin, per language: build_one_<lang> DIR WORLD OUTPUT.
# componentize-py from PATH, else from the scripts folder of python3's
# installation (pip puts it there; a pyenv shim may not be rehashed yet).
componentize_py() {
    if command -v componentize-py >/dev/null 2>&1; then
        componentize-py "$@"
    else
        "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py" "$@"
    fi
}

build_one_python() {
    (cd "$1" && componentize_py -d "$root/wit" -w "$2" componentize \
        -p "$here/python" -p "$1" app -o "$3" >/dev/null)
}

build_one_js() {
    node "$here/js/build.mjs" "$1/index.js" "$root/wit" "$2" "$3"
}

build_one_c() {
    "$here/c/build.sh" "$1" "$2" "$3"
}

# Every plugin under plugins/<lang>/ that is not up to date.
build_all() {
    local lang="$1" dir name world target stamp
    for dir in "$root/plugins/$lang"/*/; do
        name="$(basename "$dir")"
        world="$(world_of "$name")"
        target="$out/$lang-$name.wasm"
        stamp="$(stamp_of "$dir" "$here/$lang")"
        up_to_date "$target" "$stamp" && continue
        log "$lang: $name (world $world)"
        "build_one_$lang" "${dir%/}" "$world" "$target.tmp"
        mv "$target.tmp" "$target"
        echo "$stamp" >"$target.stamp"
    done
}

check_toolchain() {
    case "$1" in
    python)
        command -v componentize-py >/dev/null 2>&1 ||
            [ -x "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/componentize-py" ] || {
            log "toolchain missing: componentize-py not found (run guest-sdk/install-toolchains.sh python)"
            exit 3
        }
        ;;
    js)
        need node js
        [ -d "$here/js/node_modules/@bytecodealliance/componentize-js" ] || {
            log "toolchain missing: componentize-js not in guest-sdk/js/node_modules (run guest-sdk/install-toolchains.sh js)"
            exit 3
        }
        ;;
    c)
        need clang-19 c
        need wasm-ld-19 c
        need wit-bindgen c
        ;;
    *) log "unknown language '$1' (expected python, js or c)"; exit 2 ;;
    esac
}

for lang in "${langs[@]}"; do
    check_toolchain "$lang"
    build_all "$lang"
done
