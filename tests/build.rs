//! Builds the plugins workspace (`plugins/Cargo.toml`) for wasm32-wasip2,
//! once per test run, into `<root>/target/plugins`, and tells the library
//! where the components are.
//!
//! The inner cargo gets a clean environment: the outer build's CARGO_* /
//! RUSTFLAGS settings (target dir, target triple, profile, instrumentation
//! flags) would otherwise leak into the wasm build.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Outer-build variables the inner cargo may keep: where the registry is,
/// network settings, and the jobserver (so the nested build shares the
/// outer build's job slots instead of adding its own).
fn keep(var: &str) -> bool {
    matches!(var, "CARGO_HOME" | "CARGO_MAKEFLAGS")
        || var.starts_with("CARGO_NET_")
        || var.starts_with("CARGO_HTTP_")
        || var.starts_with("CARGO_REGISTRIES_")
        || var.starts_with("CARGO_REGISTRY_")
}

fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (var, _) in env::vars_os() {
        let Some(var) = var.to_str() else { continue };
        let leaks = (var.starts_with("CARGO_") && !keep(var))
            || matches!(
                var,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
            );
        if leaks {
            cmd.env_remove(var);
        }
    }
    cmd
}

fn target_installed(cargo_dir: &Path) -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .current_dir(cargo_dir)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            std::fs::read_dir(Path::new(&dir))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
                })
                .unwrap_or(false)
        }
        _ => false,
    }
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives inside the workspace root")
        .to_path_buf();
    let plugins_manifest = root.join("plugins").join("Cargo.toml");
    let target_dir = root.join("target").join("plugins");
    for watched in ["plugins", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    if !target_installed(&root) {
        let added = clean_command("rustup")
            .current_dir(&root)
            .args(["target", "add", TARGET])
            .status();
        if !matches!(added, Ok(s) if s.success()) || !target_installed(&root) {
            panic!("the {TARGET} target is missing: run `rustup target add {TARGET}`");
        }
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = clean_command(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&plugins_manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("cannot run cargo to build the plugins");
    if !output.status.success() {
        panic!(
            "building the plugins failed:\n  cargo build --release --target {TARGET} --manifest-path {}\n{}",
            plugins_manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let out_dir = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=WEIR_PLUGIN_DIR={}", out_dir.display());
}
