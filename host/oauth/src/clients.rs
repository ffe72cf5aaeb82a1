//! Who a client is: one the operator configured, one registered dynamically
//! (RFC 7591; its registration is sealed into its client id, so nothing is
//! stored and every replica knows it), or one whose client id is the HTTPS
//! URL of its metadata document (Client ID Metadata Documents), fetched with
//! the same guard tools get: no loopback, private, link-local or metadata
//! address, before or after DNS; a size cap, a timeout, no redirects; cached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_policy::is_restricted_ip;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{CimdConfig, PreRegistered};
use crate::keys::{Keys, Purpose};
use crate::registration::{
    ClientAuth, Registration, RegistrationError, auth_method, check_grants, check_redirect_uris,
};

const DOCUMENT_MAX_BYTES: usize = 16 << 10;
const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_ENTRIES: usize = 1024;
const CACHE_DEFAULT: Duration = Duration::from_secs(300);
const CACHE_MIN: Duration = Duration::from_secs(60);
const CACHE_MAX: Duration = Duration::from_secs(86_400);
/// How long a document that could not be used stays refused unfetched.
const FAILURE_KEEP: Duration = Duration::from_secs(60);
/// Fetches under way at once: more wait for their turn.
const FETCHES_AT_ONCE: usize = 16;

/// A client the façade knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its client id.
    pub id: String,
    /// Its name, as it gave it (shown on the consent page, never trusted).
    pub name: Option<String>,
    /// The redirect URIs it may use, exactly.
    pub redirect_uris: Vec<String>,
    /// How it authenticates at the token endpoint.
    pub auth: ClientAuth,
    /// How the façade knows it: `configured`, `dynamic`, `metadata_document`.
    pub kind: &'static str,
    /// A configured client's secret, as its sha256 (hex).
    secret_sha256: Option<String>,
}

/// Why a client is unknown or unusable; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not configured, not registered here, not a metadata URL.
    #[error("unknown client")]
    Unknown,
    /// The kind of registration is switched off here.
    #[error("{0} is switched off on this server")]
    Disabled(&'static str),
    /// The metadata document could not be used.
    #[error("the client's metadata document {url}: {reason}")]
    Document {
        /// Its URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A registration request that cannot be accepted.
    #[error("{0}")]
    Metadata(RegistrationError),
}

/// The client that fetches metadata documents could not be made. Causes
/// are in the text, not also a source, so `{:#}` reports print them once.
#[derive(Debug, thiserror::Error)]
pub enum DocumentClientError {
    /// A file of `oauth.cimd.extra_root_certificates` could not be read.
    #[error("oauth.cimd.extra_root_certificates {}: {error}", path.display())]
    RootCertificateUnreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file of `oauth.cimd.extra_root_certificates` holds no PEM certificate.
    #[error("oauth.cimd.extra_root_certificates {}: {error}", path.display())]
    RootCertificateInvalid {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: reqwest::Error,
    },
    /// The HTTP client could not be built (its TLS backend).
    #[error("the metadata document client: {0}")]
    Build(reqwest::Error),
}

/// A client id metadata document (draft-ietf-oauth-client-id-metadata-document).
#[derive(Debug, Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
}

/// A dynamic client as sealed into its id.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    name: Option<String>,
    redirect_uris: Vec<String>,
    auth: ClientAuth,
}

const DYNAMIC_PREFIX: &str = "dyn.";

/// Every way the façade knows clients.
pub struct Clients {
    configured: Vec<PreRegistered>,
    dynamic: bool,
    cimd: Option<Fetcher>,
}

struct Fetcher {
    http: reqwest::Client,
    allow_private: bool,
    cache: Mutex<HashMap<String, (Result<Client, ClientError>, Instant)>>,
    fetches: tokio::sync::Semaphore,
}

