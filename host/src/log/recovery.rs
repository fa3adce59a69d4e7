//! Opening a partition directory: find the segments, validate them from the
//! last recovery point on, cut a torn tail, refuse mid-log corruption.
//!
//! The recovery point (`recovery-point`, a u64 with a CRC) is an offset
//! below which everything was fsynced and validated. Segments that end at
//! or below it are trusted after a cheap index check (their index is rebuilt
//! when missing or damaged); later segments — always including the last —
//! are scanned frame by frame with CRC checks.
//!
//! A damaged frame is a *torn tail* when nothing valid can follow it: it is
//! incomplete, or it is the last frame of the last non-empty segment, or
//! only zero bytes follow. A torn tail is cut (those records were never
//! acknowledged as durable). Any other damage is corruption: opening fails
//! with `LogError::Corrupt` naming the file and byte position, unless
//! `repair` is set, in which case the log is cut there and the loss logged.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::Mmap;

use super::error::{IoContext, LogError, Result};
use super::frame::{self, Probe};
use super::index::SegmentIndex;
use super::partition::PartitionSettings;
use super::segment::{self, Segment};

const RECOVERY_POINT: &str = "recovery-point";

pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    pub recovery_point: u64,
}

pub(crate) fn read_recovery_point(dir: &Path) -> Option<u64> {
    let b = fs::read(dir.join(RECOVERY_POINT)).ok()?;
    if b.len() != 12 {
        return None;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    (crc32c::crc32c(&v) == crc).then(|| u64::from_le_bytes(v))
}

/// Write the recovery point (temporary file + rename; not fsynced: a lost
/// update only makes the next recovery scan more).
pub(crate) fn write_recovery_point(dir: &Path, offset: u64) -> Result<()> {
    let v = offset.to_le_bytes();
    let mut b = v.to_vec();
    b.extend_from_slice(&crc32c::crc32c(&v).to_le_bytes());
    let tmp = dir.join("recovery-point.tmp");
    fs::write(&tmp, &b).ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, dir.join(RECOVERY_POINT)).ctx(|| format!("renaming {}", tmp.display()))
}

