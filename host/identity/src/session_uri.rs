//! AgentCore's consent session URIs: the one rule the identity service that
//! issues them and the binding service that passes them on check them by.

/// What every session URI starts with (RFC 9126's request URI form).
pub const PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// The longest session URI accepted.
pub const MAX_LEN: usize = 1024;

/// Whether `s` has a session URI's form: the prefix, then 1 or more of
/// `A-Z a-z 0-9 - . _ ~`, at most [`MAX_LEN`] in all.
pub fn is_well_formed(s: &str) -> bool {
    s.len() <= MAX_LEN
        && s.strip_prefix(PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}
