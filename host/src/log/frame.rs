//! The on-disk batch frame: how one appended batch is laid out in a segment.
//!
//! A frame is a 12-byte prefix and a columnar body (all little endian):
//!
//! ```text
//! prefix  u32 body_len | u32 crc32c(body_len) ^ LEN_MAGIC | u32 crc32c(body)
//! body    u8 version=1 | u8 flags | u16 0 | u64 base_offset | u32 count
//!         | u32 last_offset_delta | i64 max_timestamp | u32 header_count
//!         | u32 keys_len | u32 values_len | u32 names_len | u32 header_values_len
//!         | [u32; count] offset deltas        (only when flags & HAS_DELTAS)
//!         | [i64; count] timestamps | [u32; count] key_ends | [u32; count] value_ends
//!         | [u32; count] header_ends | [u32; header_count] name_ends
//!         | [u32; header_count] header_value_ends
//!         | keys | values | header names | header values
//! ```
//!
//! The body is the shape of [`RecordBatch`], so a read is a handful of
//! column copies. The length has its own check so a flipped bit in it is
//! told apart from a torn (short) tail. Compacted batches keep their base
//! offset and offset range and carry explicit per-record deltas.

use crate::batch::{Record, RecordBatch};

pub(crate) const PREFIX_LEN: usize = 12;
pub(crate) const BODY_HEADER_LEN: usize = 48;
const LEN_MAGIC: u32 = 0x5745_4952; // "WEIR"
const VERSION: u8 = 1;
const HAS_DELTAS: u8 = 1;

/// The fixed fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub base_offset: u64,
    pub count: u32,
    pub last_delta: u32,
    pub max_timestamp: i64,
    pub body_len: u32,
}

impl FrameHeader {
    /// Offset after the last one this batch covers.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.last_delta as u64 + 1
    }
    pub fn frame_len(&self) -> usize {
        PREFIX_LEN + self.body_len as usize
    }
}

