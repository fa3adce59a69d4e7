//! [`State`]: a projection's handle on its pond's key-value state.
//!
//! Writes go to the host, which commits them atomically with the batch's
//! checkpoint; reads see earlier writes of the same batch. During `query`
//! the handle is shared (`&State`), so writes do not compile — and the host
//! refuses them anyway.

use crate::bindings::projection::weir::plugin::state as wit_state;

/// Handle on the pond's state. Obtained from the SDK, never constructed.
pub struct State {
    _private: (),
}

impl State {
    pub(crate) fn new() -> Self {
        State { _private: () }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        wit_state::get(key)
    }

    /// The value under `key` parsed as JSON; an error if it does not parse.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                format!(
                    "state value under {:?} is not valid JSON: {e}",
                    String::from_utf8_lossy(key)
                )
            }),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        wit_state::put(key, value);
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
        wit_state::delete(key);
    }

    /// Up to `limit` entries whose keys start with `prefix`, in key order,
    /// strictly after `start_after` when given.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        wit_state::scan(prefix, start_after, limit)
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