/// Outcome of scanning a segment's bytes.
pub(crate) struct Scan {
    pub valid_len: u64,
    pub next_offset: u64,
    pub index: SegmentIndex,
    pub error: Option<(u64, &'static str)>,
}

/// Validate every frame of a segment and rebuild its indexes.
pub(crate) fn scan(data: &[u8], base: u64, settings: &PartitionSettings) -> Scan {
    let mut index = SegmentIndex::new(settings.index_interval);
    let mut pos = 0usize;
    let mut next = base;
    let mut error = None;
    while pos < data.len() {
        match frame::probe(&data[pos..], settings.max_batch_bytes, true) {
            Probe::Frame(h) if h.base_offset < next => {
                error = Some((pos as u64, "batch offsets go backwards"));
                break;
            }
            Probe::Frame(h) if h.next_offset() - base > u32::MAX as u64 => {
                error = Some((pos as u64, "batch offset too far from the segment base"));
                break;
            }
            Probe::Frame(h) => {
                index.on_append(
                    (h.base_offset - base) as u32,
                    pos as u32,
                    h.frame_len(),
                    h.max_timestamp,
                );
                next = h.next_offset();
                pos += h.frame_len();
            }
            Probe::Incomplete => {
                error = Some((pos as u64, "incomplete batch"));
                break;
            }
            Probe::Bad(reason) => {
                error = Some((pos as u64, reason));
                break;
            }
        }
    }
    Scan {
        valid_len: pos as u64,
        next_offset: next,
        index,
        error,
    }
}

/// Could the damage at `pos` be a write that did not finish?
fn looks_torn(data: &[u8], pos: usize, max_body: usize) -> bool {
    let rest = &data[pos..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    match frame::probe(rest, max_body, false) {
        Probe::Incomplete => true,
        Probe::Frame(h) => h.frame_len() == rest.len(),
        Probe::Bad(_) => false,
    }
}

fn map_segment(path: &Path) -> Result<Option<Mmap>> {
    let file = fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .ctx(|| format!("reading metadata of {}", path.display()))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: nothing else writes this partition while it is being opened.
    let map = unsafe { Mmap::map(&file) }.ctx(|| format!("mapping {}", path.display()))?;
    Ok(Some(map))
}

pub(crate) fn recover(
    dir: &Path,
    settings: &PartitionSettings,
    repair: bool,
    verify_all: bool,
) -> Result<Recovered> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") || name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        } else if let Some(base) = segment::parse_log_name(&name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let rp = read_recovery_point(dir).unwrap_or(0);
    let sizes: Vec<u64> = bases
        .iter()
        .map(|&b| {
            fs::metadata(segment::log_path(dir, b))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .collect();
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut scanned_any = false;
    let mut prev_next: Option<u64> = None;
    let mut i = 0;
    while i < bases.len() {
        let base = bases[i];
        let path = segment::log_path(dir, base);
        if let Some(p) = prev_next
            && base < p
        {
            return Err(LogError::Corrupt {
                file: path,
                position: 0,
                reason: format!(
                    "segment starts at offset {base}, before the previous segment ends ({p})"
                ),
            });
        }
        let is_last = i + 1 == bases.len();
        let only_empty_after = sizes[i + 1..].iter().all(|&s| s == 0);
        let reserve = if is_last { settings.reserve() } else { 0 };
        let map = map_segment(&path)?;
        let data: &[u8] = map.as_deref().unwrap_or(&[]);
        let (ip, tp) = (
            segment::index_path(dir, base),
            segment::time_index_path(dir, base),
        );
        let trusted = !verify_all && !is_last && bases[i + 1] <= rp;
        let loaded = if trusted {
            SegmentIndex::load(
                &ip,
                &tp,
                data,
                base,
                settings.index_interval,
                settings.max_batch_bytes,
            )
        } else {
            None
        };
        let (index, written, next, rebuilt) = match loaded {
            Some((index, next)) => (index, data.len() as u64, next, false),
            None => {
                if trusted {
                    tracing::warn!(segment = %path.display(), "index missing or damaged; rebuilding it");
                }
                scanned_any = true;
                let s = scan(data, base, settings);
                let mut cut_rest = false;
                if let Some((pos, reason)) = s.error {
                    let torn = only_empty_after
                        && looks_torn(data, pos as usize, settings.max_batch_bytes);
                    if torn {
                        tracing::warn!(segment = %path.display(), position = pos, reason, "cutting a torn tail");
                    } else if repair {
                        tracing::error!(segment = %path.display(), position = pos, reason,
                            "REPAIR: cutting the log at a corrupt batch; everything after it is discarded");
                        cut_rest = true;
                    } else {
                        return Err(LogError::Corrupt {
                            file: path,
                            position: pos,
                            reason: format!(
                                "{reason} (start with repair to cut the log here, losing everything after it)"
                            ),
                        });
                    }
                    drop(map);
                    let f = fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .ctx(|| format!("opening {}", path.display()))?;
                    f.set_len(pos)
                        .ctx(|| format!("truncating {}", path.display()))?;
                    f.sync_all().ctx(|| format!("syncing {}", path.display()))?;
                } else {
                    drop(map);
                }
                if cut_rest {
                    for &b in &bases[i + 1..] {
                        let seg = Segment::open(
                            dir,
                            b,
                            0,
                            b,
                            SegmentIndex::new(settings.index_interval),
                            0,
                        )?;
                        seg.delete_files();
                    }
                    bases.truncate(i + 1);
                }
                (s.index, s.valid_len, s.next_offset, true)
            }
        };
        let is_last = i + 1 == bases.len();
        let seg = Segment::open(
            dir,
            base,
            written,
            next,
            index,
            if is_last { settings.reserve() } else { reserve },
        )?;
        if rebuilt {
            seg.dirty.store(true, Ordering::Release);
            if !is_last {
                seg.persist_index()?;
            }
        }
        prev_next = Some(next);
        segments.push(Arc::new(seg));
        i += 1;
    }
    if segments.is_empty() {
        // Never reuse offsets that a recovery point says existed.
        let seg = Segment::create(dir, rp, settings.index_interval, settings.reserve())?;
        segment::sync_dir(dir)?;
        segments.push(Arc::new(seg));
    }
    // Scanned data may sit only in the page cache (after a process crash):
    // make it durable before declaring it a recovery point.
    for s in &segments {
        s.sync()?;
    }
    let end = segments
        .last()
        .map_or(0, |s| s.next_offset.load(Ordering::Acquire));
    let recovery_point = if scanned_any || rp != end {
        write_recovery_point(dir, end)?;
        end
    } else {
        rp
    };
    Ok(Recovered {
        segments,
        recovery_point,
    })
}
