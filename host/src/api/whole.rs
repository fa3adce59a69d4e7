//! Whole numbers in request bodies as JSON (and JSON Schema) count them:
//! an integer, or a number with no fractional part (`147.0`), within the
//! field's range. Plain serde refuses `147.0` for an integer field, which
//! would make the server stricter than its own OpenAPI document.
//!
//! Use as `#[serde(default, deserialize_with = "whole::option")]`.

use serde::de::{Deserialize, Deserializer, Error};

/// The largest whole float that is exactly one integer: 2^53.
const EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

fn whole<T: TryFrom<i128>>(n: &serde_json::Number) -> Option<T> {
    let wide: i128 = if let Some(u) = n.as_u64() {
        u.into()
    } else if let Some(i) = n.as_i64() {
        i.into()
    } else {
        let f = n.as_f64()?;
        // Past 2^53 a float no longer says which integer the client wrote
        // (an out-of-range integer literal parses as one too).
        if !f.is_finite() || f.fract() != 0.0 || f.abs() > EXACT_FLOAT {
            return None;
        }
        f as i128
    };
    T::try_from(wide).ok()
}

fn out_of_range<E: Error>(n: &serde_json::Number) -> E {
    E::custom(format!(
        "expected a whole number within the field's range, not {n}"
    ))
}

/// An optional whole number (`null` or absent is `None`).
pub(crate) fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|n| whole(&n).ok_or_else(|| out_of_range(&n)))
        .transpose()
}

/// A whole number.
pub(crate) fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let n = serde_json::Number::deserialize(deserializer)?;
    whole(&n).ok_or_else(|| out_of_range(&n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Fields {
        #[serde(default, deserialize_with = "super::option")]
        small: Option<u32>,
        #[serde(default, deserialize_with = "super::option")]
        signed: Option<i64>,
    }

    fn parse(text: &str) -> Result<Fields, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn integral_numbers_count_whatever_their_spelling() {
        let f = parse(r#"{"small": 147.0, "signed": -3e2}"#).unwrap();
        assert_eq!((f.small, f.signed), (Some(147), Some(-300)));
        assert_eq!(parse(r#"{"small": null}"#).unwrap().small, None);
        assert_eq!(parse("{}").unwrap().signed, None);
        for bad in [
            r#"{"small": 1.5}"#,
            r#"{"small": -1}"#,
            r#"{"small": 4294967296}"#,
            r#"{"small": "1"}"#,
            r#"{"signed": 1e300}"#,
            r#"{"signed": -9223372036854775809}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
