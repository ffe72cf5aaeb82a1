//! The runtime's only view of identity: a [`TokenSource`] gives the bearer
//! token for one tool, a [`VerifiedUser`] and one OAuth grant, or the consent
//! the user must give first. Consent belongs to the tool: a grant a user gave
//! one tool is never handed to another. The runtime knows no AWS, no vault and
//! no provider; the identity crate's broker implements this trait, and tests
//! can too.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use airlock_policy::OAuthGrant;
use airlock_verify::VerifiedUser;
use http::HeaderValue;

/// A future a token source returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credential, CredentialError>> + Send + 'a>>;

/// A future [`TokenSource::enroll`] returns.
pub type EnrollFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CredentialError>> + Send + 'a>>;

/// Where the outbound hook gets credentials.
pub trait TokenSource: Send + Sync + 'static {
    /// The `authorization` value for `tool` acting for `user` with exactly
    /// the grant's scopes, or the consent the user owes that tool first.
    fn bearer<'a>(
        &'a self,
        tool: &'a str,
        user: &'a VerifiedUser,
        grant: &'a OAuthGrant,
    ) -> TokenFuture<'a>;

    /// The upstream answered 401 to `rejected`: a different value to resend
    /// with, or the consent the user owes again. Never `rejected` itself: a
    /// token the upstream refused is not handed out a second time.
    fn rejected<'a>(
        &'a self,
        tool: &'a str,
        user: &'a VerifiedUser,
        grant: &'a OAuthGrant,
        rejected: &'a HeaderValue,
    ) -> TokenFuture<'a>;

    /// Make `tool` known to the identity service (its own identity, which
    /// its consents belong to), before it is first served. Idempotent.
    fn enroll<'a>(&'a self, tool: &'a str) -> EnrollFuture<'a> {
        let _ = tool;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What a token source has for a request.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The value of the `authorization` header (marked sensitive).
    Bearer(HeaderValue),
    /// The user must consent first.
    Consent(Consent),
}

/// The user must consent at the provider before the tool can act for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// The tool the consent is for (consent belongs to a tool).
    pub tool: String,
    /// The provider.
    pub provider: String,
    /// Where the user consents.
    pub authorization_url: String,
    /// The pending session (kept host-side: for polling, not for the agent).
    pub session_uri: String,
}

/// Why a token source has no credential. The message never holds a token.
#[derive(Debug)]
pub struct CredentialError(Box<dyn std::error::Error + Send + Sync>);

impl CredentialError {
    /// Wrap the source's own error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> CredentialError {
        CredentialError(Box::new(error))
    }

    /// The source's own error, for callers that know its type.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for CredentialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
