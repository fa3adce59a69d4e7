//! One segment: a file of batch frames named by its base offset
//! (`00000000000000000042.log`), plus its indexes.
//!
//! Writes go through `pwrite` at the end of the written region, one call
//! per appended batch. Reads go through a read-only memory map of the file
//! and never look past `written` (whole frames only). The map of the active
//! segment reserves address space beyond the end of the file so it rarely
//! needs remapping; bytes beyond `written` are never touched.
//!
//! Pages read through a map stay resident in the process (they count in
//! its RSS) until they are unmapped or advised away, so the log's
//! maintenance calls [`Segment::release_pages`] every few seconds: a map
//! not read since the last call is dropped, the pages of one still in use
//! are handed back to the page cache. Resident log pages are then bounded
//! by what was read in the last interval, not by the size of the log.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use memmap2::{Mmap, MmapOptions, UncheckedAdvice};
use parking_lot::{Mutex, RwLock};

use super::error::{IoContext, Result};
use super::frame::FrameHeader;
use super::index::SegmentIndex;

/// Every this many appended bytes the kernel is asked to start writing them
/// to disk, without waiting (like RocksDB's `bytes_per_sync`): the disk
/// works while appends go on, and a later fdatasync — or the page cache's
/// own flush under policy `never` — finds little left to write.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Start write-back of `len` bytes at `from`. A hint: errors are ignored
/// (durability comes from fdatasync, never from this).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads nothing from memory; the descriptor is
    // owned by `file`, which outlives the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _len: u64) {}

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Parse `<20 digits>.log` into a base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

struct MapState {
    map: Option<Mmap>,
    len: usize,
}

pub(crate) struct Segment {
    pub base: u64,
    pub dir: PathBuf,
    pub path: PathBuf,
    file: File,
    /// Bytes of whole frames in the file.
    pub written: AtomicU64,
    /// Offset after the last batch (the base when empty).
    pub next_offset: AtomicU64,
    /// Written but not yet synced.
    pub dirty: AtomicBool,
    /// Where the bytes begin whose write-back has not been started yet.
    writeback_from: AtomicU64,
    sync_lock: Mutex<()>,
    pub created: Instant,
    /// Address space to reserve when mapping (0 = exactly the file).
    reserve: usize,
    map: RwLock<MapState>,
    /// Read through the map since the last [`Segment::release_pages`].
    read_since_release: AtomicBool,
    pub index: RwLock<SegmentIndex>,
}

impl Segment {
    fn with_file(
        dir: &Path,
        base: u64,
        file: File,
        written: u64,
        next_offset: u64,
        index: SegmentIndex,
        reserve: usize,
    ) -> Self {
        Segment {
            base,
            dir: dir.to_path_buf(),
            path: log_path(dir, base),
            file,
            written: AtomicU64::new(written),
            writeback_from: AtomicU64::new(written),
            next_offset: AtomicU64::new(next_offset),
            dirty: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            created: Instant::now(),
            reserve,
            map: RwLock::new(MapState { map: None, len: 0 }),
            read_since_release: AtomicBool::new(false),
            index: RwLock::new(index),
        }
    }

