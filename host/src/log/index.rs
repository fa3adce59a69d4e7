//! Sparse offset and time indexes of one segment.
//!
//! Every `index_interval_bytes` of log (and at the first batch) one entry is
//! added to each index:
//! - `.index`: `u32 relative offset | u32 file position` of a batch start;
//! - `.timeindex`: `i64 max timestamp of the segment before that batch | u32 relative offset`.
//!
//! The active segment keeps its entries in memory; a sealed segment's index
//! files are written once and memory-mapped (memmap2). Index files are
//! never trusted blindly: on open they are validated against the segment
//! and rebuilt from it when missing or damaged. They are never fsynced —
//! they can always be rebuilt.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use super::frame::{self, Probe};

const OFF_ENTRY: usize = 8;
const TIME_ENTRY: usize = 12;

enum Buf {
    Owned(Vec<u8>),
    Mapped(Mmap),
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Owned(v) => v,
            Buf::Mapped(m) => m,
        }
    }
}

fn map_file(path: &Path) -> std::io::Result<Buf> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Buf::Owned(Vec::new()));
    }
    // SAFETY: index files are only replaced by rename, never modified in
    // place, so the mapped bytes do not change under us.
    let map = unsafe { Mmap::map(&file)? };
    Ok(Buf::Mapped(map))
}

/// The indexes of one segment plus the running state needed to extend them.
pub(crate) struct SegmentIndex {
    offsets: Buf,
    times: Buf,
    /// Bytes appended since the last entry (decides the next entry).
    bytes_since_entry: u64,
    /// Largest timestamp in the segment so far.
    pub max_ts: i64,
    interval: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

impl SegmentIndex {
    pub fn new(interval: u32) -> Self {
        SegmentIndex {
            offsets: Buf::Owned(Vec::new()),
            times: Buf::Owned(Vec::new()),
            bytes_since_entry: 0,
            max_ts: i64::MIN,
            interval: interval as u64,
        }
    }

    pub fn len(&self) -> usize {
        (self.offsets.bytes().len() / OFF_ENTRY).min(self.times.bytes().len() / TIME_ENTRY)
    }

    fn entry(&self, i: usize) -> (u32, u32, i64) {
        let o = self.offsets.bytes();
        let t = self.times.bytes();
        (
            u32_at(o, i * OFF_ENTRY),
            u32_at(o, i * OFF_ENTRY + 4),
            i64_at(t, i * TIME_ENTRY),
        )
    }

    fn owned(&mut self) -> (&mut Vec<u8>, &mut Vec<u8>) {
        for buf in [&mut self.offsets, &mut self.times] {
            if let Buf::Mapped(m) = buf {
                *buf = Buf::Owned(m.to_vec());
            }
        }
        match (&mut self.offsets, &mut self.times) {
            (Buf::Owned(o), Buf::Owned(t)) => (o, t),
            _ => unreachable!("both buffers were just made owned"),
        }
    }

    /// Account for a batch appended at `pos` (relative offset `rel`).
    pub fn on_append(&mut self, rel: u32, pos: u32, frame_len: usize, batch_max_ts: i64) {
        if self.len() == 0 || self.bytes_since_entry >= self.interval {
            let ts_before = self.max_ts;
            let (o, t) = self.owned();
            o.extend_from_slice(&rel.to_le_bytes());
            o.extend_from_slice(&pos.to_le_bytes());
            t.extend_from_slice(&ts_before.to_le_bytes());
            t.extend_from_slice(&rel.to_le_bytes());
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += frame_len as u64;
        self.max_ts = self.max_ts.max(batch_max_ts);
    }

    /// Position of the last entry for which `before(entry)` holds, given
    /// that it holds for a prefix of the entries; 0 when for none.
    fn last_position_where(&self, before: impl Fn((u32, u32, i64)) -> bool) -> u64 {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if before(self.entry(mid)) {
                lo = mid + 1
            } else {
                hi = mid
            }
        }
        if lo == 0 {
            0
        } else {
            self.entry(lo - 1).1 as u64
        }
    }

    /// Position of the last indexed batch starting at or before `rel`.
    pub fn position_for_offset(&self, rel: u64) -> u64 {
        self.last_position_where(|e| e.0 as u64 <= rel)
    }

