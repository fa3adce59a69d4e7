//! [`Emitter`]: builds an enricher's columnar output one record at a time.

use crate::bindings::types;
use crate::event::Event;

/// Collects the records an enricher emits for a batch. Each record is tagged
/// with the event being processed, so the host can give it that event's
/// timestamp and dead-letter the right event.
pub struct Emitter {
    pub(crate) source: u32,
    out: types::Emitted,
}

#[inline]
fn end(len: usize) -> u32 {
    // The host bounds batches far below 4 GiB; saturate rather than wrap.
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Emitter {
    pub(crate) fn with_capacity(events: usize, value_bytes: usize) -> Self {
        Emitter {
            source: 0,
            out: types::Emitted {
                outputs: Vec::with_capacity(events),
                sources: Vec::with_capacity(events),
                key_ends: Vec::with_capacity(events),
                keys: Vec::new(),
                value_ends: Vec::with_capacity(events),
                values: Vec::with_capacity(value_bytes),
                headers: types::HeaderColumns {
                    ends: Vec::with_capacity(events),
                    name_ends: Vec::new(),
                    names: Vec::new(),
                    value_ends: Vec::new(),
                    values: Vec::new(),
                },
            },
        }
    }

    /// Emit a record to output `output` (an index into the manifest's
    /// `outputs`). An empty key means no key.
    #[inline]
    pub fn emit(&mut self, output: u32, key: &[u8], value: &[u8]) {
        self.emit_with_headers(output, key, value, &[]);
    }

    /// Emit a record with headers.
    #[inline]
    pub fn emit_with_headers(
        &mut self,
        output: u32,
        key: &[u8],
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        self.out.values.extend_from_slice(value);
        self.finish(output, key, headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
    }

    /// Emit a record whose value is `value` serialised as JSON (written
    /// straight into the output buffer).
    #[inline]
    pub fn emit_json<T: serde::Serialize + ?Sized>(
        &mut self,
        output: u32,
        key: &[u8],
        value: &T,
    ) -> Result<(), String> {
        let before = self.out.values.len();
        if let Err(e) = serde_json::to_writer(&mut self.out.values, value) {
            self.out.values.truncate(before);
            return Err(format!("cannot serialise output: {e}"));
        }
        self.finish(output, key, std::iter::empty());
        Ok(())
    }

    /// Emit the event unchanged (key, value and headers) to `output`.
    #[inline]
    pub fn forward(&mut self, output: u32, event: &Event<'_>) {
        self.out.values.extend_from_slice(event.value());
        self.finish(
            output,
            event.key(),
            event.headers().map(|(n, v)| (n.as_bytes(), v)),
        );
    }

    /// Number of records emitted so far in this batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.out.outputs.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.out.outputs.is_empty()
    }

    #[inline]
    fn finish<'h>(
        &mut self,
        output: u32,
        key: &[u8],
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        let o = &mut self.out;
        o.value_ends.push(end(o.values.len()));
        o.keys.extend_from_slice(key);
        o.key_ends.push(end(o.keys.len()));
        o.outputs.push(output);
        o.sources.push(self.source);
        let h = &mut o.headers;
        for (name, value) in headers {
            h.names.extend_from_slice(name);
            h.name_ends.push(end(h.names.len()));
            h.values.extend_from_slice(value);
            h.value_ends.push(end(h.values.len()));
        }
        h.ends.push(end(h.name_ends.len()));
    }

    pub(crate) fn into_inner(self) -> types::Emitted {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::batch;

    #[test]
    fn builds_consistent_columns() {
        let b = batch(&[("k1", "v1", &[("h", "x")]), ("k2", "v2", &[])]);
        let mut out = Emitter::with_capacity(2, 16);
        out.source = 0;
        out.forward(1, &b.get(0).unwrap());
        out.source = 1;
        out.emit_json(0, b"", &serde_json::json!({"a": 1})).unwrap();
        out.emit_with_headers(2, b"kk", b"raw", &[("n", b"v")]);
        let e = out.into_inner();
        assert_eq!(e.outputs, vec![1, 0, 2]);
        assert_eq!(e.sources, vec![0, 1, 1]);
        assert_eq!(e.key_ends, vec![2, 2, 4]);
        assert_eq!(e.keys, b"k1kk");
        assert_eq!(e.values, br#"v1{"a":1}raw"#);
        assert_eq!(e.value_ends, vec![2, 9, 12]);
        assert_eq!(e.headers.ends, vec![1, 1, 2]);
        assert_eq!(e.headers.names, b"hn");
    }
}
