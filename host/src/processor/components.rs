//! Deployed components on disk, content-addressed: `<dir>/<sha256>.wasm`.
//! Written to a temporary file, fsynced and renamed, so a file under its
//! digest name is always complete; loads verify the digest.

use std::io::Write;
use std::path::PathBuf;

use crate::runtime::sha256_hex;

pub struct ComponentStore {
    dir: PathBuf,
}

impl ComponentStore {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(ComponentStore { dir })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Keep `bytes`; returns their sha256 (hex).
    pub fn save(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let tmp = self.dir.join(format!(".{sha}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(sha)
    }

    /// The component with this digest; an error when missing or altered.
    pub fn load(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let bytes = std::fs::read(self.path(sha256))?;
        if sha256_hex(&bytes) != sha256 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("component {sha256} on disk does not match its digest"),
            ));
        }
        Ok(bytes)
    }
}