/// What was found at a position of a segment.
#[derive(Debug)]
pub(crate) enum Probe {
    /// A frame whose prefix is intact (body checked only when asked).
    Frame(FrameHeader),
    /// Not enough bytes for the prefix or for the declared body.
    Incomplete,
    /// The frame is damaged.
    Bad(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn len_check(len: u32) -> u32 {
    crc32c::crc32c(&len.to_le_bytes()) ^ LEN_MAGIC
}

/// Inspect the frame starting at `buf[0]`. With `verify`, the body CRC and
/// column structure are checked too.
pub(crate) fn probe(buf: &[u8], max_body: usize, verify: bool) -> Probe {
    if buf.len() < PREFIX_LEN {
        return Probe::Incomplete;
    }
    let body_len = u32_at(buf, 0);
    if u32_at(buf, 4) != len_check(body_len) {
        return Probe::Bad("frame length check mismatch");
    }
    if (body_len as usize) < BODY_HEADER_LEN || body_len as usize > max_body + BODY_HEADER_LEN {
        return Probe::Bad("frame length out of range");
    }
    let end = PREFIX_LEN + body_len as usize;
    if buf.len() < end {
        return Probe::Incomplete;
    }
    let body = &buf[PREFIX_LEN..end];
    if verify && crc32c::crc32c(body) != u32_at(buf, 8) {
        return Probe::Bad("batch checksum mismatch");
    }
    if body[0] != VERSION {
        return Probe::Bad("unknown batch version");
    }
    let header = FrameHeader {
        base_offset: u64_at(body, 4),
        count: u32_at(body, 12),
        last_delta: u32_at(body, 16),
        max_timestamp: u64_at(body, 20) as i64,
        body_len,
    };
    if header.count == 0 || header.last_delta < header.count - 1 {
        return Probe::Bad("batch record count is inconsistent");
    }
    if verify && let Err(reason) = FrameView::parse(body) {
        return Probe::Bad(reason);
    }
    Probe::Frame(header)
}

/// Verify the CRC of a frame already probed (used on the read path).
pub(crate) fn crc_ok(frame: &[u8]) -> bool {
    frame.len() >= PREFIX_LEN && crc32c::crc32c(&frame[PREFIX_LEN..]) == u32_at(frame, 8)
}

/// A parsed, structurally valid body.
pub(crate) struct FrameView<'a> {
    pub base_offset: u64,
    pub count: usize,
    deltas: Option<&'a [u8]>,
    timestamps: &'a [u8],
    key_ends: &'a [u8],
    value_ends: &'a [u8],
    header_ends: &'a [u8],
    name_ends: &'a [u8],
    hvalue_ends: &'a [u8],
    keys: &'a [u8],
    values: &'a [u8],
    names: &'a [u8],
    hvalues: &'a [u8],
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if b.len() < n {
        return Err("batch columns are shorter than declared");
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn ends_valid(ends: &[u8], blob: usize) -> bool {
    let mut prev = 0u32;
    for c in ends.chunks_exact(4) {
        let e = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if e < prev {
            return false;
        }
        prev = e;
    }
    prev as usize == blob
}

#[inline]
fn end_at(ends: &[u8], i: usize) -> u32 {
    if i == 0 { 0 } else { u32_at(ends, (i - 1) * 4) }
}

impl<'a> FrameView<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, &'static str> {
        if body.len() < BODY_HEADER_LEN {
            return Err("batch body too short");
        }
        let flags = body[1];
        let count = u32_at(body, 12) as usize;
        let last_delta = u32_at(body, 16);
        let hcount = u32_at(body, 28) as usize;
        let lens = [32, 36, 40, 44].map(|at| u32_at(body, at) as usize);
        let mut rest = &body[BODY_HEADER_LEN..];
        let deltas = if flags & HAS_DELTAS != 0 {
            Some(take(&mut rest, count * 4)?)
        } else {
            None
        };
        let timestamps = take(&mut rest, count * 8)?;
        let key_ends = take(&mut rest, count * 4)?;
        let value_ends = take(&mut rest, count * 4)?;
        let header_ends = take(&mut rest, count * 4)?;
        let name_ends = take(&mut rest, hcount * 4)?;
        let hvalue_ends = take(&mut rest, hcount * 4)?;
        let keys = take(&mut rest, lens[0])?;
        let values = take(&mut rest, lens[1])?;
        let names = take(&mut rest, lens[2])?;
        let hvalues = take(&mut rest, lens[3])?;
        if !rest.is_empty() {
            return Err("batch has trailing bytes");
        }
        if !(ends_valid(key_ends, keys.len())
            && ends_valid(value_ends, values.len())
            && ends_valid(header_ends, hcount)
            && ends_valid(name_ends, names.len())
            && ends_valid(hvalue_ends, hvalues.len()))
        {
            return Err("batch column ends are inconsistent");
        }
        if let Some(d) = deltas {
            let mut prev: Option<u32> = None;
            for c in d.chunks_exact(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if prev.is_some_and(|p| v <= p) || v > last_delta {
                    return Err("batch offset deltas are not increasing");
                }
                prev = Some(v);
            }
        } else if last_delta as usize + 1 != count {
            return Err("batch without deltas must be contiguous");
        }
        Ok(FrameView {
            base_offset: u64_at(body, 4),
            count,
            deltas,
            timestamps,
            key_ends,
            value_ends,
            header_ends,
            name_ends,
            hvalue_ends,
            keys,
            values,
            names,
            hvalues,
        })
    }

    pub fn offset(&self, i: usize) -> u64 {
        match self.deltas {
            Some(d) => self.base_offset + u32_at(d, i * 4) as u64,
            None => self.base_offset + i as u64,
        }
    }

    pub fn timestamp(&self, i: usize) -> i64 {
        u64_at(self.timestamps, i * 8) as i64
    }

    pub fn key(&self, i: usize) -> &'a [u8] {
        &self.keys[end_at(self.key_ends, i) as usize..end_at(self.key_ends, i + 1) as usize]
    }

    pub fn value(&self, i: usize) -> &'a [u8] {
        &self.values[end_at(self.value_ends, i) as usize..end_at(self.value_ends, i + 1) as usize]
    }

