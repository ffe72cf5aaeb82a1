//! The host's audit records: one per call, upload, removal, consent prompt
//! and change taken up from the shared store, written to the shared chained
//! trail (`airlock-audit`).

use serde::Serialize;

pub use airlock_audit::{
    Audit, AuditSink, BacklogFullError, BrokenChainError, CheckpointKey, FileSink, GENESIS, Reservation, Signed, StdoutSink, Tip,
    rotated_files, unix_now, unix_now_ms, verify, verify_archive, verify_signed,
};

/// A host an outgoing request went to, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Contact {
    pub(crate) host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) refused: Option<String>,
}

/// What is recorded.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Record {
    Call {
        request_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_request_id: Option<String>,
        user: String,
        tool: String,
        digest: String,
        outcome: &'static str,
        duration_ms: u64,
        contacted: Vec<Contact>,
        /// Echoed credentials overwritten (where, how encoded, how often).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        redactions: Vec<airlock_runtime::Redaction>,
    },
    Consent {
        request_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_request_id: Option<String>,
        user: String,
        tool: String,
        provider: String,
    },
    Upload {
        by: String,
        tool: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        accepted: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        check: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        replaced: Option<String>,
    },
    Remove {
        by: String,
        tool: String,
        digest: String,
    },
    /// A change another replica made to the shared store, taken up here.
    Sync {
        tool: String,
        digest: String,
        served: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}
