//! [`State`]: a projection's handle on its pond's key-value state.
//!
//! Writes go to the host, which commits them atomically with the batch's
//! checkpoint; reads see earlier writes of the same batch. During `query`
//! the handle is shared (`&State`), so writes do not compile — and the host
//! refuses them anyway.
//!
//! Every host call crosses the component boundary, so the handle keeps a
//! write-back cache for the duration of one `apply` call: a key read or
//! written many times in a batch costs at most one host `get` and one host
//! `put`/`delete`, sent when the batch's events have all been applied.
//! The cache is invisible to plugin code: reads see pending writes, a scan
//! first sends the pending writes so the host's answer includes them, and a
//! batch that fails sends nothing more (the host discards the batch's
//! writes anyway). Nothing is cached across calls: between batches other
//! partitions of the pond may change the state.

use crate::bindings::projection::weir::plugin::state as wit_state;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Past this many cached bytes (keys + values), pending writes are sent and
/// the cache starts over, so a batch over huge values cannot exhaust the
/// instance's memory.
const CACHE_LIMIT_BYTES: usize = 16 << 20;

/// Where a [`State`]'s reads and writes go: the host's `state` import in a
/// plugin, an in-memory map in tests.
pub(crate) trait Backing {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&self, key: &[u8], value: &[u8]);
    fn delete(&self, key: &[u8]);
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// The host's `state` import.
struct HostState;

impl Backing for HostState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        wit_state::get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        wit_state::put(key, value);
    }
    fn delete(&self, key: &[u8]) {
        wit_state::delete(key);
    }
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        wit_state::scan(prefix, start_after, limit)
    }
}

/// A fast, deterministic hasher for short keys (FNV-1a), for plugins'
/// per-batch maps: `HashMap<String, T, KeyHasher>`. std's default SipHash
/// costs more than the rest of a small event's work, and its seed comes
/// from the sandbox's randomness.
pub type KeyHasher = BuildHasherDefault<Fnv>;

/// The [`Hasher`] of [`KeyHasher`].
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

struct Cached {
    /// `None`: absent (never stored, or deleted in this batch).
    value: Option<Vec<u8>>,
    /// Written in this batch and not yet sent to the host.
    dirty: bool,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Vec<u8>, Cached, KeyHasher>,
    dirty: usize,
    bytes: usize,
}

impl Cache {
    fn size(key: &[u8], value: &Option<Vec<u8>>) -> usize {
        key.len() + value.as_ref().map_or(0, Vec::len) + 32
    }

    /// Send pending writes to the host; the cache stays valid.
    fn flush(&mut self, backing: &dyn Backing) {
        if self.dirty == 0 {
            return;
        }
        for (key, cached) in self.entries.iter_mut().filter(|(_, c)| c.dirty) {
            match &cached.value {
                Some(v) => backing.put(key, v),
                None => backing.delete(key),
            }
            cached.dirty = false;
        }
        self.dirty = 0;
    }

    fn store(&mut self, backing: &dyn Backing, key: &[u8], value: Option<&[u8]>) {
        if let Some(cached) = self.entries.get_mut(key) {
            let old = Cache::size(key, &cached.value);
            match (value, &mut cached.value) {
                (Some(new), Some(buf)) => {
                    buf.clear();
                    buf.extend_from_slice(new);
                }
                (new, slot) => *slot = new.map(<[u8]>::to_vec),
            }
            if !cached.dirty {
                cached.dirty = true;
                self.dirty += 1;
            }
            self.bytes = self.bytes - old + Cache::size(key, &cached.value);
        } else {
            self.make_room(backing);
            let value = value.map(<[u8]>::to_vec);
            self.bytes += Cache::size(key, &value);
            self.entries
                .insert(key.to_vec(), Cached { value, dirty: true });
            self.dirty += 1;
        }
    }

    fn make_room(&mut self, backing: &dyn Backing) {
        if self.bytes >= CACHE_LIMIT_BYTES {
            self.flush(backing);
            self.entries.clear();
            self.bytes = 0;
        }
    }
}

/// Handle on the pond's state. Obtained from the SDK, never constructed.
pub struct State {
    backing: Box<dyn Backing>,
    cache: RefCell<Cache>,
}

impl State {
    pub(crate) fn new() -> Self {
        State::with_backing(Box::new(HostState))
    }

    pub(crate) fn with_backing(backing: Box<dyn Backing>) -> Self {
        State {
            backing,
            cache: RefCell::new(Cache::default()),
        }
    }

    /// Send the writes still held by the cache to the host (end of a
    /// successful `apply`).
    pub(crate) fn flush(&mut self) {
        self.cache.get_mut().flush(&*self.backing);
    }

