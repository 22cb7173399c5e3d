//! Conversions between domain values and SQLite columns.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;
use crate::model::Pin;

/// A `u64` as SQLite's signed integer, refusing values above `i64::MAX`.
pub(crate) fn int(value: u64, what: impl FnOnce() -> String) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange {
        what: what(),
        value,
    })
}

/// The JSON text of `value`.
pub(crate) fn to_json<T: Serialize + ?Sized>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Json {
        what: what(),
        source,
    })
}

/// Reads back a JSON column.
pub(crate) fn from_json<T: DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what(), e))
}

/// A [`StoreError::Corrupt`].
pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The column form of a pin.
pub(crate) fn pin_text(pin: Option<Pin>) -> Option<&'static str> {
    pin.map(|p| match p {
        Pin::Allow => "allow",
        Pin::Deny => "deny",
    })
}

/// Reads back a pin column.
pub(crate) fn parse_pin(
    text: Option<&str>,
    what: impl FnOnce() -> String,
) -> Result<Option<Pin>, StoreError> {
    match text {
        None => Ok(None),
        Some("allow") => Ok(Some(Pin::Allow)),
        Some("deny") => Ok(Some(Pin::Deny)),
        Some(other) => Err(corrupt(what(), format!("unknown pin {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_above_i64_are_refused_by_name() {
        assert_eq!(int(7, || "seq".into()).unwrap(), 7);
        let err = int(u64::MAX, || "benchmark seq for node-a".into()).unwrap_err();
        assert!(err
            .to_string()
            .contains("benchmark seq for node-a is 18446744073709551615"));
    }

    #[test]
    fn pins_round_trip_and_unknown_ones_are_corrupt() {
        for pin in [None, Some(Pin::Allow), Some(Pin::Deny)] {
            assert_eq!(parse_pin(pin_text(pin), String::new).unwrap(), pin);
        }
        let err = parse_pin(Some("maybe"), || "node node-a pin".into()).unwrap_err();
        assert!(err.to_string().contains("node node-a pin"));
    }
}
