//! What every new tool passes before it is served, whichever way it came (an
//! upload to the admin API, a file in the watched folder, another replica's
//! change in the store): the checks in order, then the store and the
//! registry changed together. A refused tool leaves nothing behind.

use std::sync::Arc;

use airlock_credential::TokenSource;
use airlock_manifest::ManifestError;
use airlock_policy::OperatorPolicy;
use airlock_runtime::LoadError;

use crate::audit::{Audit, Record};
use crate::calls::Calls;
use crate::registry::{Served, Source};
use crate::signing::{SignatureError, Trusted};
use crate::store::{StoredTool, ToolStore, digest_of};

/// Why an upload was refused, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UploadError {
    TooLarge {
        limit_kib: usize,
    },
    NotComponent(String),
    Manifest(String),
    NameMismatch {
        url: String,
        manifest: String,
    },
    Pinned {
        name: String,
    },
    /// A watched file named like a tool the admin API uploaded.
    UploadedElsewhere {
        name: String,
        owner: String,
    },
    Signature(SignatureError),
    SignerChanged {
        name: String,
        was: String,
        now: String,
    },
    Imports(String),
    Policy(String),
    Compile(String),
    /// The tool's workload identity could not be made (its consents' owner).
    Identity(String),
}

impl UploadError {
    pub(crate) fn signer_changed(name: String, was: &Option<String>, now: &Option<String>) -> UploadError {
        let describe = |s: &Option<String>| s.clone().unwrap_or_else(|| "no one (unsigned)".into());
        UploadError::SignerChanged {
            was: describe(was),
            now: describe(now),
            name,
        }
    }

    /// The check that failed, as a word for logs, audit and clients.
    pub(crate) fn failed_check(&self) -> &'static str {
        match self {
            UploadError::TooLarge { .. } => "size",
            UploadError::NotComponent(_) => "component",
            UploadError::Manifest(_) => "manifest",
            UploadError::NameMismatch { .. } => "name",
            UploadError::Pinned { .. } => "name",
            UploadError::UploadedElsewhere { .. } => "name",
            UploadError::SignerChanged { .. } => "name",
            UploadError::Signature(_) => "signature",
            UploadError::Imports(_) => "imports",
            UploadError::Policy(_) => "policy",
            UploadError::Compile(_) => "compile",
            UploadError::Identity(_) => "identity",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            UploadError::TooLarge { limit_kib } => {
                format!("the upload is larger than {limit_kib} KiB (admin.max_upload_kib)")
            }
            UploadError::NotComponent(m)
            | UploadError::Manifest(m)
            | UploadError::Imports(m)
            | UploadError::Policy(m)
            | UploadError::Compile(m) => m.clone(),
            UploadError::NameMismatch { url, manifest } => format!(
                "the upload is named `{url}` but the tool's manifest names `{manifest}`; upload it as `{manifest}` (PUT /admin/tools/{manifest}, or {manifest}.wasm in the watched folder)"
            ),
            UploadError::Signature(e) => e.to_string(),
            UploadError::SignerChanged { name, was, now } => format!(
                "`{name}` was signed by {was}; this one by {now}: only the same signer may replace it"
            ),
            UploadError::Pinned { name } => format!(
                "`{name}` is served from a configured tools folder; change it there, not by upload"
            ),
            UploadError::UploadedElsewhere { name, owner } => format!(
                "`{name}` was uploaded by {owner}; the watched file does not replace it (remove it with DELETE /admin/tools/{name} first)"
            ),
            UploadError::Identity(e) => format!(
                "the tool's own workload identity could not be made at the identity service ({e}); nothing was kept; try again"
            ),
        }
    }
}

