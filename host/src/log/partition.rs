//! One partition: an ordered list of segments, the append path (with group
//! commit), the read path, visibility, waiting and truncation.
//!
//! Offsets: `start` (first stored) ≤ `visible` (readers see `start..visible`)
//! ≤ `log_end` (written). `append` makes its records visible once they are
//! as durable as the policy demands; `append_deferred` leaves them invisible
//! until `publish`. Appends are serialised by the writer lock; appends that
//! find it taken are queued and written by its holder in the same `pwrite`
//! (flat combining). The fsync of `always` happens outside the lock, so
//! appenders that arrive during a sync are covered by the next single sync
//! (group commit).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use tokio::sync::watch;

use super::config::FsyncPolicy;
use super::error::{LogError, Result};
use super::frame::{self, FrameHeader, FrameView, Probe};
use super::recovery;
use super::segment::{self, Segment};
use crate::batch::{Record, RecordBatch};

/// Settings a partition needs at run time.
#[derive(Debug, Clone)]
pub(crate) struct PartitionSettings {
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub fsync: FsyncPolicy,
    pub index_interval: u32,
    pub max_batch_bytes: usize,
}

impl PartitionSettings {
    /// Address space reserved for the active segment's map.
    pub fn reserve(&self) -> usize {
        self.segment_bytes as usize + self.max_batch_bytes.min(16 << 20)
    }
}

/// Result of an append: the offsets `base_offset..base_offset + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendAck {
    pub base_offset: u64,
    pub count: u32,
}

impl AppendAck {
    /// The offset after the last appended record.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + self.count as u64
    }
}

/// What an append writes.
pub(crate) enum Payload<'a> {
    Records(&'a [Record]),
    Batch(&'a RecordBatch),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Records(r) => r.len(),
            Payload::Batch(b) => b.len(),
        }
    }
    fn encoded_size(&self) -> usize {
        match self {
            Payload::Records(r) => frame::records_size(r),
            Payload::Batch(b) => frame::batch_size(b, false),
        }
    }

    /// Append one frame numbered from `base` to `buf`.
    fn encode(&self, buf: &mut Vec<u8>, base: u64) {
        match self {
            Payload::Records(r) => frame::encode_records(buf, base, r),
            Payload::Batch(b) => frame::encode_batch(buf, base, b, None),
        }
    }
}

/// The caller's own append, written by itself as the lock holder.
struct Own<'a> {
    payload: Payload<'a>,
    count: usize,
    /// Its encoded size (checked against the limits already).
    size: usize,
    deferred: bool,
}

/// An append waiting for the writer lock's holder to write it.
struct Queued {
    /// One frame, encoded at base 0; the writer renumbers it.
    frame: Mutex<Vec<u8>>,
    count: usize,
    deferred: bool,
    owner: std::thread::Thread,
    /// Set by the writer once the frame is written (and synced, under
    /// `always`), then the owner is unparked.
    outcome: Mutex<Option<Result<AppendAck>>>,
}

