//! Airlock's policy types: what a tool may reach and with which credentials,
//! and the limits of one call. Pure data and matching, no I/O, no wasmtime.
//!
//! Strings from manifests and operator files are parsed into these types once,
//! at load time; everything downstream matches typed values and denies by default.

mod config;
mod grants;
mod hosts;
mod limits;
mod operator;
mod tool;
mod user;

pub use config::ConfigError;
pub use grants::{Access, Grants, OAuthGrant, ProviderName, Scopes};
pub use hosts::{HostPattern, Origin, Scheme, is_restricted_ip};
pub use limits::{Limits, LimitsRequest};
pub use operator::{
    DOWNGRADE_SETTING, EchoedTokens, OperatorPolicy, Permissions, ProviderPolicy, Route,
};
pub use tool::ToolName;
pub use user::UserId;

/// A policy string or combination that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A tool's name breaks the rule.
    #[error("`{input}` is not a tool name: use {}", crate::ToolName::RULE)]
    InvalidToolName {
        /// The name (cut at 80 characters).
        input: String,
    },
    /// A policy file is not valid TOML or has unknown fields.
    #[error("{0}")]
    Syntax(String),
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
    /// A scope is empty or contains whitespace or control characters.
    #[error(
        "invalid scope `{}`: a scope is a non-empty string without spaces or control characters",
        .0.escape_debug()
    )]
    InvalidScope(String),
    /// A user id is empty, too long, or holds control characters.
    #[error("invalid user id `{}`: {reason}", .input.escape_debug())]
    InvalidUser {
        /// What was given (escaped when shown).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An OAuth grant names no host its token is for.
    #[error(
        "the oauth grant for provider `{0}` lists no hosts: name the API hosts its token is for"
    )]
    GrantWithoutHosts(String),
    /// An OAuth grant names a plain-http host: its token would cross the network in cleartext.
    #[error(
        "the oauth grant for provider `{provider}` names `{host}`: tokens are only sent over https, write https://"
    )]
    CleartextGrant {
        /// The provider.
        provider: String,
        /// The http host.
        host: String,
    },
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
    /// Two OAuth grants of one provider cover the same host: which scopes apply would be ambiguous.
    #[error(
        "host `{host}` is covered by two oauth grants of provider `{provider}`: merge them into one grant with all the scopes the tool needs"
    )]
    OverlappingGrants {
        /// The provider.
        provider: String,
        /// The host pattern.
        host: String,
    },
    /// The operator's policy does not allow the provider at all.
    #[error(
        "tool `{tool}` asks for provider `{provider}`, which the operator's policy does not allow: add [providers.{provider}] with the scopes tools may have to the policy file"
    )]
    ProviderNotAllowed {
        /// The tool.
        tool: String,
        /// The provider.
        provider: String,
    },
    /// The operator's policy caps the provider's scopes below what the tool asks.
    #[error(
        "tool `{tool}` asks provider `{provider}` for scopes {denied:?} beyond the operator's policy (allowed: {allowed:?}); widen [providers.{provider}] scopes in the policy file to allow them"
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
    #[error(
        "tool `{tool}` declares host `{host}`, which the operator's policy does not allow: add it (or a pattern covering it) to `allowed_hosts` in the policy file"
    )]
    HostNotAllowed {
        /// The tool.
        tool: String,
        /// The declared host.
        host: String,
    },
    /// A route's target is a wildcard.
    #[error("route to `{0}`: a route's `to` must be one origin, not a wildcard")]
    WildcardRoute(String),
    /// A route sends an https origin to plain http.
    #[error(
        "route `{from}` -> `{to}` sends https requests over plain http, with any token they carry; set `{}` = true in the policy to allow it (local tests only)",
        DOWNGRADE_SETTING
    )]
    DowngradingRoute {
        /// The https origin.
        from: String,
        /// The http target.
        to: String,
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
