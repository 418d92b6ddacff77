//! Deserializers for CloudFormation property values.
//!
//! CloudFormation passes every scalar property to a custom resource as a string (`"24"`,
//! `"true"`), while `cargo lambda invoke` and hand-written events often carry real JSON numbers
//! and booleans. These accept both. Use them with `#[serde(deserialize_with = "...")]`; the
//! `opt_*` forms go with `#[serde(default)]`.

use serde::{Deserialize, Deserializer, de::Error};
use serde_json::Value;
use std::{fmt::Display, str::FromStr};

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_bool<E: Error>(value: &Value) -> Result<bool, E> {
    match scalar_text(value)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        _ => Err(E::custom(format!("expected true or false, got {value}"))),
    }
}

fn parse_number<T, E>(value: &Value) -> Result<T, E>
where
    T: FromStr,
    T::Err: Display,
    E: Error,
{
    match value {
        Value::String(_) | Value::Number(_) => {
            let text = scalar_text(value).unwrap_or_default();
            text.parse::<T>()
                .map_err(|e| E::custom(format!("expected a number, got {value}: {e}")))
        }
        _ => Err(E::custom(format!("expected a number, got {value}"))),
    }
}

/// `true`, `false`, `"true"`, `"False"`.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    parse_bool(&Value::deserialize(d)?)
}

/// An optional [`bool`]; an empty string counts as absent (CloudFormation's `AWS::NoValue`
/// fallbacks often produce `""`).
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        v => parse_bool(&v).map(Some),
    }
}

/// `24`, `"24"`.
pub fn number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    parse_number(&Value::deserialize(d)?)
}

/// An optional [`number`]; an empty string counts as absent.
pub fn opt_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        v => parse_number(&v).map(Some),
    }
}

/// A string property that may also arrive as a number (`PasswordVersion: 2` in YAML is an
/// integer to the template author, a string to CloudFormation).
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(scalar_text(&v)),
        v => Err(D::Error::custom(format!("expected a string, got {v}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Props {
        #[serde(deserialize_with = "super::number")]
        length: u32,
        #[serde(deserialize_with = "super::bool")]
        retain: bool,
        #[serde(default, deserialize_with = "super::opt_bool")]
        maybe: Option<bool>,
        #[serde(default, deserialize_with = "super::opt_number")]
        count: Option<u16>,
        #[serde(default, deserialize_with = "super::opt_text")]
        version: Option<String>,
    }

    fn parse(v: serde_json::Value) -> Result<Props, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_string_encoded_and_native_scalars() {
        let p = parse(json!({"length": "24", "retain": "True", "maybe": "false", "count": " 7 ", "version": 3})).unwrap();
        assert_eq!(
            (p.length, p.retain, p.maybe, p.count),
            (24, true, Some(false), Some(7))
        );
        assert_eq!(p.version.as_deref(), Some("3"));
        let p = parse(json!({"length": 24, "retain": false})).unwrap();
        assert_eq!(
            (p.length, p.retain, p.maybe, p.count, p.version),
            (24, false, None, None, None)
        );
        let p = parse(json!({"length": 1, "retain": "false", "maybe": "", "count": ""})).unwrap();
        assert_eq!((p.maybe, p.count), (None, None));
    }

    #[test]
    fn rejects_ill_typed_values_with_the_value_shown() {
        let e = parse(json!({"length": "twenty", "retain": true})).unwrap_err();
        assert!(
            e.contains("expected a number") && e.contains("twenty"),
            "{e}"
        );
        let e = parse(json!({"length": 1, "retain": "yes"})).unwrap_err();
        assert!(
            e.contains("expected true or false") && e.contains("yes"),
            "{e}"
        );
        let e = parse(json!({"length": "-1", "retain": true})).unwrap_err();
        assert!(e.contains("expected a number"), "{e}");
        let e = parse(json!({"length": [1], "retain": true})).unwrap_err();
        assert!(e.contains("expected a number"), "{e}");
        let e = parse(json!({"length": 1, "retain": true, "count": "70000"})).unwrap_err();
        assert!(e.contains("70000"), "{e}");
    }
}
