//! The example plugins written in Python, JavaScript and C (`plugins/python`,
//! `plugins/js`, `plugins/c`), built into components by
//! `guest-sdk/build-plugins.sh` into `<root>/target/lang-plugins`.
//!
//! Built on first use, once per test run: the script is incremental (a
//! sha256 stamp of every input beside each component) and serialises
//! concurrent callers (test binaries run in parallel) on a lock file, and
//! this module runs it at most once per language per process. A missing
//! toolchain is an error naming it and the install command — callers fail,
//! they never skip silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A guest language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
    C,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Python, Language::JavaScript, Language::C];

    /// The name `build-plugins.sh` and `install-toolchains.sh` use.
    pub fn id(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "js",
            Language::C => "c",
        }
    }
}

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the components land.
pub fn output_dir() -> PathBuf {
    repo_root().join("target").join("lang-plugins")
}

fn build(lang: Language) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Mutex<HashMap<Language, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    built
        .entry(lang)
        .or_insert_with(|| {
            let root = repo_root();
            let out = output_dir();
            let script = root.join("guest-sdk").join("build-plugins.sh");
            let output = Command::new("bash")
                .arg(&script)
                .arg(&out)
                .arg(lang.id())
                .current_dir(&root)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if output.status.success() {
                Ok(out)
            } else {
                Err(format!(
                    "building the {} plugins failed (install the toolchains with \
                     `guest-sdk/install-toolchains.sh {}`):\n{}",
                    lang.id(),
                    lang.id(),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
}

/// Path of the component built from `plugins/<lang>/<plugin>` (e.g.
/// `(Language::Python, "enricher-orders")`), building it first if needed.
pub fn component_path(lang: Language, plugin: &str) -> Result<PathBuf, String> {
    let path = build(lang)?.join(format!("{}-{plugin}.wasm", lang.id()));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("no component {} after the build", path.display()))
    }
}

/// The component's bytes (see [`component_path`]).
pub fn component_bytes(lang: Language, plugin: &str) -> Result<Vec<u8>, String> {
    let path = component_path(lang, plugin)?;
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
