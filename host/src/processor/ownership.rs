//! Who may write which topic. This module is the one place the rule lives,
//! and every write path goes through it: a client's append
//! ([`Ownership::client_write`], behind `Engine::append_from_client`, the
//! only way the HTTP API appends), a command's reply topic
//! ([`Ownership::check_reply`]), a deploy or rollback ([`Ownership::claim`]),
//! a topic delete ([`Ownership::delete_topic`], behind
//! `Engine::delete_topic`) and every commit of a processor's step
//! ([`owns`]).
//!
//! # The rule
//!
//! - A processor **owns** its outputs, its dead-letter topic `<name>.dlq`
//!   and, for a service, its reply topics `<name>.results` and
//!   `<name>.private.reply`. An owned topic has exactly one writer: the
//!   owner's commit (deferred append → store commit → publish). Nobody else
//!   appends there, neither a client nor another processor: visibility in
//!   the log is a prefix, so a plain append would publish the owner's
//!   deferred, not yet committed records, which recovery would later cut.
//! - A service's commands topic (its input) is written with commands only
//!   (by a command submit, or by clients producing command records). No
//!   processor may own it, and no two services share one.
//! - A deploy is checked against the whole set of deployed processors, new
//!   and existing, and the check is symmetric: the order of deploys never
//!   decides who owns what.
//! - A command's reply goes only to one of its own service's reply topics
//!   (created on first use, see `command`); it is written inside the
//!   service's commit, so each reply exists exactly once.
//! - A topic a processor owns or reads cannot be deleted (delete the
//!   processor first).
//!
//! Claims are by topic name, whether or not the topic exists yet. Client
//! appends and topic deletes run under a shared gate; claims change under
//! the exclusive one, so no client append allowed by the old claims lands
//! after the new ones took effect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::runtime::PluginKind;

use super::manifest::Manifest;

/// Why a write, a claim or a delete was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// The topic has a writer, and it is not the one asking.
    #[error(
        "topic {topic:?} is written only by processor {owner:?}; another write would break its exactly-once commits"
    )]
    TopicOwned { topic: String, owner: String },
    /// The topic is a service's commands topic: no processor may write it.
    #[error(
        "topic {topic:?} is the commands topic of service {service:?}; no processor may write it"
    )]
    CommandsTopic { topic: String, service: String },
    /// The topic is still used by processors.
    #[error("topic {topic:?} is used by {}; delete them first", users.join(", "))]
    TopicInUse { topic: String, users: Vec<String> },
    /// A reply topic must be one of the service's own reply topics.
    #[error(
        "reply topic {topic:?} is not a reply topic of service {service:?}; use {service}.results or {service}.private.reply"
    )]
    NotAReplyTopic { topic: String, service: String },
}

impl OwnershipError {
    /// The processor named by the refusal (the owner, the service…).
    pub fn owner(&self) -> Option<&str> {
        match self {
            OwnershipError::TopicOwned { owner, .. } => Some(owner),
            OwnershipError::CommandsTopic { service, .. } => Some(service),
            OwnershipError::TopicInUse { users, .. } => users.first().map(String::as_str),
            OwnershipError::NotAReplyTopic { .. } => None,
        }
    }
}

pub type Result<T, E = OwnershipError> = std::result::Result<T, E>;

const RESULTS_SUFFIX: &str = ".results";
const PRIVATE_REPLY_SUFFIX: &str = ".private.reply";

/// The reply topics of a service: results for everyone, private replies.
pub fn reply_topics(service: &str) -> [String; 2] {
    [
        format!("{service}{RESULTS_SUFFIX}"),
        format!("{service}{PRIVATE_REPLY_SUFFIX}"),
    ]
}

/// Is `topic` one of `service`'s reply topics?
pub fn is_reply_topic(service: &str, topic: &str) -> bool {
    topic
        .strip_prefix(service)
        .is_some_and(|rest| rest == RESULTS_SUFFIX || rest == PRIVATE_REPLY_SUFFIX)
}

/// Every topic the processor of `manifest` is the sole writer of.
pub fn owned_topics(manifest: &Manifest) -> Vec<String> {
    let mut topics = manifest.outputs.clone();
    topics.push(manifest.dlq_topic());
    if manifest.kind == PluginKind::CommandHandler {
        topics.extend(reply_topics(&manifest.name));
    }
    topics
}

