//! Airlock's policy types: what a tool may reach and with which credentials,
//! and the limits of one call. Pure data and matching, no I/O, no wasmtime.
//!
//! Strings from manifests and operator files are parsed into these types once,
//! at load time; everything downstream matches typed values and denies by default.

mod grants;
mod hosts;
mod limits;
mod operator;

pub use grants::{Access, Grants, OAuthGrant, ProviderName, Scopes};
pub use hosts::{HostPattern, Origin, Scheme, is_restricted_ip};
pub use limits::{Limits, LimitsRequest};
pub use operator::{Effective, OperatorPolicy, ProviderPolicy, Route};

/// A policy string or combination that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A host pattern could not be parsed.
    #[error("invalid host `{input}`: {reason}")]
    InvalidHost {
        /// What was given.
        input: String,
        /// What is wrong with it, and the expected form.
        reason: String,
    },
    /// A provider name is not `[A-Za-z0-9_-]{1,128}`.
    #[error("invalid provider name `{0}`: use 1 to 128 of A-Z a-z 0-9 _ -")]
    InvalidProvider(String),
    /// A scope is empty or contains whitespace.
    #[error("invalid scope `{0}`: a scope is a non-empty string without spaces")]
    InvalidScope(String),
    /// An OAuth grant names no host its token is for.
    #[error(
        "the oauth grant for provider `{0}` lists no hosts: name the API hosts its token is for"
    )]
    GrantWithoutHosts(String),
    /// The same host is covered by two OAuth grants, so the token to add would be ambiguous.
    #[error("host `{host}` is covered by the oauth grants of both `{first}` and `{second}`")]
    AmbiguousGrant {
        /// The host pattern.
        host: String,
        /// One provider.
        first: String,
        /// The other provider.
        second: String,
    },
    /// The operator's policy does not allow the provider at all.
    #[error(
        "tool `{tool}` asks for provider `{provider}`, which the operator's policy does not allow"
    )]
    ProviderNotAllowed {
        /// The tool.
        tool: String,
        /// The provider.
        provider: String,
    },
    /// The operator's policy caps the provider's scopes below what the tool asks.
    #[error(
        "tool `{tool}` asks provider `{provider}` for scopes {denied:?} beyond the operator's policy (allowed: {allowed:?})"
    )]
    ScopesNotAllowed {
        /// The tool.
        tool: String,
        /// The provider.
        provider: String,
        /// The scopes asked for and not allowed.
        denied: Vec<String>,
        /// What the policy allows.
        allowed: Vec<String>,
    },
    /// A host the tool declares is not among the hosts the operator allows.
    #[error("tool `{tool}` declares host `{host}`, which the operator's policy does not allow")]
    HostNotAllowed {
        /// The tool.
        tool: String,
        /// The declared host.
        host: String,
    },
    /// A limit is zero or above its ceiling.
    #[error("limit `{name}` is {value}; it must be between 1 and {max}")]
    InvalidLimit {
        /// The limit's name as written in files.
        name: &'static str,
        /// What was given.
        value: u64,
        /// The ceiling.
        max: u64,
    },
}
