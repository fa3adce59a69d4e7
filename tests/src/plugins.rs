//! The components built from `plugins/` (wasm32-wasip2, release) by the
//! build script, by crate name: `enricher_orders`, `projection_totals`,
//! `command_bank`, `faulty`, `faulty_service`, `missing_export`,
//! `future_version`, `bench_enricher`, `stamp_enricher`.

use std::path::PathBuf;

/// Every plugin the build produces.
pub const PLUGINS: &[&str] = &[
    "enricher_orders",
    "projection_totals",
    "command_bank",
    "faulty",
    "faulty_service",
    "missing_export",
    "future_version",
    "bench_enricher",
    "stamp_enricher",
];

/// Directory holding the built components.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("WEIR_PLUGIN_DIR"))
}

/// Path of the component built from the plugin crate `name`.
pub fn plugin_path(name: &str) -> PathBuf {
    plugin_dir().join(format!("{name}.wasm"))
}

/// The component's bytes. Panics with the path when it is missing (a test
/// helper: the build script guarantees the known plugins exist).
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read plugin {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_was_built_as_a_component() {
        for name in PLUGINS {
            let bytes = plugin_bytes(name);
            // Component binaries: "\0asm" + version 0x0d, layer 1.
            assert_eq!(
                &bytes[..8],
                b"\0asm\x0d\x00\x01\x00",
                "{name} is not a component"
            );
        }
    }
}
