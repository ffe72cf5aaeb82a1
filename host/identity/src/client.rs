//! The AgentCore Identity client, on the AWS SDK: the data plane, and the
//! control-plane calls that give each tool its own workload identity.
//!
//! The same code talks to AWS and to the local identity service: only the
//! endpoint URL and credentials differ.

use std::time::Duration;

use agentcore::config::BehaviorVersion;
use agentcore::error::{ProvideErrorMetadata, SdkError};
use agentcore::types::{Oauth2FlowType, SessionStatus, UserIdentifier};
use aws_sdk_bedrockagentcore as agentcore;
use aws_sdk_bedrockagentcorecontrol as control;

use airlock_verify::Secret;

/// Where and as whom the client calls. Unset fields come from the standard
/// AWS chain (environment, profile, ECS task role, ...).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// AWS region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// An endpoint other than AWS's, e.g. the local identity service.
    pub endpoint_url: Option<String>,
    /// The control plane's endpoint, if not AWS's and not `endpoint_url`
    /// (the local identity service serves both on one address).
    pub control_endpoint_url: Option<String>,
    /// Fixed credentials instead of the chain.
    pub credentials: Option<StaticCredentials>,
    /// Attempts per call for throttling and server errors (default 4).
    pub max_attempts: Option<u32>,
    /// First retry backoff (default 100 ms; doubles, with jitter).
    pub initial_backoff: Option<Duration>,
}

impl ClientConfig {
    /// A fixed endpoint and key pair, nothing from the environment (the
    /// local identity service; region `us-east-1`, the signing scope's).
    pub fn fixed(endpoint_url: &str, access_key_id: &str, secret_access_key: &str) -> ClientConfig {
        ClientConfig {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint_url.to_string()),
            credentials: Some(StaticCredentials {
                access_key_id: access_key_id.to_string(),
                secret_access_key: Secret::new(secret_access_key),
            }),
            ..Default::default()
        }
    }
}

/// An access key pair.
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GetWorkloadAccessToken.
    WorkloadToken,
    /// GetWorkloadAccessTokenForUserId.
    WorkloadTokenForUserId,
    /// GetWorkloadAccessTokenForJWT.
    WorkloadTokenForJwt,
    /// GetResourceOauth2Token.
    ResourceOauth2Token,
    /// GetResourceApiKey.
    ResourceApiKey,
    /// CompleteResourceTokenAuth.
    CompleteResourceTokenAuth,
    /// CreateWorkloadIdentity (control plane).
    CreateWorkloadIdentity,
    /// GetWorkloadIdentity (control plane).
    GetWorkloadIdentity,
    /// UpdateWorkloadIdentity (control plane).
    UpdateWorkloadIdentity,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 9] = [
        Operation::WorkloadToken,
        Operation::WorkloadTokenForUserId,
        Operation::WorkloadTokenForJwt,
        Operation::ResourceOauth2Token,
        Operation::ResourceApiKey,
        Operation::CompleteResourceTokenAuth,
        Operation::CreateWorkloadIdentity,
        Operation::GetWorkloadIdentity,
        Operation::UpdateWorkloadIdentity,
    ];

    /// The API name, as IAM policies and caller configs write it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::WorkloadToken => "GetWorkloadAccessToken",
            Operation::WorkloadTokenForUserId => "GetWorkloadAccessTokenForUserId",
            Operation::WorkloadTokenForJwt => "GetWorkloadAccessTokenForJWT",
            Operation::ResourceOauth2Token => "GetResourceOauth2Token",
            Operation::ResourceApiKey => "GetResourceApiKey",
            Operation::CompleteResourceTokenAuth => "CompleteResourceTokenAuth",
            Operation::CreateWorkloadIdentity => "CreateWorkloadIdentity",
            Operation::GetWorkloadIdentity => "GetWorkloadIdentity",
            Operation::UpdateWorkloadIdentity => "UpdateWorkloadIdentity",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an identity call failed. Messages come from the service, which never
