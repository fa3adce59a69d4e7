//! Test command handler for the host's failure-policy tests: what it does
//! is chosen by the command's name.
//!
//! - `note <any JSON>`: one `noted` event carrying the data
//! - `panic`: panic with the message "faulty service panicked on purpose"
//!   (the host sees a trap, retries, then applies the error policy)
//!
//! The state counts the notes of an aggregate.

use serde::{Deserialize, Serialize};
use weir_guest::{CommandHandler, CommandMeta, Rejection};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Command {
    Note(serde_json::Value),
    Panic(serde::de::IgnoredAny),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Event {
    Noted(serde_json::Value),
}

#[derive(Serialize, Deserialize, Default)]
struct Notes {
    count: u64,
}

struct FaultyService;

impl CommandHandler for FaultyService {
    type Command = Command;
    type Event = Event;
    type State = Notes;

    fn init(_config: &str) -> Result<Self, String> {
        Ok(FaultyService)
    }

    fn decide(
        &self,
        command: Command,
        _state: &Notes,
        _meta: &CommandMeta,
    ) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::Note(data) => Ok(vec![Event::Noted(data)]),
            Command::Panic(_) => panic!("faulty service panicked on purpose"),
        }
    }

    fn evolve(state: &mut Notes, _event: &Event) {
        state.count += 1;
    }
}

weir_guest::command_handler!(FaultyService);
