//! Airlock's identity layer on AgentCore Identity.
//!
//! - [`IdentityClient`]: AgentCore Identity's data plane through the AWS SDK.
//! - [`Broker`]: the runtime's [`TokenSource`](airlock_credential::TokenSource):
//!   a bearer token for (user, provider, scopes); caches tokens and workload
//!   access tokens.
//!
//! The AgentCore-compatible service for development and tests is its own
//! crate (`airlock-identity-local`); verifying inbound user tokens is
//! `airlock-verify`.

mod broker;
mod client;
pub mod clock;
pub mod session_uri;

pub use airlock_credential::{Consent, Credential, CredentialError, TokenSource};
pub use airlock_verify::{Secret, VerifiedUser};
pub use broker::{Broker, BrokerConfig, BrokerError};
pub use client::{
    ClientConfig, Flow, IdentityClient, IdentityError, Operation, StaticCredentials, TokenAnswer,
    UserRef,
};
pub use clock::{Clock, ManualClock, SystemClock};