/// puts a token in them; this type never holds one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The caller may not do this (IAM, or an invalid or expired session).
    #[error("{op}: access denied: {message}")]
    AccessDenied {
        /// The call.
        op: Operation,
        /// The service's message.
        message: String,
    },
    /// The workload access token or user token is invalid.
    #[error("{op}: unauthorized: {message}")]
    Unauthorized {
        /// The call.
        op: Operation,
        /// The service's message.
        message: String,
    },
    /// A parameter is wrong, or the request does not fit the resource's state.
    #[error("{op}: invalid request: {message}")]
    Validation {
        /// The call.
        op: Operation,
        /// The service's message.
        message: String,
        /// AgentCore's `reason` (`FieldValidationFailed`, `ResourceConflict`, ...), when it gave one.
        reason: Option<String>,
    },
    /// Still throttled after the retries.
    #[error("{op}: throttled after {attempts} attempts; slow down and retry later")]
    Throttled {
        /// The call.
        op: Operation,
        /// Attempts made.
        attempts: u32,
    },
    /// The resource exists already (a workload identity created twice).
    #[error("{op}: conflict: {message}")]
    Conflict {
        /// The call.
        op: Operation,
        /// The service's message.
        message: String,
    },
    /// The workload, provider or session does not exist.
    #[error("{op}: not found: {message}")]
    NotFound {
        /// The call.
        op: Operation,
        /// The service's message.
        message: String,
    },
    /// The service could not be reached or failed.
    #[error("{op}: identity service unavailable: {message}")]
    Unavailable {
        /// The call.
        op: Operation,
        /// What failed.
        message: String,
    },
}

/// What the vault answered for an OAuth2 token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    /// The access token.
    Token(Secret),
    /// The user must consent first: send them to `authorization_url`.
    Consent {
        /// Where the user consents.
        authorization_url: String,
        /// The pending session, for polling and for binding.
        session_uri: String,
    },
    /// The session is still waiting for the user.
    InProgress {
        /// The session.
        session_uri: String,
    },
    /// The session failed (denied consent, wrong user, expired).
    Failed {
        /// The session.
        session_uri: String,
    },
}

/// The OAuth2 flow of a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// 3-legged, on behalf of the user the workload token names.
    UserFederation {
        /// Where the browser goes after consent (the session binding URL).
        return_url: Option<String>,
        /// Opaque state handed back to the return URL.
        custom_state: Option<String>,
        /// Ask for consent again even when a token is stored.
        force_authentication: bool,
        /// Poll this pending session instead of starting one.
        session_uri: Option<String>,
    },
    /// Client credentials, for the workload itself.
    M2M,
}

/// Who completes a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The user id the workload token was issued for.
    UserId(String),
    /// A JWT from the user's identity provider.
    UserToken(Secret),
}

/// The AgentCore Identity client.
#[derive(Clone, Debug)]
pub struct IdentityClient {
    inner: agentcore::Client,
    control: control::Client,
    max_attempts: u32,
}

/// The shared settings of both SDK clients' builders (two crates, one shape).
macro_rules! configure {
    ($builder:expr, $config:expr, $endpoint:expr, $sdk:ident) => {{
        let mut builder = $builder;
        let config: &ClientConfig = $config;
        if let Some(region) = &config.region {
            builder = builder.region($sdk::config::Region::new(region.clone()));
        }
        if let Some(url) = $endpoint {
            builder = builder.endpoint_url(url.clone());
        }
        if let Some(c) = &config.credentials {
            builder = builder.credentials_provider($sdk::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_string(),
                None,
                None,
                "airlock",
            ));
        }
        builder
            .retry_config(
                $sdk::config::retry::RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1))
                    .with_initial_backoff(
                        config.initial_backoff.unwrap_or(Duration::from_millis(100)),
                    ),
            )
            .timeout_config(
                $sdk::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .build(),
            )
            .build()
    }};
}

