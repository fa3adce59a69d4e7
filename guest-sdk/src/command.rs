//! The decider pattern for services: [`CommandHandler`] with serde types,
//! and the codec between them and the WIT `command` / `event` records.
//!
//! Commands and events use serde's default externally tagged enum form:
//! WIT command `{ name: "deposit", data: {"amount":5} }` is the JSON
//! `{"deposit":{"amount":5}}`; an event serialised as `{"deposited":{..}}`
//! (or as the bare string `"closed"` for a unit variant) becomes the WIT
//! event named `deposited` (or `closed`, with data `null`).

use crate::bindings::types;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Facts about the command beyond its body.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    /// Unique per command (retries share it).
    pub id: String,
    /// The aggregate the command is addressed to.
    pub aggregate: String,
    /// The command's name as sent.
    pub name: String,
}

/// A refused command: a stable machine-readable `code` and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// An event-sourced command handler (the decider pattern).
///
/// The host rebuilds an aggregate's state by folding its events through
/// `evolve` (starting from `State::default()`), calls `decide` with the
/// command, appends the events it returns and replies.
pub trait CommandHandler: Sized + 'static {
    /// The commands, as an externally tagged serde enum.
    type Command: DeserializeOwned;
    /// The events, as an externally tagged serde enum.
    type Event: Serialize + DeserializeOwned;
    /// The aggregate's state; `Default` is the state before any event.
    type State: Serialize + DeserializeOwned + Default;

    /// Called once per instance with the manifest's `config` JSON.
    fn init(config: &str) -> Result<Self, String>;

    /// Which events `command` causes given `state`, or why it is refused.
    fn decide(
        &self,
        command: Self::Command,
        state: &Self::State,
        meta: &CommandMeta,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// Apply one event to the state. Must be deterministic and total.
    fn evolve(state: &mut Self::State, event: &Self::Event);
}

/// The JSON text `{"<name>": <data>}` for a command or event record.
pub(crate) fn tagged_json(name: &str, data: &[u8]) -> Result<String, String> {
    let data = if data.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        data
    };
    let data = std::str::from_utf8(data).map_err(|_| format!("`{name}` data is not UTF-8"))?;
    let name = serde_json::to_string(name).map_err(|e| e.to_string())?;
    Ok(format!("{{{name}:{data}}}"))
}

pub(crate) fn decode<T: DeserializeOwned>(name: &str, data: &[u8]) -> Result<T, String> {
    let json = tagged_json(name, data)?;
    serde_json::from_str(&json).map_err(|e| format!("`{name}`: {e}"))
}

/// Split a serialised externally tagged enum value into (name, data).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<types::Event, String> {
    let json = serde_json::to_string(value).map_err(|e| e.to_string())?;
    if let Ok(name) = serde_json::from_str::<String>(&json) {
        return Ok(types::Event {
            name,
            data: b"null".to_vec(),
        });
    }
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&json).map_err(|_| {
            "events must be serde enums (externally tagged): expected {\"name\": data}".to_string()
        })?;
    let mut entries = map.into_iter();
    match (entries.next(), entries.next()) {
        (Some((name, data)), None) => {
            let data = serde_json::to_vec(&data).map_err(|e| e.to_string())?;
            Ok(types::Event { name, data })
        }
        _ => Err(
            "events must be serde enums (externally tagged): expected exactly one key".to_string(),
        ),
    }
}

pub(crate) fn load_state<S: DeserializeOwned + Default>(bytes: &[u8]) -> Result<S, String> {
    if bytes.is_empty() {
        return Ok(S::default());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("aggregate state is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Ev {
        Deposited { amount: i64 },
        Closed,
    }

    #[test]
    fn events_round_trip_through_name_and_data() {
        let e = encode(&Ev::Deposited { amount: 5 }).unwrap();
        assert_eq!(
            (e.name.as_str(), e.data.as_slice()),
            ("deposited", &br#"{"amount":5}"#[..])
        );
        assert_eq!(
            decode::<Ev>(&e.name, &e.data).unwrap(),
            Ev::Deposited { amount: 5 }
        );
        let c = encode(&Ev::Closed).unwrap();
        assert_eq!(
            (c.name.as_str(), c.data.as_slice()),
            ("closed", &b"null"[..])
        );
        assert_eq!(decode::<Ev>("closed", b"").unwrap(), Ev::Closed);
        assert!(decode::<Ev>("nope", b"{}").is_err());
        assert!(decode::<Ev>("deposited", b"{not json").is_err());
    }

    #[test]
    fn empty_state_is_default() {
        assert_eq!(load_state::<Vec<u8>>(b"").unwrap(), Vec::<u8>::new());
        assert!(load_state::<Vec<u8>>(b"{").is_err());
    }
}
