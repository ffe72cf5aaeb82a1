//! Verification of inbound identities: who a request is for, proven
//! cryptographically: the ALB's `x-amzn-oidc-data` header, and user JWTs
//! from trusted OpenID issuers (discovery, JWKS with key rotation). The one
//! place that derives a user id from a token, so every service that binds or
//! brokers for a user derives the same one, and the only maker of a
//! [`VerifiedUser`].

mod alb;
mod cache;
mod discovery;
mod gate;
mod jwt;
mod secret;
mod user;

pub use alb::{AlbConfig, AlbVerifier};
pub use discovery::{Discovery, FetchError, SendError, fetch_json, http_client, send, without_url};
pub use jwt::{JwtIssuer, JwtVerifier, KnownIssuer, VerifyError};
pub use secret::Secret;
pub use user::{Claims, Proof, VerifiedUser};
