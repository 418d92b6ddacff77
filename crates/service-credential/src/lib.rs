//! The service account's credential as a Secrets Manager secret holds it (the template creates
//! it, the rotation writes each new version, the entrypoint and `Custom::AdServiceAccount` read
//! it): a JSON object
//!
//! ```json
//! {"username": "DOMAIN\\name", "password": "…", "share": "\\\\server\\share"}
//! ```
//!
//! `username` (the active account, qualified) and `password` are required strings; `share`, when
//! present, must be a string. Other keys are let be (the template adds `generation`).
//!
//! Errors say which key is wrong and how, never the value, and never serde's message, which
//! quotes what it could not parse (a secret holding the bare password as a JSON string would be
//! printed). Callers add the secret's id and where it was configured.

use secrets::Secret;

/// What the secret's JSON must look like, for the errors that say it is not so.
pub const SHAPE: &str =
    r#"{"username": "DOMAIN\name", "password": "...", "share": "\\server\share"}"#;

/// The keys, spelled once.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
pub const SHARE: &str = "share";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// What the value is instead of a JSON object.
    #[error("{0}")]
    NotAnObject(&'static str),
    #[error("the key \"{key}\" {problem}")]
    Key {
        key: &'static str,
        problem: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct ServiceCredential {
    /// `DOMAIN\name` or `name@domain`, trimmed.
    pub username: String,
    pub password: Secret,
    pub share: Option<String>,
}

/// `DOMAIN\name` or `name@domain`, with no control character or double quote (the value goes
/// into PowerShell strings and logs).
pub fn is_qualified_user_name(value: &str) -> bool {
    let shape = match (value.split_once('\\'), value.split_once('@')) {
        (Some((domain, name)), None) => !domain.is_empty() && !name.is_empty(),
        (None, Some((name, domain))) => !domain.is_empty() && !name.is_empty(),
        _ => false,
    };
    shape && !value.chars().any(|c| c.is_control() || c == '"')
}

/// Parse a secret's value (see the crate's documentation for its shape).
pub fn parse(value: &Secret) -> Result<ServiceCredential, ShapeError> {
    let bad = |key, problem| ShapeError::Key { key, problem };
    let mut map = match serde_json::from_str::<serde_json::Value>(value.expose()) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Err(ShapeError::NotAnObject("is JSON but not an object")),
        Err(_) => return Err(ShapeError::NotAnObject("is not JSON")),
    };
    // Moved out of the map, not copied: the string becomes the `Secret` that wipes it.
    let password = match map.remove(PASSWORD) {
        None => return Err(bad(PASSWORD, "is missing")),
        Some(serde_json::Value::String(p)) if p.is_empty() => {
            return Err(bad(PASSWORD, "is empty"));
        }
        Some(serde_json::Value::String(p)) => Secret::new(p),
        Some(_) => return Err(bad(PASSWORD, "is not a string")),
    };
    let username = match map.get(USERNAME) {
        None => return Err(bad(USERNAME, "is missing")),
        Some(serde_json::Value::String(u)) if u.trim().is_empty() => {
            return Err(bad(USERNAME, "is empty"));
        }
        Some(serde_json::Value::String(u)) if !is_qualified_user_name(u.trim()) => {
            return Err(bad(
                USERNAME,
                "is not a user name (write DOMAIN\\name or name@domain.example)",
            ));
        }
        Some(serde_json::Value::String(u)) => u.trim().to_owned(),
        Some(_) => return Err(bad(USERNAME, "is not a string")),
    };
    let share = match map.get(SHARE) {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Some(_) => return Err(bad(SHARE, "is not a string")),
    };
    Ok(ServiceCredential {
        username,
        password,
        share,
    })
}

/// The JSON a new version holds. The text is built in one buffer that becomes the returned
/// [`Secret`] (wiped when dropped); serde escapes every key and value.
pub fn to_json(credential: &ServiceCredential) -> Secret {
    let mut map = serde_json::Map::new();
    map.insert(USERNAME.into(), credential.username.clone().into());
    map.insert(
        PASSWORD.into(),
        credential.password.expose().to_owned().into(),
    );
    if let Some(share) = &credential.share {
        map.insert(SHARE.into(), share.clone().into());
    }
    let value = serde_json::Value::Object(map);
    let text = value.to_string();
    // The `Value`'s copy of the password cannot be wiped (serde_json has no hook for it); it lives
    // only until here.
    drop(value);
    Secret::new(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ServiceCredential, ShapeError> {
        parse(&Secret::new(text))
    }

    #[test]
    fn the_template_s_shape() {
        let c = parse_text(
            r#"{"username":" EXAMPLE\\svc-web ","password":" Pw-1 ","share":"\\\\fs\\share","generation":"1"}"#,
        )
        .unwrap();
        assert_eq!(c.username, r"EXAMPLE\svc-web");
        // A password is taken as given, spaces and all.
        assert_eq!(c.password.expose(), " Pw-1 ");
        assert_eq!(c.share.as_deref(), Some(r"\\fs\share"));
        let c = parse_text(r#"{"username":"svc@example.test","password":"Pw-2"}"#).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose(), c.share),
            ("svc@example.test", "Pw-2", None)
        );
    }

    #[test]
    fn each_error_names_the_key_and_shows_no_value() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"username":"EXAMPLE\\svc"}"#,
                r#"the key "password" is missing"#,
            ),
            (
                r#"{"username":"EXAMPLE\\svc","password":""}"#,
                r#"the key "password" is empty"#,
            ),
            (
                r#"{"username":"EXAMPLE\\svc","password":7}"#,
                r#"the key "password" is not a string"#,
            ),
            (
                r#"{"password":"Hidden-1"}"#,
                r#"the key "username" is missing"#,
            ),
            (
                r#"{"username":["EXAMPLE\\svc"],"password":"Hidden-1"}"#,
                r#"the key "username" is not a string"#,
            ),
            (
                r#"{"username":" ","password":"Hidden-1"}"#,
                r#"the key "username" is empty"#,
            ),
            (
                r#"{"username":"svc","password":"Hidden-1"}"#,
                r#"the key "username" is not a user name"#,
            ),
            (
                r#"{"username":"EXAMPLE\\s\"vc","password":"Hidden-1"}"#,
                r#"the key "username" is not a user name"#,
            ),
            (
                r#"{"username":"EXAMPLE\\svc","password":"Hidden-1","share":{}}"#,
                r#"the key "share" is not a string"#,
            ),
            ("Hidden-1", "is not JSON"),
            (r#""Hidden-1""#, "is JSON but not an object"),
            (r#"["Hidden-1"]"#, "is JSON but not an object"),
        ];
        for (text, expected) in cases {
            let e = parse_text(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(!e.contains("Hidden-1"), "{e}");
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let c = ServiceCredential {
            username: r"EXAMPLE\svc-b".into(),
            password: Secret::new(r#"a"b\c-=:~*#"#),
            share: Some(r"\\fs.example.test\share".into()),
        };
        let back = parse(&to_json(&c)).unwrap();
        assert_eq!(back.username, c.username);
        assert_eq!(back.password.expose(), c.password.expose());
        assert_eq!(back.share, c.share);
    }

    #[test]
    fn user_names_must_be_qualified() {
        for good in [r"EXAMPLE\svc", "svc@example.test"] {
            assert!(is_qualified_user_name(good), "{good}");
        }
        for bad in [
            "svc",
            r"\svc",
            r"EXAMPLE\",
            "@example",
            "svc@",
            r"A\b@c",
            "E\\s\nvc",
        ] {
            assert!(!is_qualified_user_name(bad), "{bad}");
        }
    }
}