    /// Create a new, empty active segment.
    pub fn create(dir: &Path, base: u64, interval: u32, reserve: usize) -> Result<Self> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .ctx(|| format!("creating segment {}", path.display()))?;
        Ok(Self::with_file(
            dir,
            base,
            file,
            0,
            base,
            SegmentIndex::new(interval),
            reserve,
        ))
    }

    /// Wrap an already open file (a compacted replacement) that will live at
    /// this segment's path.
    pub fn from_file(
        dir: &Path,
        base: u64,
        file: File,
        written: u64,
        next_offset: u64,
        index: SegmentIndex,
    ) -> Self {
        Self::with_file(dir, base, file, written, next_offset, index, 0)
    }

    /// Wrap an existing, validated segment file.
    pub fn open(
        dir: &Path,
        base: u64,
        written: u64,
        next_offset: u64,
        index: SegmentIndex,
        reserve: usize,
    ) -> Result<Self> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening segment {}", path.display()))?;
        Ok(Self::with_file(
            dir,
            base,
            file,
            written,
            next_offset,
            index,
            reserve,
        ))
    }

    pub fn max_ts(&self) -> i64 {
        self.index.read().max_ts
    }

    pub fn size(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Write encoded frames at the end. `frames` lists each frame's header
    /// (for the index). On failure the segment is cut back to where it was.
    pub fn append(&self, bytes: &[u8], frames: &[FrameHeader]) -> Result<()> {
        let pos = self.written.load(Ordering::Acquire);
        if let Err(e) = self.file.write_all_at(bytes, pos) {
            let _ = self.file.set_len(pos);
            return Err(e).ctx(|| format!("appending to {}", self.path.display()));
        }
        self.dirty.store(true, Ordering::Release);
        {
            let mut index = self.index.write();
            let mut at = pos;
            for h in frames {
                index.on_append(
                    (h.base_offset - self.base) as u32,
                    at as u32,
                    h.frame_len(),
                    h.max_timestamp,
                );
                at += h.frame_len() as u64;
            }
        }
        if let Some(last) = frames.last() {
            self.next_offset
                .store(last.next_offset(), Ordering::Release);
        }
        let end = pos + bytes.len() as u64;
        self.written.store(end, Ordering::Release);
        let from = self.writeback_from.load(Ordering::Relaxed);
        if end.saturating_sub(from) >= WRITEBACK_CHUNK {
            start_writeback(&self.file, from, end - from);
            self.writeback_from.store(end, Ordering::Relaxed);
        }
        Ok(())
    }

    /// fdatasync if anything was written since the last sync. The lock makes
    /// a caller that finds the segment clean wait for a sync in progress, so
    /// "clean" always means "on disk".
    pub fn sync(&self) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock();
        if self.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = self.file.sync_data()
        {
            self.dirty.store(true, Ordering::Release);
            return Err(e).ctx(|| format!("syncing {}", self.path.display()));
        }
        Ok(())
    }

    /// Run `f` over the first `upto` bytes of the file (which must be written).
    pub fn with_bytes<R>(&self, upto: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let upto = upto as usize;
        if upto == 0 {
            return Ok(f(&[]));
        }
        // Load first: most reads find the flag set and leave its cache line shared.
        if !self.read_since_release.load(Ordering::Relaxed) {
            self.read_since_release.store(true, Ordering::Relaxed);
        }
        {
            let state = self.map.read();
            if let Some(map) = &state.map
                && state.len >= upto
            {
                return Ok(f(&map[..upto]));
            }
        }
        let mut state = self.map.write();
        if state.len < upto {
            let len = upto.max(self.reserve);
            // SAFETY: the file is only appended to while mapped; bytes below
            // `written` never change except by `truncate`, which takes the
            // write lock of this map, so no reader holds a slice then.
            let map = unsafe { MmapOptions::new().len(len).map(&self.file) }
                .ctx(|| format!("mapping {}", self.path.display()))?;
            state.map = Some(map);
            state.len = len;
        }
        let state = parking_lot::RwLockWriteGuard::downgrade(state);
        match &state.map {
            Some(map) => Ok(f(&map[..upto])),
            None => Ok(f(&[])),
        }
    }

    /// Give back the memory of pages read through the map: drop the map if
    /// nothing read through it since the last call, else advise its pages
    /// away. Readers are unaffected either way: a dropped map is made again
    /// on the next read, and an advised page of a shared file mapping is
    /// read back from the page cache (or the file) on its next access.
    pub fn release_pages(&self) {
        if !self.read_since_release.swap(false, Ordering::AcqRel) {
            // Never wait for a reader (the caller is the log's maintenance
            // thread, which also keeps interval fsyncs on time): a map in
            // use now is dropped on a later pass.
            let Some(mut state) = self.map.try_write() else {
                return;
            };
            // A read between the swap and the lock keeps the map.
            if !self.read_since_release.load(Ordering::Acquire) {
                state.map = None;
                state.len = 0;
            }
            return;
        }
        let state = self.map.read();
        if let Some(map) = &state.map {
            // SAFETY: the map is a read-only shared mapping of a file. For
            // such a mapping MADV_DONTNEED only drops this process's page
            // table entries; the next access reads the file's current bytes
            // again (madvise(2)), so no reader can see different data. The
            // read lock keeps the map alive for the call.
            if let Err(e) = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) } {
                tracing::debug!(segment = %self.path.display(), error = %e, "releasing mapped pages");
            }
        }
    }

    /// Whether the segment's file is currently mapped.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map.read().map.is_some()
    }

    /// Resident bytes of the segment's map (from `/proc/self/smaps`), 0 when unmapped.
    #[cfg(test)]
    pub fn resident_bytes(&self) -> u64 {
        let state = self.map.read();
        let Some(map) = &state.map else { return 0 };
        let start = format!("{:x}-", map.as_ptr() as usize);
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Cut the file back to `pos` bytes ending at offset `next_offset`.
    pub fn truncate(&self, pos: u64, next_offset: u64) -> Result<()> {
        let mut state = self.map.write();
        state.map = None;
        state.len = 0;
        self.file
            .set_len(pos)
            .ctx(|| format!("truncating {}", self.path.display()))?;
        self.file
            .sync_all()
            .ctx(|| format!("syncing {}", self.path.display()))?;
        self.index.write().truncate_at(pos);
        self.written.store(pos, Ordering::Release);
        self.writeback_from.fetch_min(pos, Ordering::Relaxed);
        self.next_offset.store(next_offset, Ordering::Release);
        Ok(())
    }

    /// Write this segment's index files (on seal, on close).
    pub fn persist_index(&self) -> Result<()> {
        let (ip, tp) = (
            index_path(&self.dir, self.base),
            time_index_path(&self.dir, self.base),
        );
        self.index
            .write()
            .persist(&ip, &tp)
            .ctx(|| format!("writing index {}", ip.display()))
    }

    /// Remove the segment's files (the open handle keeps readers working).
    pub fn delete_files(&self) {
        for p in [
            self.path.clone(),
            index_path(&self.dir, self.base),
            time_index_path(&self.dir, self.base),
        ] {
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %p.display(), error = %e, "could not remove segment file");
            }
        }
    }
}

