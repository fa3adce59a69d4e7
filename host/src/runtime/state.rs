//! What a projection's `state` import reads and writes: the [`StateAccess`]
//! trait the processor implements over its store and per-batch write set,
//! an in-memory implementation ([`MemoryState`]), and the slot that lends a
//! caller's `&mut dyn StateAccess` to the host imports for exactly one call.

use std::collections::BTreeMap;
use std::ptr::NonNull;

/// A pond's key-value state as a projection sees it. Reads must see the
/// writes made earlier in the same batch; the processor commits the writes
/// together with the batch's checkpoint.
pub trait StateAccess {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Up to `limit` entries whose keys start with `prefix`, in key order,
    /// strictly after `start_after` when given.
    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// A [`StateAccess`] over an in-memory ordered map (tests, tools, or a
/// write set layered by the processor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateAccess for MemoryState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entries.insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }

    fn scan(
        &mut self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::ops::Bound;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.entries
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Lends a `&mut dyn StateAccess` to the store for the duration of one call.
///
/// Stores must be `'static`, a caller's state handle is not; the slot holds
/// a lifetime-erased pointer that [`StateSlot::lend`] installs and removes
/// around the call, and that host imports dereference only while the call
/// runs on the lending thread.
#[derive(Default)]
pub(crate) struct StateSlot {
    ptr: Option<NonNull<dyn StateAccess + 'static>>,
    pub(crate) writable: bool,
}

// SAFETY: the pointer is only set while a call runs on the thread that owns
// the `&mut` it came from, and cleared before that borrow ends; the store
// (and the slot in it) can move between threads only between calls, when
// the slot is empty.
unsafe impl Send for StateSlot {}

impl StateSlot {
    /// Run `f` with `state` reachable through [`StateSlot::get`]. The slot is
    /// emptied when `f` returns; if `f` unwinds, the caller drops the store
    /// (see `instance::Lifecycle::call`), so no dangling pointer survives.
    pub(crate) fn lend<S, R>(
        slot: impl Fn(&mut S) -> &mut StateSlot,
        store: &mut S,
        state: &mut dyn StateAccess,
        writable: bool,
        f: impl FnOnce(&mut S) -> R,
    ) -> R {
        let ptr = NonNull::from(state);
        // SAFETY: only the lifetime is erased (same fat-pointer layout); the
        // pointer is removed below, before the borrow of `state` ends.
        let ptr: NonNull<dyn StateAccess + 'static> = unsafe { std::mem::transmute(ptr) };
        *slot(store) = StateSlot {
            ptr: Some(ptr),
            writable,
        };
        let result = f(store);
        *slot(store) = StateSlot::default();
        result
    }

    /// The lent state, if a call is in progress.
    pub(crate) fn get(&mut self) -> Option<&mut dyn StateAccess> {
        // SAFETY: see `lend`: the pointer is valid and uniquely borrowed for
        // as long as it is in the slot, and `&mut self` prevents aliasing.
        self.ptr.map(|p| unsafe { &mut *p.as_ptr() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_state_scans_by_prefix_in_order() {
        let mut s = MemoryState::default();
        for k in ["a1", "b1", "b2", "b3", "c1"] {
            s.put(k.as_bytes(), k.as_bytes());
        }
        s.delete(b"b2");
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| {
            v.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(s.scan(b"b", None, 10)), ["b1", "b3"]);
        assert_eq!(keys(s.scan(b"b", Some(b"b1"), 10)), ["b3"]);
        assert_eq!(keys(s.scan(b"", None, 2)), ["a1", "b1"]);
        assert_eq!(s.get(b"c1"), Some(b"c1".to_vec()));
    }

    #[test]
    fn slot_is_empty_outside_a_call() {
        let mut slot = StateSlot::default();
        let mut state = MemoryState::default();
        let seen = StateSlot::lend(
            |s: &mut StateSlot| s,
            &mut slot,
            &mut state,
            true,
            |slot| slot.get().map(|s| s.put(b"k", b"v")).is_some(),
        );
        assert!(seen);
        assert!(slot.get().is_none());
        assert_eq!(state.entries.len(), 1);
    }
}