/// Does the processor of `manifest` own `topic`? (Checked on every commit,
/// without allocating.)
pub fn owns(manifest: &Manifest, topic: &str) -> bool {
    manifest.outputs.iter().any(|t| t == topic)
        || topic
            .strip_prefix(manifest.name.as_str())
            .is_some_and(|rest| rest == ".dlq")
        || (manifest.kind == PluginKind::CommandHandler && is_reply_topic(&manifest.name, topic))
}

/// The commands topics of the processor of `manifest` (a service's inputs).
fn commands_topics(manifest: &Manifest) -> &[String] {
    if manifest.kind == PluginKind::CommandHandler {
        &manifest.inputs
    } else {
        &[]
    }
}

/// What the deployed processors claim.
#[derive(Default)]
struct Claims {
    /// Each deployed processor's active manifest.
    manifests: BTreeMap<String, Arc<Manifest>>,
    /// Owned topic → its writer (derived from `manifests`).
    writers: HashMap<String, String>,
    /// Commands topic → its service (derived from `manifests`).
    commands: HashMap<String, String>,
}

impl Claims {
    fn rebuild_index(&mut self) {
        self.writers.clear();
        self.commands.clear();
        for (name, m) in &self.manifests {
            for t in owned_topics(m) {
                self.writers.entry(t).or_insert_with(|| name.clone());
            }
            for t in commands_topics(m) {
                self.commands
                    .entry(t.clone())
                    .or_insert_with(|| name.clone());
            }
        }
    }

    /// Does `candidate` clash with any other deployed processor? Both
    /// directions are checked, so the answer does not depend on which of
    /// two clashing processors came first.
    fn clash(&self, candidate: &Manifest) -> Option<OwnershipError> {
        let others = self
            .manifests
            .iter()
            .filter(|(name, _)| **name != candidate.name);
        for (name, other) in others {
            let theirs = owned_topics(other);
            for t in owned_topics(candidate) {
                if theirs.contains(&t) {
                    return Some(OwnershipError::TopicOwned {
                        topic: t,
                        owner: name.clone(),
                    });
                }
                if commands_topics(other).contains(&t) {
                    return Some(OwnershipError::CommandsTopic {
                        topic: t,
                        service: name.clone(),
                    });
                }
            }
            for t in commands_topics(candidate) {
                if theirs.contains(t) {
                    return Some(OwnershipError::TopicOwned {
                        topic: t.clone(),
                        owner: name.clone(),
                    });
                }
                if commands_topics(other).contains(t) {
                    return Some(OwnershipError::CommandsTopic {
                        topic: t.clone(),
                        service: name.clone(),
                    });
                }
            }
        }
        None
    }

