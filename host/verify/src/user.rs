//! The verified user: the only kind of user the runtime runs a call for,
//! made only by this crate's verifiers (and, for local runs, by name).

use airlock_policy::UserId;
use serde::{Deserialize, Serialize};

use crate::{Secret, VerifyError};

/// What Airlock reads of a verified identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: the user id.
    pub sub: String,
    /// Email, when the identity provider gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Groups (`groups`, or Cognito's `cognito:groups`).
    #[serde(
        default,
        alias = "cognito:groups",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    /// Expiry, Unix seconds.
    #[serde(default, skip_serializing)]
    pub exp: Option<i64>,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing)]
    pub nbf: Option<i64>,
    /// Whether the provider verified `email` (ALB and Cognito send the
    /// string `"true"`).
    #[serde(
        default,
        deserialize_with = "bool_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub email_verified: Option<bool>,
    /// The nonce of an ID token (OpenID Connect), checked by whoever sent it.
    #[serde(default, skip_serializing)]
    pub nonce: Option<String>,
    /// The scopes an access token grants (space separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `true`, `false`, `"true"` or `"false"`; anything else is no answer.
fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) if s == "true" => Some(true),
        serde_json::Value::String(s) if s == "false" => Some(false),
        _ => None,
    })
}

impl Claims {
    /// Require `exp` in the future and `nbf`, when present, in the past.
    pub(crate) fn check_time(&self, now_unix: i64) -> Result<(), VerifyError> {
        match self.exp {
            None => Err(VerifyError::Invalid("it has no expiry".into())),
            Some(exp) if exp <= now_unix => Err(VerifyError::Invalid("it has expired".into())),
            _ if self.nbf.is_some_and(|nbf| nbf > now_unix) => {
                Err(VerifyError::Invalid("it is not valid yet".into()))
            }
            _ => Ok(()),
        }
    }
}

/// How a user was verified, which decides how the identity service is asked
/// for their workload access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A sign-in the host verified (the ALB's header): asked by user id.
    SignedIn,
    /// A bearer JWT from a trusted issuer: asked with the token itself.
    Jwt(Secret),
    /// Named by whoever runs the host, for local runs only: asked by user id.
    Local,
    /// Vouched for by AgentCore Runtime, which verified the caller and handed
    /// over their workload access token: that token is used as it is.
    Runtime(Secret),
}

/// A user whose identity one of this crate's verifiers checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    id: UserId,
    claims: Claims,
    proof: Proof,
    /// Whether its token's scopes limit what it may do.
    scoped: bool,
}

impl VerifiedUser {
    #[cfg(test)]
    pub(crate) fn new(claims: Claims, proof: Proof) -> Result<VerifiedUser, VerifyError> {
        VerifiedUser::with_prefix(claims, proof, None)
    }

    /// The user `prefix` + `sub`: the issuer's namespace where several share ids.
    pub(crate) fn with_prefix(
        claims: Claims,
        proof: Proof,
        prefix: Option<&str>,
    ) -> Result<VerifiedUser, VerifyError> {
        let id = UserId::parse(&format!("{}{}", prefix.unwrap_or_default(), claims.sub))
            .map_err(|e| VerifyError::Invalid(format!("its subject: {e}")))?;
        Ok(VerifiedUser {
            id,
            claims,
            proof,
            scoped: false,
        })
    }

    /// This user, limited to the scopes its token grants.
    pub(crate) fn scoped(self) -> VerifiedUser {
        VerifiedUser {
            scoped: true,
            ..self
        }
    }

    /// The scopes that limit this user, when its token carries them (access
    /// tokens of Airlock's own authorization server); `None`: not limited.
    pub fn granted_scopes(&self) -> Option<Vec<&str>> {
        self.scoped.then(|| {
            self.claims
                .scope
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .collect()
        })
    }

    /// A user named on the command line of a local run (`host run --user`,
    /// `host serve --local --user`): trusted because whoever runs the host
    /// chose it. Never for a shared server.
    pub fn local(id: UserId) -> VerifiedUser {
        VerifiedUser {
            claims: Claims {
                sub: id.as_str().to_string(),
                ..Claims::default()
            },
            id,
            proof: Proof::Local,
            scoped: false,
        }
    }

    /// A caller AgentCore Runtime vouched for by user id, with the workload
    /// access token it minted for them. Only for a host that nothing but the
    /// runtime can reach; the token, not the id, is what the vault checks.
    pub fn vouched_by_runtime(
        user_id: &str,
        workload_token: Secret,
    ) -> Result<VerifiedUser, VerifyError> {
        let id = UserId::parse(user_id)
            .map_err(|e| VerifyError::Invalid(format!("its user id: {e}")))?;
        Ok(VerifiedUser {
            claims: Claims {
                sub: user_id.to_string(),
                ..Claims::default()
            },
            id,
            proof: Proof::Runtime(workload_token),
            scoped: false,
        })
    }

    /// This user (verified from the token AgentCore Runtime passed through),
    /// with the workload access token the runtime minted for them.
    pub fn with_runtime_token(self, workload_token: Secret) -> VerifiedUser {
        VerifiedUser {
            proof: Proof::Runtime(workload_token),
            ..self
        }
    }

    /// The user id (the `sub`).
    pub fn id(&self) -> &UserId {
        &self.id
    }

    /// The claims read at verification.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// How the user was verified.
    pub fn proof(&self) -> &Proof {
        &self.proof
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_need_a_current_expiry() {
        let claims = |exp, nbf| Claims {
            sub: "a".into(),
            exp,
            nbf,
            ..Claims::default()
        };
        assert!(claims(Some(100), None).check_time(99).is_ok());
        assert!(claims(Some(100), None).check_time(100).is_err());
        assert!(claims(None, None).check_time(0).is_err());
        assert!(claims(Some(100), Some(50)).check_time(49).is_err());
        let cognito: Claims = serde_json::from_str(
            r#"{"sub": "u1", "email": "u@example.com", "cognito:groups": ["admins"], "exp": 5}"#,
        )
        .unwrap();
        assert_eq!(cognito.groups, ["admins"]);
    }
}
