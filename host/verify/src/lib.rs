//! Verification of inbound identities: who a request is for, proven
//! cryptographically. Today user JWTs from trusted OpenID issuers (discovery,
//! JWKS with key rotation); the one place that derives a user id from a
//! token, so every service that binds or brokers for a user derives the same
//! one.

mod discovery;
mod jwt;

pub use discovery::{Discovery, FetchError, fetch_json, http_client, without_url};
pub use jwt::{JwtIssuer, JwtVerifier, VerifyError};