    /// Index of the first record with offset >= `offset`.
    pub fn index_of(&self, offset: u64) -> usize {
        if offset <= self.base_offset {
            return 0;
        }
        match self.deltas {
            None => ((offset - self.base_offset) as usize).min(self.count),
            Some(_) => {
                let (mut lo, mut hi) = (0, self.count);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if self.offset(mid) < offset {
                        lo = mid + 1
                    } else {
                        hi = mid
                    }
                }
                lo
            }
        }
    }

    /// Payload bytes of records `from..to`.
    pub fn payload_bytes(&self, from: usize, to: usize) -> usize {
        let span = |ends: &[u8]| (end_at(ends, to) - end_at(ends, from)) as usize;
        let h0 = end_at(self.header_ends, from) as usize;
        let h1 = end_at(self.header_ends, to) as usize;
        span(self.key_ends)
            + span(self.value_ends)
            + (end_at(self.name_ends, h1) - end_at(self.name_ends, h0)) as usize
            + (end_at(self.hvalue_ends, h1) - end_at(self.hvalue_ends, h0)) as usize
    }

    /// Append records `from..to` to `out`, column by column.
    pub fn copy_into(&self, out: &mut RecordBatch, from: usize, to: usize) {
        if from >= to {
            return;
        }
        match self.deltas {
            None => out
                .offsets
                .extend((from..to).map(|i| self.base_offset + i as u64)),
            Some(_) => out.offsets.extend((from..to).map(|i| self.offset(i))),
        }
        out.timestamps.extend(
            self.timestamps[from * 8..to * 8]
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
        );
        copy_column(
            &mut out.key_ends,
            &mut out.keys,
            self.key_ends,
            self.keys,
            from,
            to,
        );
        copy_column(
            &mut out.value_ends,
            &mut out.values,
            self.value_ends,
            self.values,
            from,
            to,
        );
        let h0 = end_at(self.header_ends, from) as usize;
        let h1 = end_at(self.header_ends, to) as usize;
        let hbase = out.headers.name_ends.len() as u32;
        out.headers.ends.extend(
            self.header_ends[from * 4..to * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) - h0 as u32 + hbase),
        );
        let hs = &mut out.headers;
        copy_column(
            &mut hs.name_ends,
            &mut hs.names,
            self.name_ends,
            self.names,
            h0,
            h1,
        );
        copy_column(
            &mut hs.value_ends,
            &mut hs.values,
            self.hvalue_ends,
            self.hvalues,
            h0,
            h1,
        );
    }
}

/// Copy ends `from..to` (rebased onto `out_blob`) and their blob bytes.
fn copy_column(
    out_ends: &mut Vec<u32>,
    out_blob: &mut Vec<u8>,
    ends: &[u8],
    blob: &[u8],
    from: usize,
    to: usize,
) {
    if from >= to {
        return;
    }
    let start = end_at(ends, from);
    let stop = end_at(ends, to);
    let shift = out_blob.len() as u32;
    out_ends.extend(
        ends[from * 4..to * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) - start + shift),
    );
    out_blob.extend_from_slice(&blob[start as usize..stop as usize]);
}

/// The encoded size of a body with these totals.
fn body_size(count: usize, hcount: usize, payload: usize, deltas: bool) -> usize {
    BODY_HEADER_LEN + count * (if deltas { 24 } else { 20 }) + hcount * 8 + payload
}

struct BodyHead {
    flags: u8,
    base_offset: u64,
    count: u32,
    last_delta: u32,
    max_ts: i64,
    hcount: u32,
    lens: [u32; 4],
}

fn put_head(buf: &mut Vec<u8>, h: &BodyHead) {
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    buf.extend_from_slice(&[VERSION, h.flags, 0, 0]);
    buf.extend_from_slice(&h.base_offset.to_le_bytes());
    buf.extend_from_slice(&h.count.to_le_bytes());
    buf.extend_from_slice(&h.last_delta.to_le_bytes());
    buf.extend_from_slice(&h.max_ts.to_le_bytes());
    buf.extend_from_slice(&h.hcount.to_le_bytes());
    for l in h.lens {
        buf.extend_from_slice(&l.to_le_bytes());
    }
}

/// Renumber the single frame in `frame` (encoded with any base offset) to
/// start at `base_offset`, re-sealing its checksum.
pub(crate) fn rebase(frame: &mut [u8], base_offset: u64) {
    let at = PREFIX_LEN + 4; // body: version, flags, 2 reserved bytes, then the base offset
    frame[at..at + 8].copy_from_slice(&base_offset.to_le_bytes());
    seal(frame, 0);
}

