//! Airlock's identity layer.
//!
//! - [`IdentityClient`]: AgentCore Identity's data plane through the AWS SDK.
//! - [`Broker`]: what the runtime asks for a bearer token for (user, provider,
//!   scopes); caches tokens and workload access tokens.
//! - [`local`]: an AgentCore-compatible identity service (SigV4, workloads,
//!   OAuth2 providers, an encrypted token vault in SQLite, session binding),
//!   the embedded default for local runs and tests.

mod broker;
mod client;
pub mod local;
mod secret;

pub use broker::{Broker, BrokerConfig, BrokerError, Consent, Credential};
pub use client::{
    ClientConfig, Flow, IdentityClient, IdentityError, Operation, StaticCredentials, TokenAnswer,
    UserRef,
};
pub use secret::Secret;