impl Clients {
    /// The configured clients, dynamic registration if `dynamic`, metadata
    /// documents if `cimd` is on.
    pub fn new(
        configured: Vec<PreRegistered>,
        dynamic: bool,
        cimd: &CimdConfig,
    ) -> Result<Clients, DocumentClientError> {
        let cimd = if cimd.enabled {
            Some(Fetcher::new(cimd)?)
        } else {
            None
        };
        Ok(Clients {
            configured,
            dynamic,
            cimd,
        })
    }

    /// Whether client ids may be metadata document URLs.
    pub fn documents(&self) -> bool {
        self.cimd.is_some()
    }

    /// Whether dynamic registration is on.
    pub fn dynamic(&self) -> bool {
        self.dynamic
    }

    /// The client `id`.
    pub async fn get(&self, keys: &Keys, id: &str) -> Result<Client, ClientError> {
        if let Some(c) = self.configured.iter().find(|c| c.client_id == id) {
            return Ok(Client {
                id: c.client_id.clone(),
                name: c.name.clone(),
                redirect_uris: c.redirect_uris.clone(),
                auth: if c.client_secret_sha256.is_some() {
                    ClientAuth::ClientSecretBasic
                } else {
                    ClientAuth::None
                },
                kind: "configured",
                secret_sha256: c.client_secret_sha256.clone(),
            });
        }
        if let Some(sealed) = id.strip_prefix(DYNAMIC_PREFIX) {
            if !self.dynamic {
                return Err(ClientError::Disabled("dynamic client registration"));
            }
            let s: Sealed = keys
                .open(Purpose::Client, sealed)
                .ok_or(ClientError::Unknown)?;
            return Ok(Client {
                id: id.to_string(),
                name: s.name,
                redirect_uris: s.redirect_uris,
                auth: s.auth,
                kind: "dynamic",
                secret_sha256: None,
            });
        }
        if id.starts_with("https://") {
            return match &self.cimd {
                Some(fetcher) => fetcher.get(id).await,
                None => Err(ClientError::Disabled("client id metadata documents")),
            };
        }
        Err(ClientError::Unknown)
    }

    /// Register a client (RFC 7591): its id, and its secret when it asked
    /// for one.
    pub fn register(
        &self,
        keys: &Keys,
        r: Registration,
    ) -> Result<(Client, Option<String>), ClientError> {
        if !self.dynamic {
            return Err(ClientError::Disabled("dynamic client registration"));
        }
        let auth =
            auth_method(r.token_endpoint_auth_method.as_deref()).map_err(ClientError::Metadata)?;
        check_grants(r.grant_types.as_deref(), r.response_types.as_deref())
            .map_err(ClientError::Metadata)?;
        check_redirect_uris(&r.redirect_uris).map_err(ClientError::Metadata)?;
        let name = r.client_name.map(|n| n.chars().take(100).collect());
        let sealed = Sealed {
            name: name.clone(),
            redirect_uris: r.redirect_uris.clone(),
            auth,
        };
        let id = format!("{DYNAMIC_PREFIX}{}", keys.seal(Purpose::Client, &sealed));
        let secret = (auth != ClientAuth::None).then(|| keys.client_secret(&id));
        Ok((
            Client {
                id,
                name,
                redirect_uris: r.redirect_uris,
                auth,
                kind: "dynamic",
                secret_sha256: None,
            },
            secret,
        ))
    }
}

impl Client {
    /// Whether `secret` is this client's.
    pub fn secret_matches(&self, keys: &Keys, secret: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        match (&self.secret_sha256, self.kind) {
            (Some(expected), _) => {
                let got = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
                bool::from(
                    got.as_bytes()
                        .ct_eq(expected.to_ascii_lowercase().as_bytes()),
                )
            }
            (None, "dynamic") => keys.client_secret_matches(&self.id, secret),
            _ => false,
        }
    }
}