/// Fill in the prefix of the frame that starts at `buf[start]`.
fn seal(buf: &mut [u8], start: usize) {
    let body_len = (buf.len() - start - PREFIX_LEN) as u32;
    let crc = crc32c::crc32c(&buf[start + PREFIX_LEN..]);
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&len_check(body_len).to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Encoded size of `records` (to check limits before encoding).
pub(crate) fn records_size(records: &[Record]) -> usize {
    let mut payload = 0;
    let mut hcount = 0;
    for r in records {
        payload += r.key.len() + r.value.len();
        hcount += r.headers.len();
        payload += r
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    }
    PREFIX_LEN + body_size(records.len(), hcount, payload, false)
}

/// Append one frame holding `records` (numbered from `base_offset`) to `buf`.
/// The caller has checked that `records` is non-empty and within limits.
pub(crate) fn encode_records(buf: &mut Vec<u8>, base_offset: u64, records: &[Record]) {
    let start = buf.len();
    let n = records.len();
    // One pass for the totals, one to fill every column: appends of small
    // records are bound by this loop, not by the bytes.
    let (mut keys, mut values, mut hcount, mut hnames, mut hvalues) = (0, 0, 0, 0, 0);
    let mut max_ts = i64::MIN;
    for r in records {
        keys += r.key.len();
        values += r.value.len();
        hcount += r.headers.len();
        for (name, value) in &r.headers {
            hnames += name.len();
            hvalues += value.len();
        }
        max_ts = max_ts.max(r.timestamp);
    }
    let head = BodyHead {
        flags: 0,
        base_offset,
        count: n as u32,
        last_delta: n as u32 - 1,
        max_ts,
        hcount: hcount as u32,
        lens: [keys, values, hnames, hvalues].map(|l| l as u32),
    };
    let payload = keys + values + hnames + hvalues;
    buf.reserve(PREFIX_LEN + body_size(n, hcount, payload, false));
    put_head(buf, &head);
    let columns = buf.len();
    buf.resize(start + PREFIX_LEN + body_size(n, hcount, payload, false), 0);
    let out = &mut buf[columns..];
    // Where each column starts, in frame order.
    let mut ts_at = 0;
    let mut key_end_at = 8 * n;
    let mut value_end_at = key_end_at + 4 * n;
    let mut header_end_at = value_end_at + 4 * n;
    let mut name_end_at = header_end_at + 4 * n;
    let mut hvalue_end_at = name_end_at + 4 * hcount;
    let mut key_at = hvalue_end_at + 4 * hcount;
    let mut value_at = key_at + keys;
    let mut name_at = value_at + values;
    let mut hvalue_at = name_at + hnames;
    let (key_base, value_base, name_base, hvalue_base) = (key_at, value_at, name_at, hvalue_at);
    let mut put = |at: &mut usize, bytes: &[u8]| {
        out[*at..*at + bytes.len()].copy_from_slice(bytes);
        *at += bytes.len();
    };
    let mut header_end = 0u32;
    for r in records {
        put(&mut ts_at, &r.timestamp.to_le_bytes());
        put(&mut key_at, &r.key);
        put(&mut value_at, &r.value);
        put(&mut key_end_at, &((key_at - key_base) as u32).to_le_bytes());
        put(
            &mut value_end_at,
            &((value_at - value_base) as u32).to_le_bytes(),
        );
        header_end += r.headers.len() as u32;
        put(&mut header_end_at, &header_end.to_le_bytes());
        for (name, value) in &r.headers {
            put(&mut name_at, name.as_bytes());
            put(&mut hvalue_at, value);
            put(
                &mut name_end_at,
                &((name_at - name_base) as u32).to_le_bytes(),
            );
            put(
                &mut hvalue_end_at,
                &((hvalue_at - hvalue_base) as u32).to_le_bytes(),
            );
        }
    }
    seal(buf, start);
}

/// Encoded size of a columnar batch.
pub(crate) fn batch_size(b: &RecordBatch, deltas: bool) -> usize {
    PREFIX_LEN
        + body_size(
            b.len(),
            b.headers.name_ends.len(),
            b.payload_bytes(),
            deltas,
        )
}

fn put_u32s(buf: &mut Vec<u8>, v: &[u32]) {
    for x in v {
        buf.extend_from_slice(&x.to_le_bytes());
    }
}

/// Append one frame holding a validated, non-empty columnar batch.
///
/// With `offsets = Some((base, last_delta))` the batch's own `offsets` are
/// kept (compaction); otherwise records are numbered from `base_offset`.
pub(crate) fn encode_batch(
    buf: &mut Vec<u8>,
    base_offset: u64,
    b: &RecordBatch,
    keep_offsets: Option<u32>,
) {
    let start = buf.len();
    buf.reserve(batch_size(b, keep_offsets.is_some()));
    let head = BodyHead {
        flags: if keep_offsets.is_some() {
            HAS_DELTAS
        } else {
            0
        },
        base_offset,
        count: b.len() as u32,
        last_delta: keep_offsets.unwrap_or(b.len() as u32 - 1),
        max_ts: b.timestamps.iter().copied().max().unwrap_or(i64::MIN),
        hcount: b.headers.name_ends.len() as u32,
        lens: [
            b.keys.len(),
            b.values.len(),
            b.headers.names.len(),
            b.headers.values.len(),
        ]
        .map(|l| l as u32),
    };
    put_head(buf, &head);
    if keep_offsets.is_some() {
        for &o in &b.offsets {
            buf.extend_from_slice(&((o - base_offset) as u32).to_le_bytes());
        }
    }
    for t in &b.timestamps {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    put_u32s(buf, &b.key_ends);
    put_u32s(buf, &b.value_ends);
    put_u32s(buf, &b.headers.ends);
    put_u32s(buf, &b.headers.name_ends);
    put_u32s(buf, &b.headers.value_ends);
    buf.extend_from_slice(&b.keys);
    buf.extend_from_slice(&b.values);
    buf.extend_from_slice(&b.headers.names);
    buf.extend_from_slice(&b.headers.values);
    seal(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<Record> {
        vec![
            Record {
                key: b"k1".to_vec(),
                value: b"hello".to_vec(),
                headers: vec![("a".into(), b"1".to_vec())],
                timestamp: 5,
            },
            Record {
                key: vec![],
                value: b"".to_vec(),
                headers: vec![],
                timestamp: 3,
            },
            Record {
                key: b"k3".to_vec(),
                value: b"world!".to_vec(),
                headers: vec![("b".into(), vec![]), ("c".into(), b"xyz".to_vec())],
                timestamp: 9,
            },
        ]
    }

    fn body(buf: &[u8]) -> &[u8] {
        &buf[PREFIX_LEN..]
    }

    #[test]
    fn records_round_trip_through_a_frame() {
        let records = recs();
        let mut buf = Vec::new();
        encode_records(&mut buf, 100, &records);
        assert_eq!(buf.len(), records_size(&records));
        let Probe::Frame(h) = probe(&buf, 1 << 20, true) else {
            panic!("frame not accepted")
        };
        assert_eq!(
            (h.base_offset, h.count, h.max_timestamp, h.next_offset()),
            (100, 3, 9, 103)
        );
        let view = FrameView::parse(body(&buf)).expect("parse");
        let mut out = RecordBatch::default();
        view.copy_into(&mut out, 0, 3);
        assert!(out.validate().is_ok());
        assert_eq!(out.offsets, vec![100, 101, 102]);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(&out.record(i), r);
        }
        // Partial copies rebase ends correctly and append after existing data.
        view.copy_into(&mut out, 1, 3);
        assert!(out.validate().is_ok());
        assert_eq!(out.record(4), records[2]);
        assert_eq!(
            view.payload_bytes(0, 3),
            out.payload_bytes() - view.payload_bytes(1, 3)
        );
    }

    /// Both encoders write the same bytes for the same records.
    #[test]
    fn records_and_columnar_batches_encode_alike() {
        let records = recs();
        let mut b = RecordBatch::default();
        for (i, r) in records.iter().enumerate() {
            b.push(7 + i as u64, r);
        }
        let (mut from_records, mut from_batch) = (vec![0xAA], vec![0xAA]);
        encode_records(&mut from_records, 7, &records);
        encode_batch(&mut from_batch, 7, &b, None);
        assert_eq!(from_records, from_batch);
    }

    #[test]
    fn a_rebased_frame_equals_one_encoded_at_that_offset() {
        let (mut moved, mut direct) = (Vec::new(), Vec::new());
        encode_records(&mut moved, 0, &recs());
        rebase(&mut moved, 1234);
        encode_records(&mut direct, 1234, &recs());
        assert_eq!(moved, direct);
        assert!(matches!(probe(&moved, 1 << 20, true), Probe::Frame(h) if h.base_offset == 1234));
    }

    #[test]
    fn columnar_batches_keep_sparse_offsets() {
        let mut b = RecordBatch::default();
        for (o, r) in [(10u64, &recs()[0]), (13, &recs()[2])] {
            b.push(o, r);
        }
        let mut buf = Vec::new();
        encode_batch(&mut buf, 10, &b, Some(4));
        let Probe::Frame(h) = probe(&buf, 1 << 20, true) else {
            panic!("frame not accepted")
        };
        assert_eq!(h.next_offset(), 15);
        let view = FrameView::parse(body(&buf)).expect("parse");
        assert_eq!(view.index_of(11), 1);
        assert_eq!(view.index_of(14), 2);
        let mut out = RecordBatch::default();
        view.copy_into(&mut out, 0, 2);
        assert_eq!(out, b);
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        encode_records(&mut buf, 0, &recs());
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    probe(&buf[..cut], 1 << 20, true),
                    Probe::Incomplete | Probe::Bad(_)
                ),
                "cut {cut}"
            );
        }
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(probe(&b, 1 << 20, true), Probe::Bad(_) | Probe::Incomplete),
                "bit {bit}"
            );
        }
    }
}
