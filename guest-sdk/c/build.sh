#!/usr/bin/env bash
# Builds one C weir plugin into a component.
# Usage: guest-sdk/c/build.sh <plugin-dir> <world> <out.wasm>
#
# Generates the world's bindings with `wit-bindgen c`, compiles the plugin's
# *.c files with the SDK using clang-19 for wasm32-wasi (Debian's wasi-libc),
# and links a component with the Rust toolchain's wasm-component-ld (which
# runs wasm-ld-19 and applies the WASI preview1 -> preview2 reactor adapter).
# clang-19 rejects -mexec-model=reactor, so crt1-reactor.o is linked by hand.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
plugin_dir="$(cd "${1:?plugin dir}" && pwd)"
world="${2:?world}"
out="${3:?output}"

case "$world" in
enricher) define=WEIR_WORLD_ENRICHER ;;
projection) define=WEIR_WORLD_PROJECTION ;;
command-handler) define=WEIR_WORLD_COMMAND_HANDLER ;;
*) echo "build.sh: unknown world '$world' (enricher, projection or command-handler)" >&2; exit 2 ;;
esac

sysroot_lib=/usr/lib/wasm32-wasi
component_ld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"
builtins="$(ls /usr/lib/llvm-19/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a 2>/dev/null | head -1)"
[ -x "$component_ld" ] || { echo "build.sh: wasm-component-ld not found at $component_ld" >&2; exit 3; }
[ -n "$builtins" ] || { echo "build.sh: libclang_rt.builtins-wasm32.a not found (apt install libclang-rt-19-dev-wasm32)" >&2; exit 3; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wit-bindgen c "$root/wit" --world "$world" --out-dir "$work" >"$work/bindgen.log" 2>&1 || { cat "$work/bindgen.log" >&2; exit 1; }

cflags=(--target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -Wno-unused-parameter -I"$work" -I"$here" -D"$define")
objs=()
for src in "$work"/*.c "$here"/weir.c "$here"/weir_json.c "$plugin_dir"/*.c; do
    obj="$work/$(basename "$src" .c)-$(echo "$src" | sha256sum | cut -c1-8).o"
    clang-19 "${cflags[@]}" -c "$src" -o "$obj"
    objs+=("$obj")
done

"$component_ld" --wasm-ld-path "$(command -v wasm-ld-19)" --wasi-adapter reactor \
    -o "$out" "$sysroot_lib/crt1-reactor.o" "${objs[@]}" "$work"/*_component_type.o \
    -L"$sysroot_lib" -lc "$builtins" --no-entry --export=_initialize --export=cabi_realloc \
    -z stack-size=1048576
