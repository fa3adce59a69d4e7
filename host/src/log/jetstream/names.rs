//! How weir's names map onto JetStream's: the namespace, the topic directory
//! bucket and its keys, one stream per partition, and subjects.
//!
//! A partition's stream is named by the topic's *incarnation* (a UUID drawn
//! when the topic is created), never by the topic name: topic names may hold
//! `.` (a subject separator, and not allowed in stream names), and a topic
//! deleted and created again gets fresh, empty streams.

/// The key-value bucket that maps topic names to their configuration.
pub fn topic_bucket(ns: &str) -> String {
    format!("{ns}_topics")
}

/// A topic's key in the directory bucket. KV keys may not hold empty subject
/// tokens (`a..b`, a leading or trailing `.`), so `.` becomes `=`, which a
/// topic name cannot contain: the mapping stays one-to-one.
pub fn topic_key(topic: &str) -> String {
    topic.replace('.', "=")
}

/// The stream holding one partition of a topic incarnation.
pub fn stream_name(ns: &str, incarnation: &str, partition: u32) -> String {
    format!("{ns}_{incarnation}_{partition}")
}

/// The subject of a partition's records. Compacted topics add one token per
/// key ([`key_token`]) so the stream can keep the last message per subject.
pub fn partition_subject(ns: &str, incarnation: &str, partition: u32) -> String {
    format!("{ns}.log.{incarnation}.{partition}")
}

/// The subject filter a partition's stream captures.
pub fn stream_subject(ns: &str, incarnation: &str, partition: u32, compacted: bool) -> String {
    let base = partition_subject(ns, incarnation, partition);
    if compacted { format!("{base}.>") } else { base }
}

/// The subject one record is published to.
pub fn record_subject(base: &str, compacted: bool, key: &[u8]) -> String {
    if compacted {
        format!("{base}.{}", key_token(key))
    } else {
        base.to_string()
    }
}

/// Longest key spelled out in hex in a subject; longer keys are hashed.
const MAX_SPELLED_KEY: usize = 64;

/// A subject token unique to `key`: `k` + hex for keys up to 64 bytes
/// (`k` alone for the empty key), `h` + SHA-256 hex for longer ones.
pub fn key_token(key: &[u8]) -> String {
    use sha2::Digest;
    if key.len() <= MAX_SPELLED_KEY {
        format!("k{}", hex::encode(key))
    } else {
        format!("h{}", hex::encode(sha2::Sha256::digest(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_for_jetstream_and_one_to_one() {
        assert_eq!(topic_key(".hidden.v1"), "=hidden=v1");
        assert_ne!(topic_key("a.b"), topic_key("a_b"));
        assert_ne!(topic_key("a.b"), topic_key("a-b"));
        let s = stream_name("weir", "0f3a", 7);
        assert!(!s.contains('.') && !s.contains(' '), "{s}");
        assert_eq!(stream_subject("weir", "0f3a", 7, false), "weir.log.0f3a.7");
        assert_eq!(stream_subject("weir", "0f3a", 7, true), "weir.log.0f3a.7.>");
    }

    #[test]
    fn key_tokens_are_unique_subject_tokens() {
        assert_eq!(key_token(b""), "k");
        assert_eq!(key_token(b"a.b c"), "k612e622063");
        assert_ne!(key_token(b"ab"), key_token(b"\xab"));
        let long = vec![b'x'; 65];
        let t = key_token(&long);
        assert!(t.starts_with('h') && t.len() == 65, "{t}");
        assert_ne!(key_token(&long), key_token(&long[..64]));
        for t in [key_token(b"\0*>. "), key_token(&long)] {
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()), "{t}");
        }
        assert_eq!(
            record_subject("weir.log.i.0", true, b"k1"),
            "weir.log.i.0.k6b31"
        );
        assert_eq!(record_subject("weir.log.i.0", false, b"k1"), "weir.log.i.0");
    }
}
