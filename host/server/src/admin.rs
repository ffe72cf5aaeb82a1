//! The admin API, on its own listener with its own credential: upload,
//! list and remove tools. An upload passes every check before anything is
//! kept; a refused one leaves nothing behind.

use std::sync::Arc;

use airlock_credential::TokenSource;
use airlock_manifest::ManifestError;
use airlock_policy::OperatorPolicy;
use airlock_runtime::LoadError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{Audit, Record};
use crate::calls::Calls;
use crate::config::AdminKey;
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
    fn signer_changed(name: String, was: &Option<String>, now: &Option<String>) -> UploadError {
        let describe = |s: &Option<String>| s.clone().unwrap_or_else(|| "no one (unsigned)".into());
        UploadError::SignerChanged {
            was: describe(was),
            now: describe(now),
            name,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NotComponent(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::NameMismatch { .. } => StatusCode::BAD_REQUEST,
            UploadError::Pinned { .. }
            | UploadError::SignerChanged { .. }
            | UploadError::UploadedElsewhere { .. } => StatusCode::CONFLICT,
            UploadError::Signature(_) => StatusCode::FORBIDDEN,
            UploadError::Policy(_) => StatusCode::FORBIDDEN,
            UploadError::Manifest(_) | UploadError::Imports(_) | UploadError::Compile(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            UploadError::Identity(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The check that failed, as a word for logs, audit and clients.
    pub(crate) fn check(&self) -> &'static str {
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
    admin: &Admin,
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

pub(crate) struct Admin {
    pub(crate) calls: Arc<Calls>,
    pub(crate) policy: Arc<OperatorPolicy>,
    pub(crate) store: Arc<dyn ToolStore>,
    pub(crate) audit: Audit,
    pub(crate) keys: Vec<AdminKey>,
    /// Admins by a bearer JWT and a group.
    pub(crate) oidc: Option<(airlock_verify::JwtVerifier, String)>,
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

impl ChangeError {
    fn into_response(self) -> Response {
        match self {
            ChangeError::Refused(refused) => {
                let mut response = problem(refused.status(), "refused", &refused.message());
                if let Ok(v) = header::HeaderValue::from_str(refused.check()) {
                    response.headers_mut().insert("x-airlock-check", v);
                }
                response
            }
            ChangeError::Store(e) => {
                tracing::error!("tool store: {e}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "the tool store failed; nothing was changed",
                )
            }
        }
    }
}

impl Admin {
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
            check: Some(refused.check()),
            reason: Some(refused.message()),
            replaced: None,
        });
        tracing::info!(tool = %name, check = refused.check(), "upload refused");
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
        let checked = {
            let (a, name, wasm) = (self.clone(), name.to_string(), wasm.clone());
            // Compiling is CPU-bound: off the async workers. A store that
            // cannot be read is a store failure, not a refusal of the tool.
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
            .map_err(|e| ChangeError::Store(format!("the check stopped: {e}")))??
        };
        let (served, signer) = checked.map_err(refuse)?;
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

    /// Stop serving the stored tool `name` and forget it: the entry removed.
    /// `only_by`: remove it only if that uploader put it there. Its own task,
    /// as [`Admin::accept`].
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

/// The admin key a request presented, by name.
#[derive(Clone)]
struct Operator(String);

fn key_matches(key: &AdminKey, presented: &str) -> bool {
    hex::encode(Sha256::digest(presented.as_bytes())).eq_ignore_ascii_case(&key.sha256)
}

async fn authenticate(
    State(admin): State<Arc<Admin>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send Authorization: Bearer <admin key>",
        );
    };
    let operator = match admin.keys.iter().find(|k| key_matches(k, presented)) {
        Some(key) => Some(key.name.clone()),
        None => match &admin.oidc {
            // Not a key: a sign-in of someone in the admin group, or nothing.
            Some((verifier, group)) => match verifier.verify(presented).await {
                Ok(user) if user.claims().groups.iter().any(|g| g == group) => {
                    Some(format!("oidc:{}", user.id()))
                }
                Ok(user) => {
                    tracing::info!(user = %user.id(), "admin API: signed in, not in the admin group");
                    None
                }
                Err(_) => None,
            },
            None => None,
        },
    };
    match operator {
        Some(operator) => {
            request.extensions_mut().insert(Operator(operator));
            next.run(request).await
        }
        None => problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "that is not an admin credential of this host",
        ),
    }
}

fn problem(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response()
}

/// The admin routes.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/tools", get(list))
        .route(
            "/admin/tools/{name}",
            axum::routing::put(upload).delete(remove),
        )
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(admin)
}

async fn list(State(admin): State<Arc<Admin>>) -> Response {
    let store = admin.store.clone();
    // The tools served are listed either way; without the store's records
    // the answer says why, and is not a success.
    let (stored, unread) = match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(stored)) => (stored, None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(format!("reading the store stopped: {e}"))),
    };
    let tools: Vec<_> = admin
        .calls
        .registry
        .all()
        .iter()
        .map(|s| {
            let kept = stored.iter().find(|t| t.name == s.name());
            json!({
                "name": s.name(),
                "version": s.tool.manifest().version,
                "digest": s.digest,
                "source": match &s.source {
                    Source::Folder(f) => f.display().to_string(),
                    Source::Store => "store".to_string(),
                },
                "uploaded_by": kept.map(|t| t.uploaded_by.clone()),
                "uploaded_at": kept.map(|t| t.uploaded_at),
                "signer": kept.and_then(|t| t.signer.clone()),
            })
        })
        .collect();
    match unread {
        None => axum::Json(json!({ "tools": tools })).into_response(),
        Some(e) => {
            tracing::warn!("admin list: the tool store could not be read: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": format!("the tool store could not be read ({e}): the tools served are listed without their upload records"),
                    "tools": tools,
                })),
            )
                .into_response()
        }
    }
}

async fn upload(
    State(admin): State<Arc<Admin>>,
    axum::Extension(Operator(operator)): axum::Extension<Operator>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let limit = admin.max_upload_kib;
    let Ok(wasm) = axum::body::to_bytes(body, (limit << 10) + 1).await else {
        let refused = UploadError::TooLarge { limit_kib: limit };
        return admin
            .refuse(&name, &operator, None, refused)
            .into_response();
    };
    let wasm = wasm.to_vec();
    // The armored signature, base64 so that it fits in one header line.
    let signature = match headers.get("x-airlock-signature") {
        None => None,
        Some(v) => match base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(s) => Some(s),
            None => {
                let refused = UploadError::Signature(SignatureError::Malformed);
                return admin
                    .refuse(&name, &operator, None, refused)
                    .into_response();
            }
        },
    };
    match admin.accept(&name, wasm, signature, &operator).await {
        Ok((entry, replaced)) => {
            let status = if replaced.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                axum::Json(json!({
                    "name": entry.name,
                    "digest": entry.digest,
                    "replaced": replaced.map(|r| r.digest),
                })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn remove(
    State(admin): State<Arc<Admin>>,
    axum::Extension(Operator(operator)): axum::Extension<Operator>,
    Path(name): Path<String>,
) -> Response {
    match admin.remove(&name, &operator, None).await {
        Ok(Some(removed)) => {
            axum::Json(json!({"name": name, "removed": removed.digest})).into_response()
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no stored tool is named `{name}`"),
        ),
        Err(e) => e.into_response(),
    }
}