/// Every check an upload must pass, in order; the tool ready to serve and
/// who signed it. `last_signer`: who signed the last tool of that name the
/// store kept, removed or not (`Some(None)`: unsigned).
pub(crate) fn check(
    admin: &Intake,
    url_name: &str,
    wasm: &[u8],
    signature: Option<&str>,
    last_signer: Option<&Option<String>>,
) -> Result<(Served, Option<String>), UploadError> {
    let (calls, policy, max_upload_kib) = (&admin.calls, &admin.policy, admin.max_upload_kib);
    if wasm.len() > max_upload_kib << 10 {
        return Err(UploadError::TooLarge {
            limit_kib: max_upload_kib,
        });
    }
    let manifest_error = |e: ManifestError| match e {
        ManifestError::NotWasm | ManifestError::CoreModule | ManifestError::Corrupt(_) => {
            UploadError::NotComponent(e.to_string())
        }
        e => UploadError::Manifest(e.to_string()),
    };
    let inspected = airlock_manifest::inspect(wasm).map_err(manifest_error)?;
    let name = inspected.manifest.name;
    if name != url_name {
        return Err(UploadError::NameMismatch {
            url: url_name.to_string(),
            manifest: name,
        });
    }
    if let Some(current) = calls.registry.get(&name)
        && matches!(current.source, Source::Folder(_))
    {
        return Err(UploadError::Pinned { name });
    }
    // Before compiling: a signature is cheap to check, a compile is not.
    let signer = match signature {
        Some(sig) => Some(
            admin
                .trusted
                .verify(sig, wasm)
                .map_err(UploadError::Signature)?,
        ),
        None if admin.require_signature => return Err(UploadError::Signature(SignatureError::Missing)),
        None => None,
    };
    // Consent given to one signer's code never reaches another's, even
    // after the first tool was removed (its users' tokens stay with its name).
    if !admin.allow_signer_change
        && let Some(was) = last_signer
        && *was != signer
    {
        return Err(UploadError::signer_changed(name, was, &signer));
    }
    let tool = calls.runtime.load(wasm, policy).map_err(|e| match e {
        LoadError::Manifest(e) => manifest_error(e),
        e @ LoadError::Import { .. } => UploadError::Imports(e.to_string()),
        e @ LoadError::Policy(_) => UploadError::Policy(e.to_string()),
        e => UploadError::Compile(e.to_string()),
    })?;
    let served = Served::new(tool, digest_of(wasm), Source::Store)
        .map_err(|e| UploadError::Manifest(e.to_string()))?;
    Ok((served, signer))
}

/// Uploads, the watched folder and the store's changes: one set of checks,
/// one change at a time.
pub(crate) struct Intake {
    pub(crate) calls: Arc<Calls>,
    pub(crate) policy: Arc<OperatorPolicy>,
    pub(crate) store: Arc<dyn ToolStore>,
    pub(crate) audit: Audit,
    pub(crate) max_upload_kib: usize,
    pub(crate) trusted: Trusted,
    pub(crate) require_signature: bool,
    pub(crate) allow_signer_change: bool,
    /// Where accepted tools that act for users get their own identity.
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
    // One change at a time: the store and the registry move together.
    pub(crate) changing: tokio::sync::Mutex<()>,
}

/// Why a change did not happen.
#[derive(Debug)]
pub(crate) enum ChangeError {
    /// A check refused it; nothing was kept.
    Refused(UploadError),
    /// The store failed; nothing was changed.
    Store(String),
}

impl Intake {
    /// Record a refused upload; what to answer.
    pub(crate) fn refuse(
        &self,
        name: &str,
        by: &str,
        digest: Option<String>,
        refused: UploadError,
    ) -> ChangeError {
        self.audit.record(Record::Upload {
            by: by.to_string(),
            tool: name.to_string(),
            digest,
            accepted: false,
            check: Some(refused.failed_check()),
            reason: Some(refused.message()),
            replaced: None,
        });
        tracing::info!(tool = %name, check = refused.failed_check(), "upload refused");
        ChangeError::Refused(refused)
    }

    /// Check `wasm` as tool `name`, keep it, and serve it: the entry it replaced.
    /// Runs as its own task: a caller that goes away mid-change cannot stop
    /// it between the store and the registry.
    pub(crate) async fn accept(
        self: &Arc<Self>,
        name: &str,
        wasm: Vec<u8>,
        signature: Option<String>,
        by: &str,
    ) -> Result<(StoredTool, Option<StoredTool>), ChangeError> {
        let (me, name, by) = (self.clone(), name.to_string(), by.to_string());
        tokio::spawn(async move { me.apply(&name, wasm, signature, &by).await })
            .await
            .map_err(|e| ChangeError::Store(format!("the change stopped: {e}")))?
    }

