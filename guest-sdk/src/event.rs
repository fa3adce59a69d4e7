//! Zero-copy views over the columnar batch the host sends.
//!
//! [`Batch`] wraps the WIT `batch` record; [`Event`] is one event of it, a
//! handful of slices into the batch's blobs. Out-of-range spans (which a
//! correct host never sends) read as empty rather than panicking.

use crate::bindings::types;
use std::ops::Range;

/// A batch of events from one partition of one topic, in offset order.
pub struct Batch {
    pub(crate) inner: types::Batch,
}

/// One event of a [`Batch`]: borrowed, nothing copied.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    batch: &'a types::Batch,
    index: usize,
}

#[inline]
pub(crate) fn span(ends: &[u32], i: usize) -> Range<usize> {
    let start = if i == 0 {
        0
    } else {
        ends.get(i - 1).copied().unwrap_or(0) as usize
    };
    let end = ends.get(i).copied().unwrap_or(0) as usize;
    start..end.max(start)
}

#[inline]
fn slice<'a>(blob: &'a [u8], ends: &[u32], i: usize) -> &'a [u8] {
    blob.get(span(ends, i)).unwrap_or(&[])
}

impl Batch {
    pub(crate) fn new(inner: types::Batch) -> Self {
        Batch { inner }
    }

    /// The topic the events were read from.
    #[inline]
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The partition the events were read from.
    #[inline]
    pub fn partition(&self) -> u32 {
        self.inner.partition
    }

    /// Number of events.
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.offsets.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inner.offsets.is_empty()
    }

    /// Event `index` (0-based), if it exists.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Event<'_>> {
        (index < self.len()).then_some(Event {
            batch: &self.inner,
            index,
        })
    }

    /// All events, in offset order.
    #[inline]
    pub fn events(&self) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        (0..self.len()).map(move |index| Event {
            batch: &self.inner,
            index,
        })
    }
}

impl<'a> Event<'a> {
    /// Position of this event in its batch.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The event's offset in its partition.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.batch.offsets.get(self.index).copied().unwrap_or(0)
    }

    /// Milliseconds since the Unix epoch.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.batch.timestamps.get(self.index).copied().unwrap_or(0)
    }

    #[inline]
    pub fn topic(&self) -> &'a str {
        &self.batch.topic
    }

    #[inline]
    pub fn partition(&self) -> u32 {
        self.batch.partition
    }

    /// The key; empty when the event has no key.
    #[inline]
    pub fn key(&self) -> &'a [u8] {
        slice(&self.batch.keys, &self.batch.key_ends, self.index)
    }

    /// The key as UTF-8, if it is.
    #[inline]
    pub fn key_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.key()).ok()
    }

    #[inline]
    pub fn value(&self) -> &'a [u8] {
        slice(&self.batch.values, &self.batch.value_ends, self.index)
    }

    /// The value parsed as JSON (borrowing from the batch where `T` allows).
    #[inline]
    pub fn json<T: serde::Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.value())
    }

    /// The event's headers as (name, value); names that are not UTF-8 are skipped.
    #[inline]
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let h = &self.batch.headers;
        span(&h.ends, self.index).filter_map(move |j| {
            let name = std::str::from_utf8(slice(&h.names, &h.name_ends, j)).ok()?;
            Some((name, slice(&h.values, &h.value_ends, j)))
        })
    }

    /// The value of the first header called `name`.
    #[inline]
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A batch of (key, value, headers) built the way the host builds one.
    pub(crate) fn batch(events: &[(&str, &str, &[(&str, &str)])]) -> Batch {
        let mut b = types::Batch {
            topic: "orders".into(),
            partition: 3,
            offsets: vec![],
            timestamps: vec![],
            key_ends: vec![],
            keys: vec![],
            value_ends: vec![],
            values: vec![],
            headers: types::HeaderColumns {
                ends: vec![],
                name_ends: vec![],
                names: vec![],
                value_ends: vec![],
                values: vec![],
            },
        };
        for (i, (k, v, hs)) in events.iter().enumerate() {
            b.offsets.push(100 + i as u64);
            b.timestamps.push(1000 + i as i64);
            b.keys.extend_from_slice(k.as_bytes());
            b.key_ends.push(b.keys.len() as u32);
            b.values.extend_from_slice(v.as_bytes());
            b.value_ends.push(b.values.len() as u32);
            for (n, hv) in hs.iter() {
                b.headers.names.extend_from_slice(n.as_bytes());
                b.headers.name_ends.push(b.headers.names.len() as u32);
                b.headers.values.extend_from_slice(hv.as_bytes());
                b.headers.value_ends.push(b.headers.values.len() as u32);
            }
            b.headers.ends.push(b.headers.name_ends.len() as u32);
        }
        Batch::new(b)
    }

    #[test]
    fn views_slice_the_columns() {
        let b = batch(&[
            ("a", r#"{"x":1}"#, &[("h", "1"), ("g", "2")]),
            ("", "two", &[]),
        ]);
        assert_eq!(b.len(), 2);
        let e0 = b.get(0).unwrap();
        assert_eq!(
            (e0.key(), e0.value(), e0.offset(), e0.timestamp()),
            (&b"a"[..], &br#"{"x":1}"#[..], 100, 1000)
        );
        assert_eq!(e0.header("g"), Some(&b"2"[..]));
        assert_eq!(e0.json::<serde_json::Value>().unwrap()["x"], 1);
        let e1 = b.get(1).unwrap();
        assert_eq!((e1.key(), e1.value()), (&b""[..], &b"two"[..]));
        assert_eq!(e1.headers().count(), 0);
        assert!(b.get(2).is_none());
        assert_eq!(e1.topic(), "orders");
    }

    #[test]
    fn bad_spans_read_as_empty() {
        let mut b = batch(&[("k", "v", &[])]);
        b.inner.value_ends[0] = 99;
        assert_eq!(b.get(0).unwrap().value(), b"");
    }
}
