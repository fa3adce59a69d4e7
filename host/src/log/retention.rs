//! Retention: deleting whole segments from the front of a partition by age
//! and by size. Only sealed segments whose records are all visible are
//! deleted; the active segment is never deleted. Readers in flight keep
//! their segment open and finish unaffected; later reads below the new
//! start get `OffsetOutOfRange { start, .. }`.
//!
//! - by age: a segment goes when its newest record is older than `retention_ms`;
//! - by size (Kafka's rule): the oldest segment goes while the partition
//!   stays at or above `retention_bytes` without it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::error::Result;
use super::partition::Partition;

impl Partition {
    /// Apply retention now; returns how many segments were deleted.
    pub(crate) fn apply_retention(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    ) -> Result<usize> {
        let mut deleted = 0;
        loop {
            let visible = self.visible_end();
            let (candidate, total) = {
                let segs = self.segments.read();
                if segs.len() < 2 {
                    break;
                }
                (segs[0].clone(), segs.iter().map(|s| s.size()).sum::<u64>())
            };
            if candidate.next_offset.load(Ordering::Acquire) > visible {
                break;
            }
            let expired = retention_ms
                .is_some_and(|ms| candidate.max_ts() < now_ms.saturating_sub(ms as i64));
            let oversize =
                retention_bytes.is_some_and(|max| total.saturating_sub(candidate.size()) >= max);
            if !expired && !oversize {
                break;
            }
            {
                let mut segs = self.segments.write();
                if segs.len() < 2 || !Arc::ptr_eq(&segs[0], &candidate) {
                    continue;
                }
                segs.remove(0);
                self.start.store(segs[0].base, Ordering::Release);
            }
            tracing::debug!(segment = %candidate.path.display(), expired, oversize, "retention deleted a segment");
            candidate.delete_files();
            deleted += 1;
        }
        Ok(deleted)
    }
}
