//! A tool's name: the one rule the manifest, the operator's files and the
//! binding service check it by.

use std::fmt;
use std::sync::Arc;

use crate::PolicyError;

/// A tool's name: 1 to 64 of `a-z 0-9 -`, not starting with `-`. It names
/// the tool's workload identity, its stored object and its Cedar entity, so
/// it must be safe in each of those places.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolName(Arc<str>);

impl ToolName {
    /// The rule, as errors state it.
    pub const RULE: &'static str = "1 to 64 of a-z 0-9 -, not starting with -";

    /// Whether `s` is a tool's name.
    pub fn is_valid(s: &str) -> bool {
        (1..=64).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    /// Validate a tool's name.
    pub fn parse(s: &str) -> Result<ToolName, PolicyError> {
        if ToolName::is_valid(s) {
            Ok(ToolName(Arc::from(s)))
        } else {
            Err(PolicyError::InvalidToolName {
                input: s.chars().take(80).collect(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_short_lowercase_words_joined_by_hyphens() {
        for ok in ["a", "github-issues", "text-stats2", &"x".repeat(64)] {
            assert!(ToolName::is_valid(ok), "{ok}");
            assert_eq!(ToolName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a b", "ä", &"x".repeat(65)] {
            assert!(!ToolName::is_valid(bad), "{bad}");
            let e = ToolName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(ToolName::RULE), "{e}");
        }
    }
}