const DEFAULT_ATTEMPTS: u32 = 4;

impl IdentityClient {
    /// Build from the standard AWS chain, with `config` overriding it.
    pub async fn from_env(config: &ClientConfig) -> IdentityClient {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Self::build(
            agentcore::config::Builder::from(&shared),
            control::config::Builder::from(&shared),
            config,
        )
    }

    /// Build without reading the environment: region, endpoint and
    /// credentials must be in `config` (used for the local identity service).
    pub fn from_config(config: &ClientConfig) -> IdentityClient {
        Self::build(
            agentcore::config::Builder::new().behavior_version(BehaviorVersion::latest()),
            control::config::Builder::new().behavior_version(BehaviorVersion::latest()),
            config,
        )
    }

    fn build(
        data: agentcore::config::Builder,
        control: control::config::Builder,
        config: &ClientConfig,
    ) -> IdentityClient {
        let control_endpoint = config
            .control_endpoint_url
            .as_ref()
            .or(config.endpoint_url.as_ref());
        IdentityClient {
            inner: agentcore::Client::from_conf(configure!(
                data,
                config,
                config.endpoint_url.as_ref(),
                agentcore
            )),
            control: control::Client::from_conf(configure!(
                control,
                config,
                control_endpoint,
                control
            )),
            max_attempts: config.max_attempts.unwrap_or(DEFAULT_ATTEMPTS).max(1),
        }
    }