/// The error a queued append reports when its group's write or sync failed.
fn shared_failure(e: &LogError) -> LogError {
    LogError::Io {
        context: "appending with concurrent writers".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

struct Writer {
    buf: Vec<u8>,
    active: Arc<Segment>,
}

pub(crate) struct Partition {
    pub dir: PathBuf,
    pub id: u32,
    pub settings: PartitionSettings,
    writer: Mutex<Writer>,
    /// Appends waiting for the writer lock's holder to write them.
    queue: Mutex<Vec<Arc<Queued>>>,
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    log_end: AtomicU64,
    visible: AtomicU64,
    pub(crate) start: AtomicU64,
    durable: AtomicU64,
    sync_running: Mutex<bool>,
    sync_done: Condvar,
    pub(crate) last_sync: Mutex<Instant>,
    waiters: AtomicUsize,
    gone: AtomicBool,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    end_tx: watch::Sender<u64>,
    /// The recovery point last written to disk.
    pub(crate) recovery_point: AtomicU64,
}

fn corrupt(seg: &Segment, pos: u64, reason: &str) -> LogError {
    LogError::Corrupt {
        file: seg.path.clone(),
        position: pos,
        reason: reason.to_string(),
    }
}

impl Partition {
    /// Open (recovering) or create the partition stored in `dir`.
    pub fn open(
        dir: PathBuf,
        id: u32,
        settings: PartitionSettings,
        repair: bool,
        verify_all: bool,
    ) -> Result<Self> {
        let recovered = recovery::recover(&dir, &settings, repair, verify_all)?;
        let active = match recovered.segments.last() {
            Some(s) => s.clone(),
            None => {
                return Err(LogError::InvalidConfig(format!(
                    "no segment in {}",
                    dir.display()
                )));
            }
        };
        let end = active.next_offset.load(Ordering::Acquire);
        let start = recovered.segments.first().map_or(end, |s| s.base);
        let (end_tx, _) = watch::channel(end);
        Ok(Partition {
            dir,
            id,
            settings,
            writer: Mutex::new(Writer {
                buf: Vec::new(),
                active,
            }),
            queue: Mutex::new(Vec::new()),
            segments: RwLock::new(recovered.segments),
            log_end: AtomicU64::new(end),
            visible: AtomicU64::new(end),
            start: AtomicU64::new(start),
            durable: AtomicU64::new(end),
            sync_running: Mutex::new(false),
            sync_done: Condvar::new(),
            last_sync: Mutex::new(Instant::now()),
            waiters: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            end_tx,
            recovery_point: AtomicU64::new(recovered.recovery_point),
        })
    }

    pub fn start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }
    pub fn visible_end(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }
    pub fn log_end(&self) -> u64 {
        self.log_end.load(Ordering::Acquire)
    }
    pub fn durable_end(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    /// Append records; blocks until they are as durable as the policy demands.
    ///
    /// Uncontended, the caller writes its own frame. When another append
    /// holds the writer lock, the caller encodes its frame, queues it and
    /// sleeps: the next lock holder writes every queued frame together with
    /// its own in one `pwrite`, syncs once for all of them (policy
    /// `always`) and wakes their owners with their acks (flat combining —
    /// many concurrent appenders cost one write and one wake-up each, not a
    /// lock hand-off, a write and a sync wait each).
    pub fn append(&self, payload: Payload<'_>, deferred: bool) -> Result<AppendAck> {
        let count = payload.len();
        if count == 0 {
            return Ok(AppendAck {
                base_offset: self.log_end(),
                count: 0,
            });
        }
        if let Payload::Batch(b) = &payload {
            b.validate()
                .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        }
        let size = payload.encoded_size();
        if size > self.settings.max_batch_bytes || count > u32::MAX as usize / 2 {
            return Err(LogError::BatchTooLarge {
                size,
                max: self.settings.max_batch_bytes,
            });
        }
        if let Some(w) = self.writer.try_lock() {
            return self.lead(
                w,
                Some(Own {
                    payload,
                    count,
                    size,
                    deferred,
                }),
            );
        }
        let mut frame = Vec::with_capacity(size);
        payload.encode(&mut frame, 0);
        let queued = Arc::new(Queued {
            frame: Mutex::new(frame),
            count,
            deferred,
            owner: std::thread::current(),
            outcome: Mutex::new(None),
        });
        self.queue.lock().push(queued.clone());
        loop {
            if let Some(outcome) = queued.outcome.lock().take() {
                return outcome;
            }
            match self.writer.try_lock() {
                // Our frame is still queued (or in flight with another
                // leader, which will wake us): lead a round ourselves.
                Some(w) => {
                    let _ = self.lead(w, None);
                }
                // The bound only matters if a wake-up is ever lost.
                None => std::thread::park_timeout(Duration::from_millis(5)),
            }
        }
    }

    /// Holding the writer lock: write `own` (if any) and every queued frame
    /// in one write, release the lock, make them durable per the policy,
    /// publish the non-deferred ones in order and wake the queued owners.
    fn lead(&self, mut w: MutexGuard<'_, Writer>, own: Option<Own<'_>>) -> Result<AppendAck> {
        let queued = std::mem::take(&mut *self.queue.lock());
        let base = self.log_end.load(Ordering::Acquire);
        if own.is_none() && queued.is_empty() {
            return Ok(AppendAck {
                base_offset: base,
                count: 0,
            });
        }
        let mut ends: Vec<(u64, bool)> = Vec::with_capacity(queued.len() + 1); // end, deferred
        let written = self.write_group(&mut w, base, own.as_ref(), &queued, &mut ends);
        let result = if self.settings.fsync == FsyncPolicy::Always {
            // Sync with the lock held: appends that arrive meanwhile queue
            // up, and the next holder writes and syncs them all at once.
            let synced = written.and_then(|end| self.sync_to(end).map(|()| end));
            drop(w);
            synced
        } else {
            drop(w);
            written
        };
        // Whoever queues tries the lock afterwards; we held it, so frames
        // queued meanwhile are ours to hand on: wake one owner to lead.
        if let Some(next) = self.queue.lock().first() {
            next.owner.unpark();
        }
        if result.is_ok() {
            for &(end, deferred) in &ends {
                if !deferred {
                    self.advance_visible(end);
                }
            }
        }
        let own_count = own.as_ref().map_or(0, |o| o.count);
        let mut at = base + own_count as u64;
        for q in &queued {
            let outcome = match &result {
                Ok(_) => Ok(AppendAck {
                    base_offset: at,
                    count: q.count as u32,
                }),
                Err(e) => Err(shared_failure(e)),
            };
            at += q.count as u64;
            *q.outcome.lock() = Some(outcome);
            q.owner.unpark();
        }
        result.map(|_| AppendAck {
            base_offset: base,
            count: own_count as u32,
        })
    }

    /// Encode `own` at `base`, renumber the queued frames after it, and
    /// append them all to the active segment (rolling it first if needed).
    /// Records each append's end in `ends`; returns the new log end.
    fn write_group(
        &self,
        w: &mut Writer,
        base: u64,
        own: Option<&Own<'_>>,
        queued: &[Arc<Queued>],
        ends: &mut Vec<(u64, bool)>,
    ) -> Result<u64> {
        let frames_size: usize = queued.iter().map(|q| q.frame.lock().len()).sum();
        let own_size = own.map_or(0, |o| o.size);
        let count: usize =
            own.map_or(0, |o| o.count) + queued.iter().map(|q| q.count).sum::<usize>();
        if count == 0 {
            return Ok(base);
        }
        self.maybe_roll(w, base, own_size + frames_size, count)?;
        let Writer { buf, active } = w;
        buf.clear();
        let mut headers: Vec<FrameHeader> = Vec::with_capacity(queued.len() + 1);
        let max_body = self.settings.max_batch_bytes;
        // After each frame is in `buf`: note its header and where it ends.
        let mut add = |buf: &[u8], from: usize, count: usize, deferred: bool| -> Result<u64> {
            let Probe::Frame(h) = frame::probe(&buf[from..], max_body, false) else {
                return Err(LogError::InvalidArgument(
                    "batch could not be encoded".into(),
                ));
            };
            let end = h.base_offset + count as u64;
            headers.push(h);
            ends.push((end, deferred));
            Ok(end)
        };
        let mut next = base;
        if let Some(o) = own {
            o.payload.encode(buf, base);
            next = add(buf, 0, o.count, o.deferred)?;
        }
        for q in queued {
            let from = buf.len();
            let mut frame = q.frame.lock();
            frame::rebase(&mut frame, next);
            buf.extend_from_slice(&frame);
            next = add(buf, from, q.count, q.deferred)?;
        }
        active.append(buf, &headers)?;
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new(); // do not pin a huge buffer after one big batch
        }
        self.log_end.store(next, Ordering::Release);
        Ok(next)
    }

    fn maybe_roll(&self, w: &mut Writer, base: u64, size: usize, count: usize) -> Result<()> {
        let active = &w.active;
        let written = active.size();
        if written == 0 {
            return Ok(());
        }
        let too_big = written + size as u64 > self.settings.segment_bytes;
        let too_old = self
            .settings
            .segment_ms
            .is_some_and(|ms| active.created.elapsed() >= Duration::from_millis(ms));
        let rel_overflow = base - active.base + count as u64 >= u32::MAX as u64;
        if too_big || too_old || rel_overflow {
            self.roll_locked(w, base)?;
        }
        Ok(())
    }

    fn roll_locked(&self, w: &mut Writer, base: u64) -> Result<()> {
        if self.settings.fsync != FsyncPolicy::Never {
            w.active.sync()?;
        }
        w.active.persist_index()?;
        let seg = Arc::new(Segment::create(
            &self.dir,
            base,
            self.settings.index_interval,
            self.settings.reserve(),
        )?);
        if self.settings.fsync == FsyncPolicy::Always {
            segment::sync_dir(&self.dir)?;
        }
        self.segments.write().push(seg.clone());
        w.active = seg;
        Ok(())
    }

    /// Force a roll (tests, operators). No-op when the active segment is empty.
    pub fn roll(&self) -> Result<()> {
        let mut w = self.writer.lock();
        if w.active.size() == 0 {
            return Ok(());
        }
        let base = self.log_end();
        self.roll_locked(&mut w, base)
    }

    /// Make everything below `end` durable; concurrent callers share one sync.
    pub fn sync_to(&self, end: u64) -> Result<()> {
        let mut running = self.sync_running.lock();
        loop {
            if self.durable.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if *running {
                self.sync_done.wait(&mut running);
                continue;
            }
            *running = true;
            drop(running);
            // Everything below `target` is in the segments synced below: older
            // segments were synced when they were rolled (or are dirty and synced here).
            let target = self.log_end.load(Ordering::Acquire);
            let result = self.sync_dirty();
            running = self.sync_running.lock();
            *running = false;
            if result.is_ok() {
                self.durable.fetch_max(target, Ordering::AcqRel);
                *self.last_sync.lock() = Instant::now();
            }
            self.sync_done.notify_all();
            result?;
        }
    }

    fn sync_dirty(&self) -> Result<()> {
        let dirty: Vec<Arc<Segment>> = self
            .segments
            .read()
            .iter()
            .filter(|s| s.dirty.load(Ordering::Acquire))
            .cloned()
            .collect();
        for s in dirty {
            s.sync()?;
        }
        Ok(())
    }

    /// Sync everything written so far (interval policy, close).
    pub fn flush(&self) -> Result<()> {
        self.sync_to(self.log_end())
    }

    fn advance_visible(&self, end: u64) {
        let end = end.min(self.log_end());
        let prev = self.visible.fetch_max(end, Ordering::AcqRel);
        if end > prev {
            self.notify(end);
        }
    }

    fn notify(&self, _end: u64) {
        let v = self.visible.load(Ordering::Acquire);
        self.end_tx.send_replace(v);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.wait_lock.lock();
            self.wait_cv.notify_all();
        }
    }

    /// The partition is being deleted: wake every blocked `wait_for`
    /// (they return false at once from now on).
    pub fn wake_waiters(&self) {
        self.gone.store(true, Ordering::SeqCst);
        let _g = self.wait_lock.lock();
        self.wait_cv.notify_all();
    }

    /// Make everything below `up_to` visible (after `append_deferred`).
    pub fn publish(&self, up_to: u64) -> Result<()> {
        let end = self.log_end();
        if up_to > end {
            return Err(LogError::OffsetOutOfRange {
                offset: up_to,
                start: self.start_offset(),
                end,
            });
        }
        if self.settings.fsync == FsyncPolicy::Always {
            self.sync_to(up_to)?;
        }
        self.advance_visible(up_to);
        Ok(())
    }

    /// Wait until the visible end is beyond `offset`; true when it is.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        if self.visible_end() > offset {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut g = self.wait_lock.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let ok = loop {
            if self.visible.load(Ordering::SeqCst) > offset {
                break true;
            }
            if self.gone.load(Ordering::SeqCst) {
                break false;
            }
            if self.wait_cv.wait_until(&mut g, deadline).timed_out() {
                break self.visible.load(Ordering::SeqCst) > offset;
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }

    /// Segments from the one holding `offset` on.
    fn segments_from(&self, offset: u64) -> Vec<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
        segs[i..].to_vec()
    }

    /// Read up to `max_records` records / `max_bytes` payload bytes from
    /// `from` (at least one record when any is visible), never past the visible end.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<RecordBatch> {
        let visible = self.visible_end();
        let start = self.start_offset();
        if from < start || from > visible {
            return Err(LogError::OffsetOutOfRange {
                offset: from,
                start,
                end: visible,
            });
        }
        let mut out = RecordBatch::default();
        if from == visible || max_records == 0 {
            return Ok(out);
        }
        // Size the per-record columns once (compacted topics may need fewer).
        let expect = (max_records as u64).min(visible - from).min(1 << 16) as usize;
        out.offsets.reserve(expect);
        out.timestamps.reserve(expect);
        out.key_ends.reserve(expect);
        out.value_ends.reserve(expect);
        out.headers.ends.reserve(expect);
        let mut bytes = 0usize;
        for seg in self.segments_from(from) {
            if seg.base >= visible {
                break;
            }
            let written = seg.size();
            let pos = seg
                .index
                .read()
                .position_for_offset(from.saturating_sub(seg.base));
            let done = seg.with_bytes(written, |data| {
                read_segment(
                    &seg,
                    data,
                    pos,
                    from,
                    visible,
                    max_records,
                    max_bytes,
                    &mut bytes,
                    &mut out,
                    &self.settings,
                )
            })??;
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// The first visible offset whose record has a timestamp >= `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let visible = self.visible_end();
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        for seg in segs {
            if seg.base >= visible {
                break;
            }
            if seg.max_ts() < ts {
                continue;
            }
            let written = seg.size();
            let pos = seg.index.read().position_for_time(ts);
            let found = seg.with_bytes(written, |data| -> Result<Option<Option<u64>>> {
                let mut pos = pos as usize;
                while pos < data.len() {
                    let h = frame_at(&seg, data, pos, self.settings.max_batch_bytes)?;
                    if h.base_offset >= visible {
                        return Ok(Some(None));
                    }
                    if h.max_timestamp >= ts {
                        let view = checked_view(&seg, data, pos, &h)?;
                        for i in 0..view.count {
                            let o = view.offset(i);
                            if o >= visible {
                                return Ok(Some(None));
                            }
                            if view.timestamp(i) >= ts {
                                return Ok(Some(Some(o)));
                            }
                        }
                    }
                    pos += h.frame_len();
                }
                Ok(None)
            })??;
            if let Some(answer) = found {
                return Ok(answer);
            }
        }
        Ok(None)
    }

    /// Cut the log back so that `to` is the next offset. Only unpublished
    /// offsets may be cut unless `force`; offsets at or above `to` are then
    /// assigned again (they were never visible, so no reader saw them).
    pub fn truncate(&self, to: u64, force: bool) -> Result<()> {
        let mut w = self.writer.lock();
        let end = self.log_end();
        let start = self.start_offset();
        let visible = self.visible_end();
        if to > end || to < start {
            return Err(LogError::OffsetOutOfRange {
                offset: to,
                start,
                end,
            });
        }
        if to < visible && !force {
            return Err(LogError::InvalidArgument(format!(
                "truncate to {to} would cut published records (visible end {visible}); pass force to do it anyway"
            )));
        }
        if to == end {
            return Ok(());
        }
        let keep = {
            let mut segs = self.segments.write();
            let i = segs.partition_point(|s| s.base <= to).saturating_sub(1);
            for s in segs.drain(i + 1..) {
                s.delete_files();
            }
            segs[i].clone()
        };
        // Find the cut position inside `keep`; a batch straddling `to` is re-encoded.
        let written = keep.size();
        let pos = keep
            .index
            .read()
            .position_for_offset(to.saturating_sub(keep.base));
        let (cut, partial) =
            keep.with_bytes(written, |data| -> Result<(u64, Option<RecordBatch>)> {
                let mut pos = pos as usize;
                while pos < data.len() {
                    let h = frame_at(&keep, data, pos, self.settings.max_batch_bytes)?;
                    if h.base_offset >= to {
                        break;
                    }
                    if h.next_offset() > to {
                        let view = checked_view(&keep, data, pos, &h)?;
                        let mut b = RecordBatch::default();
                        view.copy_into(&mut b, 0, view.index_of(to));
                        return Ok((pos as u64, Some(b)));
                    }
                    pos += h.frame_len();
                }
                Ok((pos as u64, None))
            })??;
        keep.truncate(
            cut,
            to.min(keep.next_offset.load(Ordering::Acquire))
                .max(keep.base),
        )?;
        if let Some(b) = partial.filter(|b| !b.is_empty()) {
            let base = b.offsets[0];
            let last = b.offsets[b.len() - 1];
            let contiguous = last - base + 1 == b.len() as u64;
            let mut buf = Vec::new();
            frame::encode_batch(
                &mut buf,
                base,
                &b,
                if contiguous {
                    None
                } else {
                    Some((last - base) as u32)
                },
            );
            if let Probe::Frame(h) = frame::probe(&buf, usize::MAX / 2, false) {
                keep.append(&buf, &[h])?;
                keep.sync()?;
            }
        }
        keep.next_offset.store(to, Ordering::Release);
        w.active = keep;
        self.log_end.store(to, Ordering::Release);
        self.durable.fetch_min(to, Ordering::AcqRel);
        if self.recovery_point.load(Ordering::Acquire) > to {
            recovery::write_recovery_point(&self.dir, to)?;
            self.recovery_point.store(to, Ordering::Release);
        }
        if visible > to {
            self.visible.store(to, Ordering::Release);
            self.notify(to);
        }
        segment::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Sync, write the active index and a recovery point at the log end.
    pub fn close(&self) -> Result<()> {
        let w = self.writer.lock();
        for s in self.segments.read().iter() {
            s.sync()?;
        }
        w.active.persist_index()?;
        let end = self.log_end();
        self.durable.fetch_max(end, Ordering::AcqRel);
        recovery::write_recovery_point(&self.dir, end)?;
        self.recovery_point.store(end, Ordering::Release);
        Ok(())
    }

    /// Give back the memory of log pages read since the last call (see
    /// [`Segment::release_pages`]).
    pub fn release_pages(&self) {
        let segs: Vec<Arc<Segment>> = self.segments.read().clone();
        for s in &segs {
            s.release_pages();
        }
    }

    /// Persist the durable end as the recovery point when it moved.
    pub fn checkpoint(&self) -> Result<()> {
        let durable = self.durable_end();
        if self.recovery_point.load(Ordering::Acquire) != durable {
            recovery::write_recovery_point(&self.dir, durable)?;
            self.recovery_point.store(durable, Ordering::Release);
        }
        Ok(())
    }

    /// Replace `old` by `new` in the segment list (compaction). Returns false
    /// when `old` is no longer there (it was deleted or truncated meanwhile).
    pub(crate) fn swap_segment(
        &self,
        old: &Arc<Segment>,
        new: Arc<Segment>,
        install: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let mut segs = self.segments.write();
        let Some(i) = segs.iter().position(|s| Arc::ptr_eq(s, old)) else {
            return Ok(false);
        };
        install()?;
        segs[i] = new;
        Ok(true)
    }
}