    async fn apply(
        self: &Arc<Self>,
        name: &str,
        wasm: Vec<u8>,
        signature: Option<String>,
        by: &str,
    ) -> Result<(StoredTool, Option<StoredTool>), ChangeError> {
        let digest = digest_of(&wasm);
        let refuse = |refused: UploadError| self.refuse(name, by, Some(digest.clone()), refused);
        if wasm.len() > self.max_upload_kib << 10 {
            return Err(refuse(UploadError::TooLarge {
                limit_kib: self.max_upload_kib,
            }));
        }
        let _one = self.changing.lock().await;
        let wasm = Arc::new(wasm);
        let (served, signer) = self.checked(name, &wasm, signature).await?.map_err(refuse)?;
        // Consent belongs to the tool: its identity exists before it is served.
        if let Some(tokens) = &self.tokens
            && !served.tool.permissions().grants.oauth.is_empty()
        {
            tokens
                .enroll(name)
                .await
                .map_err(|e| refuse(UploadError::Identity(e.to_string())))?;
        }
        let entry_signer = signer.clone();
        let entry = StoredTool {
            name: name.to_string(),
            digest: digest.clone(),
            size: wasm.len() as u64,
            uploaded_by: by.to_string(),
            uploaded_at: crate::audit::unix_now(),
            signer,
        };
        let replaced = {
            let (store, entry) = (self.store.clone(), entry.clone());
            let same_signer = !self.allow_signer_change;
            tokio::task::spawn_blocking(move || store.put(&entry, &wasm, same_signer))
                .await
                .map_err(|e| ChangeError::Store(format!("storing stopped: {e}")))?
                // Another replica's change since the check: decided in the write itself.
                .map_err(|e| match e.signer_changed_from() {
                    Some(was) => refuse(UploadError::signer_changed(
                        name.to_string(),
                        was,
                        &entry_signer,
                    )),
                    None => ChangeError::Store(e.to_string()),
                })?
        };
        self.calls.registry.insert(served);
        self.audit.record(Record::Upload {
            by: by.to_string(),
            tool: name.to_string(),
            digest: Some(digest.clone()),
            accepted: true,
            check: None,
            reason: None,
            replaced: replaced.as_ref().map(|r| r.digest.clone()),
        });
        tracing::info!(tool = %name, digest = %digest, by = %by, "tool accepted");
        Ok((entry, replaced))
    }

    /// [`check`], off the async workers (compiling is CPU-bound). A store
    /// that cannot be read is a store failure, not a refusal of the tool.
    async fn checked(
        self: &Arc<Self>,
        name: &str,
        wasm: &Arc<Vec<u8>>,
        signature: Option<String>,
    ) -> Result<Result<(Served, Option<String>), UploadError>, ChangeError> {
        let (a, name, wasm) = (self.clone(), name.to_string(), wasm.clone());
        tokio::task::spawn_blocking(move || {
            let signers = a
                .store
                .signers()
                .map_err(|e| ChangeError::Store(e.to_string()))?;
            Ok(check(
                &a,
                &name,
                &wasm,
                signature.as_deref(),
                signers.get(&name),
            ))
        })
        .await
        .map_err(|e| ChangeError::Store(format!("the check stopped: {e}")))?
    }

    /// Stop serving the stored tool `name` and forget it: the entry removed.
    /// `only_by`: remove it only if that uploader put it there. Its own task,
    /// as [`Intake::accept`].
    pub(crate) async fn remove(
        self: &Arc<Self>,
        name: &str,
        by: &str,
        only_by: Option<&str>,
    ) -> Result<Option<StoredTool>, ChangeError> {
        let (me, name, by) = (self.clone(), name.to_string(), by.to_string());
        let only_by = only_by.map(str::to_string);
        tokio::spawn(async move { me.unstore(&name, &by, only_by.as_deref()).await })
            .await
            .map_err(|e| ChangeError::Store(format!("the change stopped: {e}")))?
    }

    async fn unstore(
        self: &Arc<Self>,
        name: &str,
        by: &str,
        only_by: Option<&str>,
    ) -> Result<Option<StoredTool>, ChangeError> {
        let _one = self.changing.lock().await;
        if let Some(current) = self.calls.registry.get(name)
            && matches!(current.source, Source::Folder(_))
        {
            return Err(ChangeError::Refused(UploadError::Pinned {
                name: name.to_string(),
            }));
        }
        let store = self.store.clone();
        let (name_owned, only_by) = (name.to_string(), only_by.map(str::to_string));
        let removed = tokio::task::spawn_blocking(move || {
            if let Some(owner) = &only_by {
                let listed = store.list()?;
                if !listed
                    .iter()
                    .any(|t| t.name == name_owned && &t.uploaded_by == owner)
                {
                    return Ok(None);
                }
            }
            store.remove(&name_owned)
        })
        .await
        .map_err(|e| ChangeError::Store(format!("removing stopped: {e}")))?
        .map_err(|e| ChangeError::Store(e.to_string()))?;
        if let Some(removed) = &removed {
            self.calls.registry.remove(name);
            self.audit.record(Record::Remove {
                by: by.to_string(),
                tool: name.to_string(),
                digest: removed.digest.clone(),
            });
        }
        Ok(removed)
    }
}