    /// Make sure the workload identity `name` exists and allows `return_urls`
    /// (created if missing, its return URLs extended if short of them).
    /// Returns whether anything changed.
    pub async fn ensure_workload(
        &self,
        name: &str,
        return_urls: &[String],
    ) -> Result<bool, IdentityError> {
        let current = match self
            .control
            .get_workload_identity()
            .name(name)
            .send()
            .await
            .map_err(|e| self.error(Operation::GetWorkloadIdentity, e))
        {
            Ok(out) => out.allowed_resource_oauth2_return_urls.unwrap_or_default(),
            Err(IdentityError::NotFound { .. }) => {
                let created = self
                    .control
                    .create_workload_identity()
                    .name(name)
                    .set_allowed_resource_oauth2_return_urls(Some(return_urls.to_vec()))
                    .send()
                    .await
                    .map_err(|e| self.error(Operation::CreateWorkloadIdentity, e));
                return match created {
                    Ok(_) => Ok(true),
                    // Created by another replica in between: check it again.
                    Err(IdentityError::Conflict { .. }) => {
                        Box::pin(self.ensure_workload(name, return_urls)).await
                    }
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        if return_urls.iter().all(|u| current.contains(u)) {
            return Ok(false);
        }
        let mut urls = current;
        urls.extend(
            return_urls
                .iter()
                .filter(|u| !urls.contains(u))
                .cloned()
                .collect::<Vec<_>>(),
        );
        self.control
            .update_workload_identity()
            .name(name)
            .set_allowed_resource_oauth2_return_urls(Some(urls))
            .send()
            .await
            .map_err(|e| self.error(Operation::UpdateWorkloadIdentity, e))?;
        Ok(true)
    }

    /// A workload access token for the workload itself (M2M, API keys).
    pub async fn workload_token(&self, workload: &str) -> Result<Secret, IdentityError> {
        let op = Operation::WorkloadToken;
        let out = self
            .inner
            .get_workload_access_token()
            .workload_name(workload)
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(Secret::new(out.workload_access_token))
    }

    /// A workload access token for a user id (from a verified sign-in).
    pub async fn workload_token_for_user(
        &self,
        workload: &str,
        user_id: &str,
    ) -> Result<Secret, IdentityError> {
        let op = Operation::WorkloadTokenForUserId;
        let out = self
            .inner
            .get_workload_access_token_for_user_id()
            .workload_name(workload)
            .user_id(user_id)
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(Secret::new(out.workload_access_token))
    }

    /// A workload access token for a user's JWT from the identity provider.
    pub async fn workload_token_for_jwt(
        &self,
        workload: &str,
        user_token: &Secret,
    ) -> Result<Secret, IdentityError> {
        let op = Operation::WorkloadTokenForJwt;
        let out = self
            .inner
            .get_workload_access_token_for_jwt()
            .workload_name(workload)
            .user_token(user_token.expose())
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(Secret::new(out.workload_access_token))
    }

    /// An OAuth2 access token from the vault, or what the user must do first.
    pub async fn oauth2_token(
        &self,
        workload_token: &Secret,
        provider: &str,
        scopes: &[&str],
        flow: &Flow,
    ) -> Result<TokenAnswer, IdentityError> {
        let op = Operation::ResourceOauth2Token;
        let mut request = self
            .inner
            .get_resource_oauth2_token()
            .workload_identity_token(workload_token.expose())
            .resource_credential_provider_name(provider)
            .set_scopes(Some(scopes.iter().map(|s| s.to_string()).collect()));
        request = match flow {
            Flow::M2M => request.oauth2_flow(Oauth2FlowType::M2M),
            Flow::UserFederation {
                return_url,
                custom_state,
                force_authentication,
                session_uri,
            } => request
                .oauth2_flow(Oauth2FlowType::UserFederation)
                .set_resource_oauth2_return_url(return_url.clone())
                .set_custom_state(custom_state.clone())
                .set_session_uri(session_uri.clone())
                .set_force_authentication(force_authentication.then_some(true)),
        };
        let out = request.send().await.map_err(|e| self.error(op, e))?;
        if let Some(token) = out.access_token {
            return Ok(TokenAnswer::Token(Secret::new(token)));
        }
        let session_uri = out.session_uri.unwrap_or_default();
        match (out.authorization_url, out.session_status) {
            (Some(authorization_url), _) => Ok(TokenAnswer::Consent {
                authorization_url,
                session_uri,
            }),
            (None, Some(SessionStatus::Failed)) => Ok(TokenAnswer::Failed { session_uri }),
            (None, Some(SessionStatus::InProgress)) => Ok(TokenAnswer::InProgress { session_uri }),
            (None, _) => Err(IdentityError::Unavailable {
                op,
                message:
                    "the answer holds neither a token, an authorization URL nor a session status"
                        .into(),
            }),
        }
    }

    /// An API key from the vault.
    pub async fn api_key(
        &self,
        workload_token: &Secret,
        provider: &str,
    ) -> Result<Secret, IdentityError> {
        let op = Operation::ResourceApiKey;
        let out = self
            .inner
            .get_resource_api_key()
            .workload_identity_token(workload_token.expose())
            .resource_credential_provider_name(provider)
            .send()
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(Secret::new(out.api_key))
    }

    /// Bind a consented session to the signed-in user; only then is the token stored.
    pub async fn complete_session(
        &self,
        session_uri: &str,
        user: &UserRef,
    ) -> Result<(), IdentityError> {
        let user = match user {
            UserRef::UserId(id) => UserIdentifier::UserId(id.clone()),
            UserRef::UserToken(t) => UserIdentifier::UserToken(t.expose().to_string()),
        };
        self.inner
            .complete_resource_token_auth()
            .session_uri(session_uri)
            .user_identifier(user)
            .send()
            .await
            .map_err(|e| self.completion_error(e))?;
        Ok(())
    }

    /// A refused completion, typed by AgentCore's exception and its fields
    /// (never by its English): the binding service picks its page by them.
    pub(crate) fn completion_error<R: std::fmt::Debug>(
        &self,
        e: SdkError<
            agentcore::operation::complete_resource_token_auth::CompleteResourceTokenAuthError,
            R,
        >,
    ) -> IdentityError {
        use agentcore::operation::complete_resource_token_auth::CompleteResourceTokenAuthError as E;
        let op = Operation::CompleteResourceTokenAuth;
        let text = |m: Option<&str>| m.unwrap_or("no message").chars().take(300).collect();
        match e.as_service_error() {
            Some(E::ValidationException(v)) => IdentityError::Validation {
                op,
                message: text(Some(v.message())),
                reason: Some(v.reason().as_str().to_string()),
            },
            Some(E::AccessDeniedException(v)) => IdentityError::AccessDenied {
                op,
                message: text(v.message()),
            },
            Some(E::ResourceNotFoundException(v)) => IdentityError::NotFound {
                op,
                message: text(v.message()),
            },
            Some(E::UnauthorizedException(v)) => IdentityError::Unauthorized {
                op,
                message: text(v.message()),
            },
            Some(E::ThrottlingException(_)) => IdentityError::Throttled {
                op,
                attempts: self.max_attempts,
            },
            _ => self.error(op, e),
        }
    }

    fn error<E, R>(&self, op: Operation, e: SdkError<E, R>) -> IdentityError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let message = |m: Option<&str>| -> String {
            let m = m.unwrap_or("no message");
            m.chars().take(300).collect()
        };
        match &e {
            SdkError::ServiceError(ctx) => {
                let err = ctx.err();
                let text = message(err.message());
                match err.code() {
                    Some("AccessDeniedException") => {
                        IdentityError::AccessDenied { op, message: text }
                    }
                    Some("UnauthorizedException") => {
                        IdentityError::Unauthorized { op, message: text }
                    }
                    Some("ValidationException") => IdentityError::Validation {
                        op,
                        message: text,
                        reason: None,
                    },
                    Some("ThrottlingException") => IdentityError::Throttled {
                        op,
                        attempts: self.max_attempts,
                    },
                    Some("ResourceNotFoundException") => {
                        IdentityError::NotFound { op, message: text }
                    }
                    Some("ConflictException") => IdentityError::Conflict { op, message: text },
                    code => IdentityError::Unavailable {
                        op,
                        message: format!("{}: {text}", code.unwrap_or("unknown error")),
                    },
                }
            }
            SdkError::ConstructionFailure(_) => IdentityError::Validation {
                op,
                message: format!("the request could not be built: {}", source_chain(&e)),
                reason: None,
            },
            _ => IdentityError::Unavailable {
                op,
                message: source_chain(&e),
            },
        }
    }
}

/// The error and its sources in one line (the SDK's Display is terse).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcore::operation::complete_resource_token_auth::CompleteResourceTokenAuthError as E;
    use agentcore::types::ValidationExceptionReason;
    use agentcore::types::error::{
        AccessDeniedException, ResourceNotFoundException, ValidationException,
    };

    fn client() -> IdentityClient {
        IdentityClient::from_config(&ClientConfig::fixed("http://127.0.0.1:1", "AKID", "secret"))
    }

    /// AgentCore's own error types, as the SDK hands them over: each maps
    /// by its type and fields, whatever its message says.
    #[test]
    fn completion_errors_are_typed_by_agentcores_exceptions_not_their_english() {
        let c = client();
        let denied = E::AccessDeniedException(
            AccessDeniedException::builder()
                .message("Invalid or expired session")
                .build(),
        );
        assert!(matches!(
            c.completion_error(SdkError::service_error(denied, ())),
            IdentityError::AccessDenied { .. }
        ));
        let conflict = E::ValidationException(
            ValidationException::builder()
                .message("anything at all")
                .reason(ValidationExceptionReason::ResourceConflict)
                .build()
                .unwrap(),
        );
        assert!(matches!(
            c.completion_error(SdkError::service_error(conflict, ())),
            IdentityError::Validation { reason: Some(r), .. } if r == "ResourceConflict"
        ));
        let unknown = E::ResourceNotFoundException(
            ResourceNotFoundException::builder().message("no").build(),
        );
        assert!(matches!(
            c.completion_error(SdkError::service_error(unknown, ())),
            IdentityError::NotFound { .. }
        ));
    }
}
