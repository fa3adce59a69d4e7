//! Key compaction: keep only the latest record per key in sealed segments.
//!
//! Promises: offsets never change (a rewritten batch keeps its base offset
//! and range and stores explicit offset deltas); the latest record of every
//! key survives; keyless records are kept; a tombstone (empty value) is
//! dropped once it is the latest for its key and older (by its timestamp)
//! than `delete_retention_ms`; the last record of each segment is always
//! kept so every offset below the end still leads to a record. Only sealed,
//! fully visible segments are rewritten, to `<base>.log.cleaned`, fsynced
//! and renamed over the original — appends never wait for it and readers
//! in flight keep reading the old file.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::error::{IoContext, LogError, Result};
use super::frame::{self, Probe};
use super::partition::{Partition, checked_view, frame_at};
use super::recovery;
use super::segment::{self, Segment};
use crate::batch::RecordBatch;

impl Partition {
    /// Visit every visible record of `seg`: (offset, key, value, timestamp).
    fn for_each_record(
        &self,
        seg: &Segment,
        visible: u64,
        mut f: impl FnMut(u64, &[u8], &[u8], i64),
    ) -> Result<()> {
        let max = self.settings.max_batch_bytes;
        seg.with_bytes(seg.size(), |data| -> Result<()> {
            let mut pos = 0;
            while pos < data.len() {
                let h = frame_at(seg, data, pos, max)?;
                if h.base_offset >= visible {
                    break;
                }
                let view = checked_view(seg, data, pos, &h)?;
                for i in 0..view.count {
                    let o = view.offset(i);
                    if o >= visible {
                        break;
                    }
                    f(o, view.key(i), view.value(i), view.timestamp(i));
                }
                pos += h.frame_len();
            }
            Ok(())
        })?
    }

    /// Compact now; returns how many segments were rewritten.
    pub(crate) fn compact(&self, delete_retention_ms: u64, now_ms: i64) -> Result<usize> {
        let visible = self.visible_end();
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        if segs.len() < 2 {
            return Ok(0);
        }
        let cleanable: Vec<Arc<Segment>> = segs[..segs.len() - 1]
            .iter()
            .take_while(|s| s.next_offset.load(Ordering::Acquire) <= visible)
            .cloned()
            .collect();
        if cleanable.is_empty() {
            return Ok(0);
        }
        let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
        for seg in &segs {
            if seg.base >= visible {
                break;
            }
            self.for_each_record(seg, visible, |o, key, _, _| {
                if key.is_empty() {
                    return;
                }
                match latest.get_mut(key) {
                    Some(v) => *v = o,
                    None => {
                        latest.insert(key.to_vec(), o);
                    }
                }
            })?;
        }
        let mut rewritten = 0;
        for seg in cleanable {
            if self.compact_segment(&seg, &latest, delete_retention_ms, now_ms)? {
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    fn compact_segment(
        &self,
        seg: &Arc<Segment>,
        latest: &HashMap<Vec<u8>, u64>,
        delete_retention_ms: u64,
        now_ms: i64,
    ) -> Result<bool> {
        let max = self.settings.max_batch_bytes;
        let last_offset = seg.next_offset.load(Ordering::Acquire).saturating_sub(1);
        let (out, dropped) = seg.with_bytes(seg.size(), |data| -> Result<(Vec<u8>, usize)> {
            let mut out = Vec::with_capacity(data.len());
            let mut dropped = 0;
            let mut pos = 0;
            while pos < data.len() {
                let h = frame_at(seg, data, pos, max)?;
                let view = checked_view(seg, data, pos, &h)?;
                let keep = |i: usize| {
                    let o = view.offset(i);
                    let key = view.key(i);
                    if key.is_empty() || o == last_offset {
                        return true;
                    }
                    let newest = latest.get(key).is_none_or(|&l| l == o);
                    let expired_tombstone = view.value(i).is_empty()
                        && view.timestamp(i).saturating_add(delete_retention_ms as i64) < now_ms;
                    newest && !expired_tombstone
                };
                let kept: Vec<usize> = (0..view.count).filter(|&i| keep(i)).collect();
                dropped += view.count - kept.len();
                if kept.len() == view.count {
                    out.extend_from_slice(&data[pos..pos + h.frame_len()]);
                } else if !kept.is_empty() {
                    let mut b = RecordBatch::default();
                    for &i in &kept {
                        view.copy_into(&mut b, i, i + 1);
                    }
                    frame::encode_batch(&mut out, h.base_offset, &b, Some(h.last_delta));
                }
                pos += h.frame_len();
            }
            Ok((out, dropped))
        })??;
        if dropped == 0 {
            return Ok(false);
        }
        let scan = recovery::scan(&out, seg.base, &self.settings);
        if let Some((pos, reason)) = scan.error {
            return Err(LogError::Corrupt {
                file: seg.path.clone(),
                position: pos,
                reason: format!("compaction output invalid: {reason}"),
            });
        }
        let cleaned = seg.path.with_extension("log.cleaned");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cleaned)
            .ctx(|| format!("creating {}", cleaned.display()))?;
        file.write_all(&out)
            .ctx(|| format!("writing {}", cleaned.display()))?;
        file.sync_all()
            .ctx(|| format!("syncing {}", cleaned.display()))?;
        let new = Arc::new(Segment::from_file(
            &self.dir,
            seg.base,
            file,
            out.len() as u64,
            scan.next_offset,
            scan.index,
        ));
        let swapped = self.swap_segment(seg, new.clone(), || {
            fs::rename(&cleaned, &seg.path).ctx(|| format!("renaming {}", cleaned.display()))?;
            segment::sync_dir(&self.dir)
        })?;
        if !swapped {
            let _ = fs::remove_file(&cleaned);
            return Ok(false);
        }
        new.persist_index()?;
        // Keep the frame module's probe in the loop for sanity: the new file
        // starts with a valid frame unless it is empty.
        debug_assert!(out.is_empty() || matches!(frame::probe(&out, max, true), Probe::Frame(_)));
        tracing::debug!(segment = %seg.path.display(), dropped, "compacted a segment");
        Ok(true)
    }
}
