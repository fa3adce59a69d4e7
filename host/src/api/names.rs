//! Validation of names that arrive over HTTP (topics, plugins, ponds,
//! services). A valid name is safe as a file or directory name on every
//! platform weir runs on: no path separators, no `.`/`..`, nothing hidden.

use super::error::ApiError;

/// Longest name accepted (Kafka's topic limit, so names can move there).
pub const MAX_NAME_LEN: usize = 249;

/// Check a name: 1..=249 characters from `[A-Za-z0-9._-]`, not starting
/// with `.` or `-`, and not `.`/`..`.
pub fn validate(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid_name(what, name, "it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid_name(
            what,
            &name[..name.floor_char_boundary(40)],
            &format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::invalid_name(
            what,
            name,
            &format!("character {c:?} is not allowed (use letters, digits, '.', '_', '-')"),
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(ApiError::invalid_name(
            what,
            name,
            "it must not start with '.' or '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for n in ["orders", "bank.accounts.events", "a_b-c.9", "X"] {
            assert!(validate("topic", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_traversal_and_junk() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for n in [
            "", ".", "..", "../etc", "a/b", "a\\b", ".hidden", "-flag", "sp ace", "é", "a\0b",
            &long,
        ] {
            let err = validate("topic", n).expect_err(n);
            assert_eq!(err.code, "invalid_name");
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
