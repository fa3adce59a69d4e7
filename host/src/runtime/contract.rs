//! Checks that a component implements the expected world of the
//! `weir:plugin` contract at a compatible version, before it is accepted.
//!
//! A world is recognised by the interface it exports
//! (`weir:plugin/river@X.Y.Z` for enrichers, `pond` for projections,
//! `service` for command handlers). Versions follow semver with the 0.x
//! rule: for 0.x the minor number is the breaking one (0.1.0 and 0.1.7 are
//! compatible, 0.1 and 0.2 are not). Imports from `weir:plugin` must be ones
//! the world offers. Function signatures are checked when the plugin is
//! first instantiated (see `Runtime::load`).

use super::PluginKind;
use super::errors::LoadError;
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex};

/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";
const PACKAGE: &str = "weir:plugin/";

/// The resolved exports of a checked component.
#[derive(Debug, Clone)]
pub(crate) struct ExportIndices {
    /// The exact exported interface name, e.g. `weir:plugin/river@0.1.0`.
    pub export_name: String,
    funcs: Vec<(&'static str, ComponentExportIndex)>,
}

impl ExportIndices {
    pub(crate) fn func(&self, name: &str) -> Option<&ComponentExportIndex> {
        self.funcs.iter().find(|(n, _)| *n == name).map(|(_, i)| i)
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
}

fn parse_version(text: &str) -> Option<Version> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = Version {
        major: parts.next()??,
        minor: parts.next()??,
        patch: parts.next()??,
    };
    parts.next().is_none().then_some(v)
}

fn compatible(host: Version, plugin: Version) -> bool {
    host.major == plugin.major && (host.major != 0 || host.minor == plugin.minor)
}

fn host_version() -> Version {
    parse_version(CONTRACT_VERSION).unwrap_or(Version {
        major: 0,
        minor: 1,
        patch: 0,
    })
}

/// `weir:plugin/<iface>@<version>` → (iface, version text).
fn split_name(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix(PACKAGE)?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (rest, None),
    })
}

fn check_version(name: &str, version: Option<&str>) -> Result<(), LoadError> {
    let found = version.unwrap_or("(none)");
    match version.and_then(parse_version) {
        Some(v) if compatible(host_version(), v) => Ok(()),
        _ => Err(LoadError::IncompatibleVersion {
            export: name.to_string(),
            found: found.to_string(),
            supported: format!(
                "{}.x",
                CONTRACT_VERSION
                    .rsplit_once('.')
                    .map_or(CONTRACT_VERSION, |(mm, _)| mm)
            ),
        }),
    }
}

/// Check `component` against `kind`'s world; resolve its exported functions.
pub(crate) fn check(
    engine: &Engine,
    component: &Component,
    kind: PluginKind,
) -> Result<ExportIndices, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let expected_export = format!("{PACKAGE}{}@{CONTRACT_VERSION}", kind.interface());

    let ours = exports
        .iter()
        .filter_map(|name| split_name(name).map(|(iface, v)| (name, iface, v)))
        .find(|(_, iface, _)| *iface == kind.interface());
    let Some((export_name, _, version)) = ours else {
        let other = exports.iter().find_map(|name| {
            let (iface, _) = split_name(name)?;
            PluginKind::ALL
                .into_iter()
                .find(|k| k.interface() == iface)
                .map(|k| (name, k))
        });
        let found = match other {
            Some((name, k)) => format!(
                "but the component is {} {} (it exports {name})",
                k.article(),
                k.world()
            ),
            None if exports.is_empty() => "but the component exports nothing".to_string(),
            None => format!("but the component exports only: {}", exports.join(", ")),
        };
        return Err(if other.is_some() || exports.is_empty() {
            LoadError::WrongWorld {
                expected: kind.world(),
                expected_export,
                found,
            }
        } else {
            LoadError::MissingExport {
                missing: format!("{expected_export} ({found})"),
            }
        });
    };
    check_version(export_name, version)?;

    for (import, _) in ty.imports(engine) {
        let Some((iface, version)) = split_name(import) else {
            if import.starts_with("wasi:") {
                continue; // the linker provides WASI p2; anything else fails there
            }
            return Err(LoadError::UnsupportedImport {
                import: import.to_string(),
                message: "plugins may import only wasi:* and weir:plugin/* interfaces".to_string(),
            });
        };
        if !kind.imports().contains(&iface) {
            return Err(LoadError::UnsupportedImport {
                import: import.to_string(),
                message: format!(
                    "the {} world offers only weir:plugin/{{{}}}",
                    kind.world(),
                    kind.imports().join(", ")
                ),
            });
        }
        check_version(import, version)?;
    }

    let iface = component
        .get_export_index(None, export_name.as_str())
        .ok_or_else(|| LoadError::MissingExport {
            missing: export_name.clone(),
        })?;
    let mut funcs = Vec::new();
    for &func in kind.functions() {
        let index = component
            .get_export_index(Some(&iface), func)
            .ok_or_else(|| LoadError::MissingExport {
                missing: format!("{export_name}#{func}"),
            })?;
        funcs.push((func, index));
    }
    Ok(ExportIndices {
        export_name: export_name.clone(),
        funcs,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zero_x_minor_is_breaking() {
        let v = |s| parse_version(s).unwrap();
        assert!(compatible(v("0.1.0"), v("0.1.9")));
        assert!(!compatible(v("0.1.0"), v("0.2.0")));
        assert!(compatible(v("1.0.0"), v("1.4.0")));
        assert!(!compatible(v("1.0.0"), v("2.0.0")));
        assert_eq!(parse_version("0.1"), None);
        assert_eq!(
            parse_version("0.1.0-rc.1"),
            Some(Version {
                major: 0,
                minor: 1,
                patch: 0
            })
        );
    }

    #[test]
    fn names_split_into_interface_and_version() {
        assert_eq!(
            split_name("weir:plugin/river@0.1.0"),
            Some(("river", Some("0.1.0")))
        );
        assert_eq!(split_name("weir:plugin/pond"), Some(("pond", None)));
        assert_eq!(split_name("wasi:cli/run@0.2.0"), None);
        assert!(matches!(
            check_version("weir:plugin/pond", None),
            Err(LoadError::IncompatibleVersion { .. })
        ));
        let err = check_version("weir:plugin/river@0.2.0", Some("0.2.0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.2.0") && err.contains("0.1.x"), "{err}");
    }
}