    fn users(&self, topic: &str) -> Vec<String> {
        self.manifests
            .iter()
            .filter(|(_, m)| {
                m.inputs.iter().any(|t| t == topic) || owned_topics(m).iter().any(|t| t == topic)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The claims of the deployed processors, and the gate client writes pass.
#[derive(Default)]
pub struct Ownership {
    claims: RwLock<Claims>,
}

impl Ownership {
    /// Make `manifest` the claims of its processor (a deploy or a
    /// rollback), unless they clash with another deployed processor's.
    /// Returns the claims it replaced, for [`Ownership::restore`].
    pub fn claim(&self, manifest: Arc<Manifest>) -> Result<Option<Arc<Manifest>>> {
        let mut claims = self.claims.write();
        if let Some(clash) = claims.clash(&manifest) {
            return Err(clash);
        }
        let previous = claims.manifests.insert(manifest.name.clone(), manifest);
        claims.rebuild_index();
        Ok(previous)
    }

    /// Register the claims of a processor found in the store at start.
    /// A clash (data written before the rule was enforced) is logged, not
    /// refused: the first claimant stays the writer.
    pub fn restore(&self, name: &str, manifest: Option<Arc<Manifest>>) {
        let mut claims = self.claims.write();
        match manifest {
            Some(m) => {
                if let Some(clash) = claims.clash(&m) {
                    tracing::error!(processor = %name, "deployed processors disagree on ownership: {clash}");
                }
                claims.manifests.insert(name.to_string(), m);
            }
            None => {
                claims.manifests.remove(name);
            }
        }
        claims.rebuild_index();
    }

    /// Forget the claims of a deleted processor.
    pub fn release(&self, name: &str) {
        self.restore(name, None);
    }

    /// The processor that owns `topic`, if any.
    pub fn owner_of(&self, topic: &str) -> Option<String> {
        self.claims.read().writers.get(topic).cloned()
    }

    /// Run `append` (a client's plain append to `topic`) unless a processor
    /// owns the topic. Claims cannot change while `append` runs.
    pub fn client_write<T, E: From<OwnershipError>>(
        &self,
        topic: &str,
        append: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.gated(
            |claims| {
                claims
                    .writers
                    .get(topic)
                    .map(|owner| OwnershipError::TopicOwned {
                        topic: topic.to_string(),
                        owner: owner.clone(),
                    })
            },
            append,
        )
    }

    /// Run `delete` unless a processor owns or reads `topic`.
    pub fn delete_topic<T, E: From<OwnershipError>>(
        &self,
        topic: &str,
        delete: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.gated(
            |claims| {
                let users = claims.users(topic);
                (!users.is_empty()).then(|| OwnershipError::TopicInUse {
                    topic: topic.to_string(),
                    users,
                })
            },
            delete,
        )
    }

    /// Run `action` unless `refusal` finds a reason in the claims, which
    /// cannot change until `action` is done.
    fn gated<T, E: From<OwnershipError>>(
        &self,
        refusal: impl FnOnce(&Claims) -> Option<OwnershipError>,
        action: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let claims = self.claims.read();
        if let Some(refused) = refusal(&claims) {
            return Err(refused.into());
        }
        let result = action();
        drop(claims);
        result
    }

    /// May a command of `service` name `topic` as its reply topic? Only
    /// the service's own reply topics are; a topic another processor owns
    /// is refused naming that owner.
    pub fn check_reply(&self, service: &str, topic: &str) -> Result<()> {
        if is_reply_topic(service, topic) {
            return Ok(());
        }
        let claims = self.claims.read();
        if let Some(owner) = claims.writers.get(topic) {
            return Err(OwnershipError::TopicOwned {
                topic: topic.to_string(),
                owner: owner.clone(),
            });
        }
        if let Some(owner) = claims.commands.get(topic) {
            return Err(OwnershipError::CommandsTopic {
                topic: topic.to_string(),
                service: owner.clone(),
            });
        }
        Err(OwnershipError::NotAReplyTopic {
            topic: topic.to_string(),
            service: service.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(v: serde_json::Value) -> Arc<Manifest> {
        Arc::new(Manifest::parse(v).unwrap())
    }

    fn river(name: &str, input: &str, output: &str) -> Arc<Manifest> {
        manifest(json!({"name": name, "kind": "enricher", "inputs": [input], "outputs": [output]}))
    }

    fn service(name: &str) -> Arc<Manifest> {
        manifest(json!({"name": name, "kind": "command-handler"}))
    }

    fn deployed(manifests: Vec<Arc<Manifest>>) -> Ownership {
        let o = Ownership::default();
        for m in manifests {
            o.claim(m).unwrap();
        }
        o
    }

    #[test]
    fn deploy_order_never_decides_ownership() {
        let svc = service("svc");
        let writer = river("w", "orders", &svc.inputs[0]);
        let a = deployed(vec![svc.clone()]).claim(writer.clone());
        let b = deployed(vec![writer]).claim(svc);
        assert!(
            matches!(a, Err(OwnershipError::CommandsTopic { .. })),
            "{a:?}"
        );
        assert!(matches!(b, Err(OwnershipError::TopicOwned { .. })), "{b:?}");
    }

    #[test]
    fn two_writers_of_one_topic_clash_either_way() {
        let one = river("one", "a", "shared");
        let two = river("two", "b", "shared");
        assert!(deployed(vec![one.clone()]).claim(two.clone()).is_err());
        assert!(deployed(vec![two]).claim(one.clone()).is_err());
        // A new version of a processor does not clash with itself.
        let o = deployed(vec![one.clone()]);
        assert_eq!(o.claim(one.clone()).unwrap(), Some(one.clone()));
        // Reading another's output is fine.
        assert!(o.claim(river("three", "shared", "c")).is_ok());
        // Two services never share a commands topic.
        let s1 = service("s1");
        let s2 =
            manifest(json!({"name": "s2", "kind": "command-handler", "inputs": ["s1.commands"]}));
        assert!(deployed(vec![s1.clone()]).claim(s2.clone()).is_err());
        assert!(deployed(vec![s2]).claim(s1).is_err());
    }

    #[test]
    fn a_river_cannot_claim_a_services_reply_or_events_topic() {
        for t in [
            "bank.results",
            "bank.private.reply",
            "bank.events",
            "bank.dlq",
        ] {
            let thief = river("thief", "in", t);
            assert!(
                deployed(vec![service("bank")])
                    .claim(thief.clone())
                    .is_err(),
                "{t}"
            );
            assert!(deployed(vec![thief]).claim(service("bank")).is_err(), "{t}");
        }
    }

    #[test]
    fn clients_may_not_write_owned_topics_and_a_refusal_appends_nothing() {
        let o = deployed(vec![
            river("enrich", "orders", "orders.enriched"),
            service("bank"),
        ]);
        for t in [
            "orders.enriched",
            "enrich.dlq",
            "bank.events",
            "bank.results",
            "bank.private.reply",
            "bank.dlq",
        ] {
            let mut ran = false;
            let r = o.client_write(t, || {
                ran = true;
                Ok::<_, OwnershipError>(())
            });
            assert!(matches!(r, Err(OwnershipError::TopicOwned { .. })), "{t}");
            assert!(!ran, "{t}");
        }
        for t in ["orders", "bank.commands", "unclaimed"] {
            assert!(
                o.client_write(t, || Ok::<_, OwnershipError>(())).is_ok(),
                "{t}"
            );
        }
        assert_eq!(o.owner_of("bank.results").as_deref(), Some("bank"));
        // After a delete, the topic is free again.
        o.release("enrich");
        assert!(
            o.client_write("orders.enriched", || Ok::<_, OwnershipError>(()))
                .is_ok()
        );
    }

    #[test]
    fn replies_go_only_to_the_services_reply_topics() {
        let o = deployed(vec![
            river("enrich", "orders", "orders.enriched"),
            service("bank"),
        ]);
        assert!(o.check_reply("bank", "bank.results").is_ok());
        assert!(o.check_reply("bank", "bank.private.reply").is_ok());
        let owned = o.check_reply("bank", "orders.enriched").unwrap_err();
        assert_eq!(owned.owner(), Some("enrich"));
        assert!(matches!(
            o.check_reply("bank", "bank.events"),
            Err(OwnershipError::TopicOwned { .. })
        ));
        assert!(matches!(
            o.check_reply("bank", "bank.commands"),
            Err(OwnershipError::CommandsTopic { .. })
        ));
        for t in ["other.results", "mine", "bankx.results"] {
            assert!(
                matches!(
                    o.check_reply("bank", t),
                    Err(OwnershipError::NotAReplyTopic { .. })
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn topics_in_use_are_never_deleted() {
        let o = deployed(vec![river("enrich", "orders", "orders.enriched")]);
        for t in ["orders.enriched", "orders", "enrich.dlq"] {
            let r = o.delete_topic(t, || Ok::<_, OwnershipError>(()));
            assert!(matches!(r, Err(OwnershipError::TopicInUse { .. })), "{t}");
        }
        assert!(
            o.delete_topic("unrelated", || Ok::<_, OwnershipError>(()))
                .is_ok()
        );
    }

    #[test]
    fn owns_agrees_with_owned_topics() {
        for m in [
            river("enrich", "orders", "orders.enriched"),
            service("bank"),
        ] {
            for t in owned_topics(&m) {
                assert!(owns(&m, &t), "{t}");
            }
            for t in [
                "orders",
                "bank.commands",
                "enrich.dlqx",
                "x.dlq",
                "bank.resultsx",
            ] {
                assert!(!owns(&m, t), "{} {t}", m.name);
            }
        }
    }
}
