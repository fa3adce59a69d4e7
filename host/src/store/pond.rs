//! Pond state access: committed reads ([`PondReader`]), pending writes
//! ([`WriteSet`]) and prefix scans that merge the two ([`scan_merged`]).
//!
//! A processor applies batches against "pending writes over committed
//! state": reads see the batch's own earlier writes (the WIT `state.get`
//! promise), and the write set of one or more batches is committed with
//! their checkpoint in one store transaction. Writes to the same key
//! coalesce, so a hot key costs one store write per commit, not per event.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::ReadOnlyTable;

use super::Result;

/// Pending writes: key → `Some(value)` (put) or `None` (delete), in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.writes.insert(key, None);
    }

    /// `None`: not written here; `Some(None)`: deleted here; `Some(Some(v))`: put here.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|v| v.as_deref())
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Approximate bytes written (an upper bound: overwrites are counted twice).
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.writes.iter()
    }

    /// Fold `later` into `self`; `later`'s writes win.
    pub fn merge(&mut self, later: WriteSet) {
        self.bytes += later.bytes;
        if self.writes.is_empty() {
            self.writes = later.writes;
        } else {
            self.writes.extend(later.writes);
        }
    }

    pub fn clear(&mut self) {
        self.writes.clear();
        self.bytes = 0;
    }

    /// The writes, by key: `Some(value)` put, `None` deleted.
    pub fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.writes.into_iter()
    }

    /// Pending entries with `prefix` strictly after `start_after`, in key order.
    pub fn range<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let lower = lower_bound(prefix, start_after);
        self.writes
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }
}

/// Where a scan over `prefix` after `start_after` begins.
fn lower_bound<'a>(prefix: &'a [u8], start_after: Option<&'a [u8]>) -> Bound<&'a [u8]> {
    match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}

/// Committed state of one pond generation as of one read transaction.
pub struct PondReader {
    table: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

impl PondReader {
    pub(super) fn new(table: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>) -> Self {
        PondReader { table }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.table {
            None => Ok(None),
            Some(t) => Ok(t.get(key)?.map(|v| v.value().to_vec())),
        }
    }

    /// Up to `limit` committed entries with `prefix`, strictly after `start_after`.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        scan_merged(self, &WriteSet::default(), prefix, start_after, limit)
    }

    /// Visit committed entries with `prefix` strictly after `start_after`
    /// until `f` returns false.
    fn visit(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let Some(t) = &self.table else { return Ok(()) };
        let lower = lower_bound(prefix, start_after);
        for entry in t.range::<&[u8]>((lower, Bound::Unbounded))? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) || !f(key, v.value()) {
                break;
            }
        }
        Ok(())
    }
}

/// Up to `limit` entries with `prefix` strictly after `start_after` of the
/// committed state overlaid with `pending` (pending puts replace, pending
/// deletes hide), in key order.
pub fn scan_merged(
    committed: &PondReader,
    pending: &WriteSet,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut overlay = pending.range(prefix, start_after).peekable();
    // Emit pending entries that sort before `key` (and, when equal, consume it).
    let mut drain_until = |key: Option<&[u8]>, out: &mut Vec<(Vec<u8>, Vec<u8>)>| -> bool {
        while let Some(&(pk, pv)) = overlay.peek() {
            if key.is_some_and(|k| pk > k) {
                break;
            }
            overlay.next();
            if key == Some(pk) {
                // Same key: the pending write decides; the caller skips the committed one.
                if let Some(v) = pv {
                    out.push((pk.to_vec(), v.to_vec()));
                }
                return true;
            }
            if let Some(v) = pv {
                out.push((pk.to_vec(), v.to_vec()));
                if out.len() >= limit {
                    return true;
                }
            }
        }
        false
    };
    committed.visit(prefix, start_after, |k, v| {
        let shadowed = drain_until(Some(k), &mut out);
        if out.len() >= limit {
            return false;
        }
        if !shadowed {
            out.push((k.to_vec(), v.to_vec()));
        }
        out.len() < limit
    })?;
    if out.len() < limit {
        drain_until(None, &mut out);
    }
    out.truncate(limit);
    Ok(out)
}
