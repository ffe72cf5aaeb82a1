//! The crate's error types, in a leaf module so that the store, the keys,
//! the domain and the HTTP surface all depend on it and never on each other.

/// A storage failure (never carries a value from the vault).
#[derive(Debug, thiserror::Error)]
#[error("token vault: {0}")]
pub(crate) struct StoreError(String);

impl StoreError {
    pub(crate) fn new(m: impl Into<String>) -> StoreError {
        StoreError(m.into())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A ValidationException's `reason`: AgentCore tells a malformed field from
/// a request the resource is not ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValidationReason {
    /// A field is missing or malformed.
    FieldValidationFailed,
    /// The request does not fit the resource's state.
    ResourceConflict,
}

impl ValidationReason {
    /// The name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ValidationReason::FieldValidationFailed => "FieldValidationFailed",
            ValidationReason::ResourceConflict => "ResourceConflict",
        }
    }
}

/// Why an operation was refused, as one of AgentCore's exceptions. The
/// domain returns it; the HTTP surface (`api`) turns it into the answer, so
/// the domain never builds a response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdentityServiceError {
    /// `ValidationException`: the only kind that carries a `reason`.
    Validation {
        reason: ValidationReason,
        message: String,
    },
    /// `AccessDeniedException`.
    AccessDenied(String),
    /// `UnauthorizedException`.
    Unauthorized(String),
    /// `ResourceNotFoundException`.
    ResourceNotFound(String),
    /// `ConflictException`.
    Conflict(String),
    /// `InternalServerException`.
    InternalServer(String),
}

impl IdentityServiceError {
    pub(crate) fn validation(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::Validation {
            reason: ValidationReason::FieldValidationFailed,
            message: m.into(),
        }
    }

    /// A request that does not fit the resource's state (AgentCore's
    /// `ValidationException` with reason `ResourceConflict`).
    pub(crate) fn not_ready(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::Validation {
            reason: ValidationReason::ResourceConflict,
            message: m.into(),
        }
    }

    pub(crate) fn denied(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::AccessDenied(m.into())
    }

    pub(crate) fn unauthorized(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::Unauthorized(m.into())
    }

    pub(crate) fn not_found(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::ResourceNotFound(m.into())
    }

    pub(crate) fn conflict(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::Conflict(m.into())
    }

    /// An internal failure whose message the caller may see.
    pub(crate) fn internal(m: impl Into<String>) -> IdentityServiceError {
        IdentityServiceError::InternalServer(m.into())
    }

    /// AgentCore's answer to any session one may not complete or poll: it
    /// does not say whether the session exists, ended or belongs to another.
    pub(crate) fn invalid_session() -> IdentityServiceError {
        IdentityServiceError::denied("Invalid or expired session")
    }

    /// AgentCore's exception name (`x-amzn-errortype`).
    pub(crate) fn exception(&self) -> &'static str {
        match self {
            IdentityServiceError::Validation { .. } => "ValidationException",
            IdentityServiceError::AccessDenied(_) => "AccessDeniedException",
            IdentityServiceError::Unauthorized(_) => "UnauthorizedException",
            IdentityServiceError::ResourceNotFound(_) => "ResourceNotFoundException",
            IdentityServiceError::Conflict(_) => "ConflictException",
            IdentityServiceError::InternalServer(_) => "InternalServerException",
        }
    }

    /// The `reason` field, which only a ValidationException has.
    pub(crate) fn reason(&self) -> Option<ValidationReason> {
        match self {
            IdentityServiceError::Validation { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The `message` field.
    pub(crate) fn message(&self) -> &str {
        match self {
            IdentityServiceError::Validation { message, .. }
            | IdentityServiceError::AccessDenied(message)
            | IdentityServiceError::Unauthorized(message)
            | IdentityServiceError::ResourceNotFound(message)
            | IdentityServiceError::Conflict(message)
            | IdentityServiceError::InternalServer(message) => message,
        }
    }
}

impl std::fmt::Display for IdentityServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.exception(), self.message())
    }
}

impl std::error::Error for IdentityServiceError {}

/// A storage or other internal failure: logged in full, answered in general,
/// so that no path, SQL or vault detail reaches a caller.
pub(crate) fn internal(e: impl std::fmt::Display) -> IdentityServiceError {
    tracing::error!(target: "airlock::identity", "{e}");
    IdentityServiceError::internal("the identity service failed; see its log")
}
