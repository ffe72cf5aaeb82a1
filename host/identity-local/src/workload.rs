//! Workload access tokens: HMAC-signed by a key derived from the vault key,
//! naming the workload and, when issued for one, the user.

use airlock_identity::{Operation as Op, Secret};
use airlock_policy::UserId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::error::IdentityServiceError;
use crate::model::{ApiKeyInput, WorkloadTokenInput};
use crate::service::Service;

/// What a valid workload access token says.
pub(crate) struct WorkloadClaims {
    pub(crate) workload: String,
    pub(crate) user: Option<UserId>,
}

impl Service {
    /// GetWorkloadAccessToken and its ForUserId and ForJWT forms (`op` says
    /// which): the workload access token, naming the user when there is one.
    pub(crate) async fn workload_token(
        &self,
        op: Op,
        input: WorkloadTokenInput,
    ) -> Result<Secret, IdentityServiceError> {
        let workload = self.workload(&input.workload_name)?;
        let user = match op {
            Op::WorkloadTokenForUserId => {
                let user = input
                    .user_id
                    .ok_or_else(|| IdentityServiceError::validation("userId is required"))?;
                Some(
                    UserId::parse(&user)
                        .map_err(|e| IdentityServiceError::validation(format!("userId: {e}")))?,
                )
            }
            Op::WorkloadTokenForJwt => {
                let token = input
                    .user_token
                    .ok_or_else(|| IdentityServiceError::validation("userToken is required"))?;
                Some(
                    workload
                        .jwt
                        .verify(&token)
                        .await
                        .map_err(|e| IdentityServiceError::unauthorized(e.to_string()))?
                        .id()
                        .clone(),
                )
            }
            _ => None,
        };
        Ok(self.issue_workload_token(&input.workload_name, user.as_ref()))
    }

    fn issue_workload_token(&self, workload: &str, user: Option<&UserId>) -> Secret {
        let payload = json!({
            "w": workload,
            "u": user.map(UserId::as_str),
            "exp": self.now() + self.workload_token_ttl,
        });
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Secret::new(format!("v1.{payload}.{tag}"))
    }

    pub(crate) fn check_workload_token(
        &self,
        token: &str,
    ) -> Result<WorkloadClaims, IdentityServiceError> {
        let invalid = || {
            IdentityServiceError::unauthorized("the workload access token is invalid or expired")
        };
        let mut parts = token.split('.');
        let (Some("v1"), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if payload["exp"].as_i64().is_none_or(|exp| exp < self.now()) {
            return Err(invalid());
        }
        let workload = payload["w"].as_str().ok_or_else(invalid)?.to_string();
        if !self.has_workload(&workload) {
            return Err(invalid());
        }
        let user = match payload["u"].as_str() {
            Some(u) => Some(UserId::parse(u).map_err(|_| invalid())?),
            None => None,
        };
        Ok(WorkloadClaims { workload, user })
    }

    /// GetResourceApiKey: the provider's key, for a valid workload access token.
    pub(crate) fn api_key(&self, input: ApiKeyInput) -> Result<Secret, IdentityServiceError> {
        self.check_workload_token(&input.workload_identity_token)?;
        let name = &input.resource_credential_provider_name;
        let key = self.api_keys.get(name).ok_or_else(|| {
            IdentityServiceError::not_found(format!(
                "API key credential provider `{name}` does not exist"
            ))
        })?;
        Ok(key.clone())
    }
}