    /// Run `f` over the current value under `key` without copying it.
    fn with_value<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let mut cache = self.cache.borrow_mut();
        if let Some(cached) = cache.entries.get(key) {
            return f(cached.value.as_deref());
        }
        let value = self.backing.get(key);
        let result = f(value.as_deref());
        cache.make_room(&*self.backing);
        cache.bytes += Cache::size(key, &value);
        cache.entries.insert(
            key.to_vec(),
            Cached {
                value,
                dirty: false,
            },
        );
        result
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.with_value(key, |v| v.map(<[u8]>::to_vec))
    }

    /// The value under `key` parsed as JSON; an error if it does not parse.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, String> {
        self.with_value(key, |value| match value {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes).map(Some).map_err(|e| {
                format!(
                    "state value under {:?} is not valid JSON: {e}",
                    String::from_utf8_lossy(key)
                )
            }),
        })
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.cache.get_mut().store(&*self.backing, key, Some(value));
    }

    pub fn put_json<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &[u8],
        value: &T,
    ) -> Result<(), String> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| format!("cannot serialise state: {e}"))?;
        self.put(key, &bytes);
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.cache.get_mut().store(&*self.backing, key, None);
    }

    /// Up to `limit` entries whose keys start with `prefix`, in key order,
    /// strictly after `start_after` when given.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        // The host merges this batch's writes into its answer: send ours first.
        self.cache.borrow_mut().flush(&*self.backing);
        self.backing.scan(prefix, start_after, limit)
    }

    /// Every entry under `prefix`, fetched page by page.
    pub fn scan_all(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        const PAGE: u32 = 256;
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let after = all.last().map(|(k, _)| k.clone());
            let page = self.scan(prefix, after.as_deref(), PAGE);
            let done = page.len() < PAGE as usize;
            all.extend(page);
            if done {
                return all;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// An in-memory host that counts the calls it gets.
    #[derive(Default)]
    pub(crate) struct FakeHost {
        pub entries: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
        pub gets: RefCell<usize>,
        pub writes: RefCell<usize>,
    }

    impl Backing for Rc<FakeHost> {
        fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            *self.gets.borrow_mut() += 1;
            self.entries.borrow().get(key).cloned()
        }
        fn put(&self, key: &[u8], value: &[u8]) {
            *self.writes.borrow_mut() += 1;
            self.entries
                .borrow_mut()
                .insert(key.to_vec(), value.to_vec());
        }
        fn delete(&self, key: &[u8]) {
            *self.writes.borrow_mut() += 1;
            self.entries.borrow_mut().remove(key);
        }
        fn scan(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: u32,
        ) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.entries
                .borrow()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix) && start_after.is_none_or(|a| &k[..] > a))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    }

    /// A fake host holding `entries`.
    pub(crate) fn host_with(entries: &[(&str, &str)]) -> Rc<FakeHost> {
        let host = Rc::new(FakeHost::default());
        for (k, v) in entries {
            host.entries
                .borrow_mut()
                .insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        host
    }

    pub(crate) fn state_over(host: &Rc<FakeHost>) -> State {
        State::with_backing(Box::new(host.clone()))
    }

    #[test]
    fn reads_see_writes_of_the_batch_and_the_host_gets_one_call_per_key() {
        let host = host_with(&[("a", "1")]);
        let mut state = state_over(&host);
        for i in 2..10 {
            let v = state.get(b"a").unwrap();
            assert_eq!(v, (i - 1).to_string().into_bytes());
            state.put(b"a", i.to_string().as_bytes());
        }
        state.put(b"b", b"x");
        state.delete(b"b");
        assert_eq!(state.get(b"b"), None);
        assert_eq!(state.get(b"z"), None);
        assert_eq!(*host.gets.borrow(), 2, "one host read per key: a, z");
        assert_eq!(*host.writes.borrow(), 0, "nothing sent before the flush");
        state.flush();
        assert_eq!(*host.writes.borrow(), 2, "one write per written key");
        assert_eq!(host.entries.borrow().get(&b"a"[..]), Some(&b"9".to_vec()));
        assert!(!host.entries.borrow().contains_key(&b"b"[..]));
        // A second flush has nothing to send.
        state.flush();
        assert_eq!(*host.writes.borrow(), 2);
    }

    #[test]
    fn scan_sees_pending_puts_and_deletes() {
        let host = host_with(&[("p1", "old"), ("p2", "old"), ("p3", "old"), ("q1", "old")]);
        let mut state = state_over(&host);
        state.put(b"p4", b"new");
        state.delete(b"p2");
        state.put(b"p1", b"new");
        let keys: Vec<(String, String)> = state
            .scan_all(b"p")
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            keys,
            [("p1", "new"), ("p3", "old"), ("p4", "new")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // Reads after the scan still see the batch's writes.
        assert_eq!(state.get(b"p2"), None);
        assert_eq!(state.get(b"p1"), Some(b"new".to_vec()));
    }

    #[test]
    fn json_reads_parse_cached_values() {
        let host = host_with(&[("bad", "{")]);
        let mut state = state_over(&host);
        state.put_json(b"k", &serde_json::json!({"n": 1})).unwrap();
        let v: serde_json::Value = state.get_json(b"k").unwrap().unwrap();
        assert_eq!(v["n"], 1);
        assert!(state.get_json::<serde_json::Value>(b"bad").is_err());
        assert_eq!(state.get_json::<serde_json::Value>(b"none").unwrap(), None);
    }

    #[test]
    fn a_huge_batch_sends_writes_early_and_stays_correct() {
        let host = Rc::new(FakeHost::default());
        let mut state = state_over(&host);
        let value = vec![7u8; 1 << 20];
        for i in 0..40u32 {
            state.put(&i.to_be_bytes(), &value);
        }
        assert!(state.cache.borrow().bytes < CACHE_LIMIT_BYTES + (2 << 20));
        assert!(*host.writes.borrow() > 0, "the cache was flushed when full");
        state.put(&0u32.to_be_bytes(), b"last");
        state.flush();
        assert_eq!(host.entries.borrow().len(), 40);
        assert_eq!(state.get(&0u32.to_be_bytes()), Some(b"last".to_vec()));
        assert_eq!(state.get(&39u32.to_be_bytes()), Some(value));
    }
}