    /// Position from which the first record with timestamp >= `ts` can be
    /// found by scanning forward: the last batch before which every record is older.
    pub fn position_for_time(&self, ts: i64) -> u64 {
        self.last_position_where(|e| e.2 < ts)
    }

    /// Drop entries at or beyond file position `pos` (after a truncate).
    /// `max_ts` becomes an over-estimate, which only delays retention.
    pub fn truncate_at(&mut self, pos: u64) {
        let keep = (0..self.len())
            .take_while(|&i| (self.entry(i).1 as u64) < pos)
            .count();
        let (o, t) = self.owned();
        o.truncate(keep * OFF_ENTRY);
        t.truncate(keep * TIME_ENTRY);
        self.bytes_since_entry = self.interval; // next batch gets an entry
    }

    /// Write both files (via a temporary and rename) and map them.
    pub fn persist(&mut self, off_path: &Path, time_path: &Path) -> std::io::Result<()> {
        for (path, buf) in [(off_path, &self.offsets), (time_path, &self.times)] {
            let tmp = path.with_extension("tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(buf.bytes())?;
            drop(f);
            fs::rename(&tmp, path)?;
        }
        self.offsets = map_file(off_path)?;
        self.times = map_file(time_path)?;
        Ok(())
    }

    /// Load and validate the index files of a segment whose bytes are `log`.
    /// Returns the index and the segment's next offset, or `None` when the
    /// files are missing, damaged or do not match the segment; the caller
    /// then rebuilds them by scanning.
    pub fn load(
        off_path: &Path,
        time_path: &Path,
        log: &[u8],
        base: u64,
        interval: u32,
        max_body: usize,
    ) -> Option<(Self, u64)> {
        let offsets = map_file(off_path).ok()?;
        let times = map_file(time_path).ok()?;
        let (ob, tb) = (offsets.bytes(), times.bytes());
        if ob.len() % OFF_ENTRY != 0
            || tb.len() % TIME_ENTRY != 0
            || ob.len() / OFF_ENTRY != tb.len() / TIME_ENTRY
        {
            return None;
        }
        let mut index = SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
            max_ts: i64::MIN,
            interval: interval as u64,
        };
        let n = index.len();
        if n == 0 {
            return if log.is_empty() {
                Some((index, base))
            } else {
                None
            };
        }
        let mut prev: Option<(u32, u32, i64)> = None;
        for i in 0..n {
            let e = index.entry(i);
            if i == 0 && (e.1 != 0 || e.2 != i64::MIN) {
                return None;
            }
            if let Some(p) = prev
                && (e.0 <= p.0 || e.1 <= p.1 || e.2 < p.2)
            {
                return None;
            }
            match frame::probe(log.get(e.1 as usize..)?, max_body, false) {
                Probe::Frame(h) if h.base_offset == base + e.0 as u64 => {}
                _ => return None,
            }
            prev = Some(e);
        }
        // Walk the batches after the last entry: max timestamp and the tail state.
        let (_, last_pos, last_ts) = index.entry(n - 1);
        let mut pos = last_pos as usize;
        let mut max_ts = last_ts;
        let mut next = base;
        while pos < log.len() {
            match frame::probe(&log[pos..], max_body, false) {
                Probe::Frame(h) if h.base_offset >= next => {
                    max_ts = max_ts.max(h.max_timestamp);
                    next = h.next_offset();
                    pos += h.frame_len();
                }
                _ => return None,
            }
        }
        index.max_ts = max_ts;
        index.bytes_since_entry = (log.len() - last_pos as usize) as u64;
        Some((index, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_right_entry() {
        let mut idx = SegmentIndex::new(100);
        // Batches of 60 bytes, 10 records each, timestamps rising by 10 per batch.
        for b in 0..10u32 {
            idx.on_append(b * 10, b * 60, 60, (b as i64 + 1) * 10);
        }
        assert_eq!(idx.len(), 5); // every second batch
        assert_eq!(idx.position_for_offset(0), 0);
        assert_eq!(idx.position_for_offset(15), 0);
        assert_eq!(idx.position_for_offset(20), 120);
        assert_eq!(idx.position_for_offset(99), 480);
        assert_eq!(idx.position_for_time(5), 0);
        assert_eq!(idx.position_for_time(35), 120);
        assert_eq!(idx.max_ts, 100);
        idx.truncate_at(200);
        assert_eq!(idx.len(), 2);
    }
}