/// Resolves names for the document fetch, dropping restricted addresses.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_restricted_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (loopback, private and metadata addresses are refused)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Fetcher {
    fn new(config: &CimdConfig) -> Result<Fetcher, DocumentClientError> {
        let mut builder = reqwest::Client::builder()
            // A proxy would resolve names itself, past the address guard.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DOCUMENT_TIMEOUT)
            .https_only(true)
            .dns_resolver(Arc::new(PublicOnly {
                allow_private: config.dangerously_allow_private_addresses,
            }));
        for path in &config.extra_root_certificates {
            let pem = std::fs::read(path).map_err(|error| {
                DocumentClientError::RootCertificateUnreadable {
                    path: path.clone(),
                    error,
                }
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|error| {
                DocumentClientError::RootCertificateInvalid {
                    path: path.clone(),
                    error,
                }
            })?;
            builder = builder.tls_certs_merge([cert]);
        }
        Ok(Fetcher {
            http: builder.build().map_err(DocumentClientError::Build)?,
            allow_private: config.dangerously_allow_private_addresses,
            cache: Mutex::new(HashMap::new()),
            fetches: tokio::sync::Semaphore::new(FETCHES_AT_ONCE),
        })
    }

    fn cached(&self, id: &str) -> Option<Result<Client, ClientError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(id) {
            Some((answer, until)) if *until > Instant::now() => Some(answer.clone()),
            _ => None,
        }
    }

    /// A document's client, fetched at most once a while whether it could
    /// be used or not: a client id cannot make the server fetch at will.
    async fn get(&self, id: &str) -> Result<Client, ClientError> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let _turn = self
            .fetches
            .acquire()
            .await
            .map_err(|_| ClientError::Unknown)?;
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let (answer, keep) = match self.fetch(id).await {
            Ok((client, keep)) => (Ok(client), keep),
            Err(e) => (Err(e), FAILURE_KEEP),
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_ENTRIES {
                // Full of live entries: drop the refusals first.
                cache.retain(|_, (answer, _)| answer.is_ok());
            }
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(id.to_string(), (answer.clone(), now + keep));
        answer
    }

    /// The client of document `id` and how long to keep it; a refusal's
    /// reason names the document.
    async fn fetch(&self, id: &str) -> Result<(Client, Duration), ClientError> {
        let shown: String = id.chars().take(200).collect();
        let fail = |reason: String| ClientError::Document {
            url: shown.clone(),
            reason,
        };
        let url = self.document_url(id).map_err(fail)?;
        let (body, keep) = self.download(url, &shown).await.map_err(fail)?;
        let client = document_client(id, &body).map_err(fail)?;
        Ok((client, keep.clamp(CACHE_MIN, CACHE_MAX)))
    }

    /// `id` as a URL the fetch may go to, before any request; or why not.
    fn document_url(&self, id: &str) -> Result<Url, String> {
        let url = Url::parse(id).map_err(|e| e.to_string())?;
        if url.scheme() != "https"
            || url.path() == "/"
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err("a client id URL is https, has a path, and no fragment or user".into());
        }
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>()
                && !self.allow_private
                && is_restricted_ip(ip)
            {
                return Err(format!("{ip} is a loopback, private or metadata address"));
            }
        }
        if !self.allow_private && url.port().is_some_and(|p| p != 443) {
            return Err("a client id URL uses the default port, 443".into());
        }
        Ok(url)
    }

    /// The document's bytes, at most `DOCUMENT_MAX_BYTES`, and how long it
    /// may be cached (unclamped); or why not.
    async fn download(&self, url: Url, shown: &str) -> Result<(Vec<u8>, Duration), String> {
        // What the network said stays in the log: shown, it would map
        // hosts and ports for whoever picks the client id.
        let unreachable = |detail: String| {
            tracing::info!(url = %shown, %detail, "a client metadata document could not be fetched");
            String::from("could not be fetched (the server's log says why)")
        };
        let mut response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(airlock_verify::without_url(e)))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("answered {}", response.status())));
        }
        let keep = max_age(response.headers()).unwrap_or(CACHE_DEFAULT);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(airlock_verify::without_url(e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > DOCUMENT_MAX_BYTES {
                return Err(format!("larger than {DOCUMENT_MAX_BYTES} bytes"));
            }
        }
        Ok((body, keep))
    }
}

