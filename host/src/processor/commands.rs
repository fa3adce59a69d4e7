//! Commands for services from the outside: submit one durably into the
//! service's commands topic, and read or await its result.

use crate::store::StoreError;

use super::command::{CommandOutcome, StoredResult, encode_command, fingerprint};
use super::error::{EngineError, Result};
use super::shared::{Shared, now_ms};

/// A command for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// Unique per command; a retry with the same id gets the first result.
    pub id: String,
    pub aggregate: String,
    pub name: String,
    pub data: Vec<u8>,
    /// Apply only if the aggregate is at this version.
    pub expected_version: Option<u64>,
    /// Also write the result here, keyed and headed by the command id, in
    /// the service's commit: `<service>.results` or `<service>.private.reply`.
    pub reply_topic: Option<String>,
}

impl CommandRequest {
    /// What this command asks for (see `fingerprint` below).
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.aggregate,
            &self.name,
            &self.data,
            self.expected_version,
            self.reply_topic.as_deref(),
        )
    }
}

/// Refuse the result of another command that used the same id.
pub(crate) fn result_for(command: &CommandRequest, stored: StoredResult) -> Result<CommandOutcome> {
    if stored.answers_another(&command.fingerprint()) {
        return Err(EngineError::IdReused(command.id.clone()));
    }
    Ok(stored.outcome)
}

/// Put a command durably into the service's commands topic (per the
/// fsync policy). A command id that already has a result answers that
/// result instead (nothing is appended), unless that result went to a
/// command asking something else: then the id is refused as reused.
pub(crate) fn submit_command(
    shared: &Shared,
    service: &str,
    command: &CommandRequest,
) -> Result<CommandOutcome> {
    let active = shared.service(service)?;
    if command.id.is_empty() || command.id.chars().count() > 256 {
        return Err(EngineError::Invalid(
            "a command id must be 1–256 characters".into(),
        ));
    }
    if command.aggregate.is_empty() {
        return Err(EngineError::Invalid(
            "a command needs an aggregate id".into(),
        ));
    }
    if command.name.is_empty() {
        return Err(EngineError::Invalid("a command needs a name".into()));
    }
    if let Some(t) = &command.reply_topic {
        shared.ownership.check_reply(service, t)?;
    }
    if let Some(stored) = stored_result(shared, service, &command.id)? {
        return result_for(command, stored);
    }
    let topic = &active.manifest.inputs[0];
    let record = encode_command(
        &command.id,
        &command.aggregate,
        &command.name,
        &command.data,
        command.expected_version,
        command.reply_topic.as_deref(),
        now_ms(),
    );
    let partition = shared.log.partition_for(topic, &record.key)?;
    let ack = shared.log.append(topic, partition, &[record])?;
    Ok(CommandOutcome::Accepted {
        topic: topic.clone(),
        partition,
        offset: ack.base_offset,
    })
}

/// The stored first result of a command.
pub(crate) fn stored_result(
    shared: &Shared,
    service: &str,
    id: &str,
) -> Result<Option<StoredResult>> {
    match shared.store.command_result(service, id)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            EngineError::Store(StoreError::Corrupt {
                what: format!("result of command {id}"),
                detail: e.to_string(),
            })
        }),
    }
}