/// fsync a directory so a created or renamed entry is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(seg: &Segment) -> u64 {
        seg.with_bytes(seg.size(), |data| {
            data.iter().map(|&b| b as u64).sum::<u64>()
        })
        .expect("read segment")
    }

    #[test]
    fn released_pages_leave_the_process_and_reads_still_see_the_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let seg = Segment::create(dir.path(), 0, 4096, 0).expect("create segment");
        let bytes: Vec<u8> = (0..8usize << 20).map(|i| (i % 251) as u8).collect();
        seg.append(&bytes, &[]).expect("append");
        let expected: u64 = bytes.iter().map(|&b| b as u64).sum();

        assert_eq!(checksum(&seg), expected);
        let read = seg.resident_bytes();
        assert!(read >= 7 << 20, "pages read are resident: {read}");

        // Read since the last release: the map stays, its pages go.
        seg.release_pages();
        assert!(seg.is_mapped());
        let released = seg.resident_bytes();
        assert!(released < 1 << 20, "pages given back: {released} resident");
        assert_eq!(checksum(&seg), expected, "advised pages read back the file");

        // Not read since the last release: the map goes.
        seg.release_pages();
        seg.release_pages();
        assert!(!seg.is_mapped());
        assert_eq!(checksum(&seg), expected, "a dropped map is made again");
        assert!(seg.is_mapped());
    }
}