/// The client a fetched document describes, checked as a registration
/// would be; or why it cannot be used.
fn document_client(id: &str, body: &[u8]) -> Result<Client, String> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a metadata document: {e}"))?;
    if doc.client_id != id {
        return Err("its client_id is not the URL it was fetched from".into());
    }
    let invalid = |e: RegistrationError| e.to_string();
    let auth = auth_method(doc.token_endpoint_auth_method.as_deref()).map_err(invalid)?;
    if auth != ClientAuth::None {
        return Err(
            "a metadata document client is public here: token_endpoint_auth_method none".into(),
        );
    }
    check_grants(doc.grant_types.as_deref(), doc.response_types.as_deref()).map_err(invalid)?;
    check_redirect_uris(&doc.redirect_uris).map_err(invalid)?;
    Ok(Client {
        id: id.to_string(),
        name: doc.client_name.map(|n| n.chars().take(100).collect()),
        redirect_uris: doc.redirect_uris,
        auth,
        kind: "metadata_document",
        secret_sha256: None,
    })
}

/// `Cache-Control: max-age=N` (no-store: the minimum).
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    let mut age = None;
    for directive in value.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            return Some(Duration::ZERO);
        }
        if let Some(n) = directive.strip_prefix("max-age=") {
            age = n.parse().ok().map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_secrets(&["a-secret-of-at-least-thirty-two-bytes-0001".into()]).unwrap()
    }

    fn clients(dynamic: bool) -> Clients {
        Clients::new(vec![], dynamic, &CimdConfig::default()).unwrap()
    }

    #[tokio::test]
    async fn a_dynamic_client_is_known_by_its_id_alone_and_its_secret_checks() {
        let (k, c) = (keys(), clients(true));
        let (client, secret) = c
            .register(
                &k,
                Registration {
                    redirect_uris: vec!["http://127.0.0.1:3000/callback".into()],
                    client_name: Some("Editor".into()),
                    token_endpoint_auth_method: Some("client_secret_post".into()),
                    grant_types: None,
                    response_types: None,
                },
            )
            .unwrap();
        let known = c.get(&k, &client.id).await.unwrap();
        assert_eq!(known, client);
        assert!(known.secret_matches(&k, &secret.unwrap()));
        assert!(!known.secret_matches(&k, "guess"));
        // Another server's keys know nothing of it.
        let other =
            Keys::from_secrets(&["another-secret-of-thirty-two-bytes-000002".into()]).unwrap();
        assert_eq!(c.get(&other, &client.id).await, Err(ClientError::Unknown));
        // Switched off: neither registration nor known ids.
        assert!(clients(false).get(&k, &client.id).await.is_err());
    }

    #[tokio::test]
    async fn document_ids_at_private_addresses_are_refused_before_any_request() {
        let c = Clients::new(
            vec![],
            false,
            &CimdConfig {
                enabled: true,
                ..CimdConfig::default()
            },
        )
        .unwrap();
        for id in [
            "https://127.0.0.1/client.json",
            "https://[::1]/client.json",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.8/c.json",
        ] {
            let e = c.get(&keys(), id).await.unwrap_err().to_string();
            assert!(e.contains("private or metadata address"), "{id}: {e}");
        }
        // Another port could probe services: only 443.
        let e = c
            .get(&keys(), "https://example.com:22/client.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("port, 443"), "{e}");
        // A name that resolves to loopback is refused after DNS, and the
        // page says no more than that the fetch failed.
        use reqwest::dns::Resolve;
        let refused = PublicOnly {
            allow_private: false,
        }
        .resolve("localhost".parse().unwrap())
        .await
        .err()
        .expect("localhost is refused")
        .to_string();
        assert!(refused.contains("no public address"), "{refused}");
        let e = c
            .get(&keys(), "https://localhost/client.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not be fetched") && !e.contains("public address"), "{e}");
        let e = c
            .get(&keys(), "https://example.com/")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("has a path"), "{e}");
    }
}
