//! A full disk: writes answer `507 insufficient_storage` and change
//! nothing, reads go on, and once space is freed the server writes again
//! and keeps every acknowledged record across a restart.
//!
//! The disk is a small tmpfs mounted over the server's data directory;
//! where mounting is not permitted the test says so and does nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::start;

/// A tmpfs mounted at a directory for as long as it lives.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then(|| Tmpfs { at: at.to_owned() })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .unwrap();
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[test]
fn a_full_disk_answers_507_and_recovers_when_space_is_freed() {
    let mut s = start(&[]);
    s.stop();
    let Some(disk) = Tmpfs::mount(&s.data_dir(), "2m") else {
        eprintln!("SKIPPED a_full_disk_answers_507…: cannot mount a tmpfs here (needs root)");
        return;
    };
    s.restart();
    s.create_topic("fill", 1);
    // Fill it: big records until one is refused, then smaller ones.
    let mut acked = 0u64;
    let mut refused = None;
    for size in [64 << 10, 4 << 10, 256] {
        let value = "x".repeat(size);
        loop {
            let r = s.post_json("/topics/fill/records", &json!({"value_text": value}));
            if r.status != 200 {
                refused = Some(r);
                break;
            }
            acked += 1;
            assert!(acked < 10_000, "a 2 MiB disk took {acked} records");
        }
    }
    let refused = refused.unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (507, "insufficient_storage"),
        "{}",
        refused.json
    );
    assert!(acked > 0, "nothing fit at all");
    // Reads go on, and the refused write left nothing.
    let topic = s.get("/topics/fill");
    assert_eq!(topic.json["partitions"][0]["end_offset"], acked);
    // A topic that cannot be created leaves no half-made directory.
    let r = s.post_json("/topics", &json!({"name": "more", "partitions": 4}));
    assert_eq!((r.status, r.code()), (507, "insufficient_storage"));
    let leftovers: Vec<String> = std::fs::read_dir(s.data_dir().join("log"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "fill")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Space freed: writes work again, and everything acknowledged stays.
    disk.resize("64m");
    let r = s.post_json("/topics/fill/records", &json!({"value_text": "after"}));
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["offset"], acked);
    s.stop();
    s.restart();
    let records = s.read_all("fill", 0);
    assert_eq!(records.len() as u64, acked + 1);
    assert_eq!(records[acked as usize]["value_text"], "after");
    s.stop();
}