/// Probe the frame at `pos` of a written region; damage there is corruption.
pub(crate) fn frame_at(
    seg: &Segment,
    data: &[u8],
    pos: usize,
    max_body: usize,
) -> Result<FrameHeader> {
    match frame::probe(&data[pos..], max_body, false) {
        Probe::Frame(h) => Ok(h),
        Probe::Incomplete => Err(corrupt(seg, pos as u64, "batch runs past the written end")),
        Probe::Bad(reason) => Err(corrupt(seg, pos as u64, reason)),
    }
}

/// CRC-check and parse the frame at `pos`.
pub(crate) fn checked_view<'a>(
    seg: &Segment,
    data: &'a [u8],
    pos: usize,
    h: &FrameHeader,
) -> Result<FrameView<'a>> {
    let frame_bytes = &data[pos..pos + h.frame_len()];
    if !frame::crc_ok(frame_bytes) {
        return Err(corrupt(seg, pos as u64, "batch checksum mismatch"));
    }
    FrameView::parse(&frame_bytes[frame::PREFIX_LEN..]).map_err(|r| corrupt(seg, pos as u64, r))
}

#[allow(clippy::too_many_arguments)]
fn read_segment(
    seg: &Segment,
    data: &[u8],
    pos: u64,
    from: u64,
    visible: u64,
    max_records: usize,
    max_bytes: usize,
    bytes: &mut usize,
    out: &mut RecordBatch,
    settings: &PartitionSettings,
) -> Result<bool> {
    let mut pos = pos as usize;
    while pos < data.len() {
        let h = frame_at(seg, data, pos, settings.max_batch_bytes)?;
        if h.base_offset >= visible {
            return Ok(true);
        }
        if h.next_offset() <= from {
            pos += h.frame_len();
            continue;
        }
        let view = checked_view(seg, data, pos, &h)?;
        let i0 = view.index_of(from);
        let i1 = view.index_of(visible).min(i0 + (max_records - out.len()));
        let take_bytes = view.payload_bytes(i0, i1);
        if *bytes + take_bytes > max_bytes {
            // Take records one by one while they fit (at least one overall).
            let mut j = i0;
            while j < i1 {
                let b = view.payload_bytes(j, j + 1);
                if *bytes + b > max_bytes && !(out.is_empty() && j == i0) {
                    break;
                }
                *bytes += b;
                j += 1;
            }
            view.copy_into(out, i0, j);
            return Ok(true);
        }
        let first = out.is_empty();
        view.copy_into(out, i0, i1);
        *bytes += take_bytes;
        if first && i1 > i0 {
            // Size the blobs once from the first batch's record sizes.
            let want = max_records
                .saturating_sub(out.len())
                .min((visible - from) as usize)
                .min(1 << 16);
            let (n, room) = (out.len(), max_bytes.saturating_sub(*bytes));
            let per = |blob: usize| (blob / n).saturating_mul(want).min(room);
            let (values, keys) = (per(out.values.len()), per(out.keys.len()));
            out.values.reserve(values);
            out.keys.reserve(keys);
        }
        if out.len() >= max_records || i1 < view.count && view.offset(i1) >= visible {
            return Ok(true);
        }
        pos += h.frame_len();
    }
    Ok(false)
}
