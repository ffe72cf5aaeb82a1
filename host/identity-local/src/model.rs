//! The operations' inputs, as the SDK sends them, and their results as data.
//! A leaf: the domain takes and returns these, and only `api` turns them
//! into HTTP, so the domain never depends on the HTTP surface.

use airlock_identity::Secret;
use serde::Deserialize;

/// GetWorkloadAccessToken, …ForUserId and …ForJWT.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkloadTokenInput {
    pub(crate) workload_name: String,
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) user_token: Option<String>,
}

/// GetResourceOauth2Token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OAuth2TokenInput {
    pub(crate) workload_identity_token: String,
    pub(crate) resource_credential_provider_name: String,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) oauth2_flow: String,
    #[serde(default)]
    pub(crate) resource_oauth2_return_url: Option<String>,
    #[serde(default)]
    pub(crate) custom_state: Option<String>,
    #[serde(default)]
    pub(crate) force_authentication: Option<bool>,
    #[serde(default)]
    pub(crate) session_uri: Option<String>,
}

/// GetResourceApiKey.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyInput {
    pub(crate) workload_identity_token: String,
    pub(crate) resource_credential_provider_name: String,
}

/// CompleteResourceTokenAuth.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompleteInput {
    pub(crate) session_uri: String,
    pub(crate) user_identifier: UserIdentifierInput,
}

/// Who completes a session: exactly one of the two is expected.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserIdentifierInput {
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) user_token: Option<String>,
}

/// CreateWorkloadIdentity and UpdateWorkloadIdentity.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkloadInput {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) allowed_resource_oauth2_return_urls: Option<Vec<String>>,
}

/// GetWorkloadIdentity.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NameInput {
    pub(crate) name: String,
}

/// The provider's redirect to the callback.
#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    pub(crate) state: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) iss: Option<String>,
}

/// What GetResourceOauth2Token gives: a token, or where consent stands.
#[derive(Debug)]
pub(crate) enum TokenAnswer {
    /// A usable access token (from the vault, refreshed, or M2M).
    AccessToken(Secret),
    /// The user must consent: a new session and where to send the user.
    ConsentNeeded {
        authorization_url: String,
        session_uri: String,
    },
    /// The polled session has not completed (`IN_PROGRESS` or `FAILED`).
    SessionStatus {
        session_uri: String,
        status: &'static str,
    },
}

/// A workload identity as the control plane describes it.
#[derive(Debug)]
pub(crate) struct WorkloadDescription {
    pub(crate) name: String,
    pub(crate) arn: String,
    pub(crate) allowed_return_urls: Vec<String>,
    /// Unix seconds; 0 for workloads from the configuration file.
    pub(crate) created: i64,
    /// Unix seconds; 0 for workloads from the configuration file.
    pub(crate) updated: i64,
}
