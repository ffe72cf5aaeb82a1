//! The id of a verified user, as tokens are brokered for it.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::PolicyError;

/// A user id: 1 to 128 characters (AgentCore's `userId`), no control
/// characters, so that it can key caches and vault rows and appear in logs
/// without escaping surprises.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Validate a user id.
    pub fn parse(s: &str) -> Result<UserId, PolicyError> {
        let reason = if s.is_empty() {
            Some("it is empty")
        } else if s.chars().count() > 128 {
            Some("it is longer than 128 characters")
        } else if s.chars().any(char::is_control) {
            Some("it holds control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PolicyError::InvalidUser {
                input: s.chars().take(140).collect(),
                reason,
            }),
            None => Ok(UserId(Arc::from(s))),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_refuse_empty_long_and_control_characters() {
        assert_eq!(
            UserId::parse("alice@example.com").unwrap().as_str(),
            "alice@example.com"
        );
        assert!(UserId::parse(&"é".repeat(128)).is_ok());
        for bad in ["", "a\0b", "a\nb", "\u{1b}[31m", &"x".repeat(129)] {
            let e = UserId::parse(bad).unwrap_err();
            assert!(matches!(e, PolicyError::InvalidUser { .. }), "{bad:?}");
        }
        let e = UserId::parse("a\0b").unwrap_err().to_string();
        assert!(e.contains("a\\0b") && e.contains("control"), "{e}");
    }
}
