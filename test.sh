#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this).
set -euo pipefail
cd "$(dirname "$0")"
# The pinned Rust toolchain and the wasm32-wasip2 target (rust-toolchain.toml).
rustup toolchain install
# Python (componentize-py), JavaScript (componentize-js) and C (clang, wasi-libc,
# wit-bindgen) plugin toolchains, schemathesis (which checks the server
# against its OpenAPI document) and nats-server (the JetStream backend that
# cluster tests start on loopback): idempotent, quick when already installed.
guest-sdk/install-toolchains.sh
cargo test --workspace
