//! The real peers of a test: oidc-provider as the third party, the resource
//! server it protects, the local identity service in between, and the
//! agent's and the binding service's SDK clients. Tests let time pass with
//! [`Peers::let_time_pass`] instead of sleeping: the identity service's clock
//! moves forward and the API's tokens expire; the broker's own cache keeps
//! real time, as a host's would.

use std::sync::Arc;

use airlock_identity::{
    Broker, BrokerConfig, ClientConfig, IdentityClient, IdentityError, ManualClock, Secret, UserRef,
};
use airlock_identity_local::{LocalConfig, LocalIdentity};
use airlock_policy::{HostPattern, OperatorPolicy, Route};
use airlock_verify::VerifiedUser;
use serde_json::json;
use tempfile::TempDir;

use crate::oidc::{Browser, Decision, OidcProvider};
use crate::resource::ResourceServer;

/// The workload identity the host runs as.
pub const WORKLOAD: &str = "airlock-agent";
/// The group the provider puts `root` in: the admin API's OIDC group in tests.
pub const ADMIN_GROUP: &str = "airlock-admins";
/// The provider name tools' grants use.
pub const PROVIDER: &str = "github";
/// The audience (resource indicator) of the provider's access tokens.
pub const RESOURCE: &str = "https://api.github.com";
/// The session binding URL; the test browser stops when sent there.
pub const RETURN_URL: &str = "http://127.0.0.1:9/binding";
/// The OAuth client's secret at the provider.
pub const CLIENT_SECRET: &str = "airlock-client-secret-for-tests";
/// Where the sign-in client's browser lands (the test browser stops there).
pub const LOGIN_REDIRECT: &str = "http://127.0.0.1:9/signed-in";
/// The agent's SigV4 secret.
pub const AGENT_SECRET: &str = "agent-secret-access-key-0001";
/// The binding service's SigV4 secret.
pub const BINDER_SECRET: &str = "binder-secret-access-key-0001";

/// oidc-provider's configuration: the `airlock` client whose redirect URI is
/// the identity service's callback on `identity_port`, and a public sign-in client.
pub fn provider_json(identity_port: u16, access_token_ttl: u64) -> serde_json::Value {
    provider_json_with(identity_port, access_token_ttl, None)
}

/// The same, and when `alb_port` is given, the `airlock-alb` client an ALB
/// (stand-in) on that port signs users in with.
pub fn provider_json_with(
    identity_port: u16,
    access_token_ttl: u64,
    alb_port: Option<u16>,
) -> serde_json::Value {
    let callback =
        format!("http://127.0.0.1:{identity_port}/identities/oauth2/callback/{PROVIDER}");
    json!({
        "resource": RESOURCE,
        "scopes": ["repo", "read:user", "admin:org"],
        "accessTokenTtl": access_token_ttl,
        "groups": {"root": [ADMIN_GROUP]},
        "clients": [{
            "client_id": "airlock",
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [callback],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }, {
            "client_id": "airlock-public",
            "redirect_uris": [callback],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }, {
            "client_id": "airlock-login",
            "redirect_uris": [LOGIN_REDIRECT],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }, {
            "client_id": ALB_CLIENT,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("http://127.0.0.1:{}/oauth2/idpresponse", alb_port.unwrap_or(9))],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
    })
}

/// The client the ALB (stand-in) signs users in with.
pub const ALB_CLIENT: &str = "airlock-alb";
/// The client Airlock's authorization server façade signs people in with.
pub const FACADE_CLIENT: &str = "airlock-facade";

/// The identity service's `[[oauth2_provider]]` table for that provider,
/// asking for refresh tokens.
pub fn provider_toml(discovery_url: &str) -> String {
    provider_toml_with(discovery_url, true)
}

/// The same, with or without refresh tokens.
pub fn provider_toml_with(discovery_url: &str, refresh_tokens: bool) -> String {
    let extra = if refresh_tokens {
        r#"["offline_access"]"#
    } else {
        "[]"
    };
    format!(
        r#"
        [[oauth2_provider]]
        name = "{PROVIDER}"
        client_id = "airlock"
        client_secret = "{CLIENT_SECRET}"
        discovery_url = "{discovery_url}"
        extra_scopes = {extra}
        authorization_params = {{ prompt = "consent" }}
        "#
    )
}

/// A free port on 127.0.0.1 for a server that must know its port before it
/// starts (a provider's redirect URI names it). Taken below the kernel's
/// ephemeral range, so no port-0 listener or outgoing connection of a test
/// running beside it can be handed the same port before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    for _ in 0..10_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

/// Knobs of the peers.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Lifetime of the provider's access tokens, in seconds.
    pub access_token_ttl: u64,
    /// Lifetime of consent sessions, in seconds.
    pub session_ttl: u64,
    /// The identity service refreshes tokens this close to expiry.
    pub refresh_margin: u64,
    /// Whether the identity service asks for refresh tokens (`offline_access`).
    pub refresh_tokens: bool,
    /// Another `[[oauth2_provider]]` named `github` instead of oidc-provider's
    /// (a vendor stand-in).
    pub provider_toml: Option<String>,
    /// The port an ALB stand-in will listen on: oidc-provider gets a client
    /// (`ALB_CLIENT`) returning there, and the binding URL behind it is an
    /// allowed return URL of the host's workloads.
    pub alb_port: Option<u16>,
    /// The port Airlock's authorization server façade will listen on:
    /// oidc-provider gets a client (`FACADE_CLIENT`) returning there.
    pub facade_port: Option<u16>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            access_token_ttl: 3600,
            session_ttl: 600,
            refresh_margin: 30,
            refresh_tokens: true,
            provider_toml: None,
            alb_port: None,
            facade_port: None,
        }
    }
}

/// See the module docs.
pub struct Peers {
    /// The time token and session expiry follow.
    pub clock: Arc<ManualClock>,
    /// The third-party provider.
    pub provider: OidcProvider,
    /// The API it protects (stands in for api.github.com).
    pub resource: ResourceServer,
    /// The identity service (None while stopped).
    pub identity: Option<LocalIdentity>,
    /// The broker the runtime uses.
    pub broker: Arc<Broker>,
    /// The agent's client (may not complete sessions).
    pub agent: IdentityClient,
    /// The binding service's client (may only complete sessions).
    pub binder: IdentityClient,
    config: LocalConfig,
    data: TempDir,
}

fn client(endpoint: &str, akid: &str, secret: &str) -> IdentityClient {
    IdentityClient::from_config(&ClientConfig {
        max_attempts: Some(2),
        ..ClientConfig::fixed(endpoint, akid, secret)
    })
}

/// The provider's clients: the identity service's, the ALB's and, when
/// asked, the façade's.
fn provider_config(port: u16, options: &PeerOptions) -> serde_json::Value {
    let mut config = provider_json_with(port, options.access_token_ttl, options.alb_port);
    if let Some(facade) = options.facade_port {
        config["clients"].as_array_mut().unwrap().push(json!({
            "client_id": FACADE_CLIENT,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("http://127.0.0.1:{facade}/oauth/callback")],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }));
    }
    config
}

/// The identity service's config: the agent's and the binder's callers,
/// the workload, the providers.
fn identity_config(
    port: u16,
    data: &std::path::Path,
    options: &PeerOptions,
    discovery: &str,
) -> LocalConfig {
    LocalConfig::from_toml(&format!(
        r#"
        listen = "127.0.0.1:{port}"
        data_dir = "{data}"
        session_ttl_secs = {session_ttl}
        refresh_margin_secs = {refresh_margin}
        # A day: tests let hours pass without the agent's workload tokens expiring.
        workload_token_ttl_secs = 86400

        [[caller]]
        access_key_id = "AKIDAGENT"
        secret_access_key = "{AGENT_SECRET}"
        operations = ["GetWorkloadAccessToken", "GetWorkloadAccessTokenForUserId",
                      "GetWorkloadAccessTokenForJWT", "GetResourceOauth2Token", "GetResourceApiKey",
                      "CreateWorkloadIdentity", "GetWorkloadIdentity", "UpdateWorkloadIdentity"]

        [[caller]]
        access_key_id = "AKIDBINDER"
        secret_access_key = "{BINDER_SECRET}"
        operations = ["CompleteResourceTokenAuth"]

        [[workload]]
        name = "{WORKLOAD}"
        allowed_return_urls = ["{RETURN_URL}"]
        [[workload.jwt_issuer]]
        discovery_url = "{discovery}"
        audiences = ["airlock-login"]

        # Each tool's own workload identity, created by the broker.
        [[created_workloads.jwt_issuer]]
        discovery_url = "{discovery}"
        audiences = ["airlock-login"]

        [[api_key_provider]]
        name = "weather"
        api_key = "weather-api-key-for-tests"

        {provider_toml}
        "#,
        data = data.display(),
        session_ttl = options.session_ttl,
        refresh_margin = options.refresh_margin,
        discovery = discovery,
        provider_toml = options.provider_toml.clone().unwrap_or_else(|| {
            provider_toml_with(discovery, options.refresh_tokens)
        }),
    ))
    .unwrap()
}

impl Peers {
    /// Start everything on 127.0.0.1.
    pub async fn start(options: PeerOptions) -> Peers {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let clock = Arc::new(ManualClock::new());
        let provider = OidcProvider::start(&provider_config(port, &options));
        let resource = ResourceServer::start(&provider.issuer, RESOURCE).await;
        let config = identity_config(port, data.path(), &options, &provider.discovery_url());
        let identity = LocalIdentity::start_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        let endpoint = identity.endpoint_url();
        let agent = client(&endpoint, "AKIDAGENT", AGENT_SECRET);
        let binder = client(&endpoint, "AKIDBINDER", BINDER_SECRET);
        let broker = Arc::new(Broker::new(
            agent.clone(),
            BrokerConfig::new(WORKLOAD, Some(RETURN_URL.to_string())),
        ));
        Peers {
            clock,
            provider,
            resource,
            identity: Some(identity),
            broker,
            agent,
            binder,
            config,
            data,
        }
    }

    /// An operator policy that sends api.github.com to the plain-http
    /// resource server on 127.0.0.1 (which needs both loud switches).
    pub fn policy(&self) -> OperatorPolicy {
        OperatorPolicy {
            allow_private_addresses: true,
            dangerously_allow_https_to_http_routes: true,
            routes: vec![Route {
                from: HostPattern::parse(RESOURCE).unwrap(),
                to: HostPattern::parse(&self.resource.origin()).unwrap(),
            }],
            ..OperatorPolicy::permissive()
        }
    }

    /// The user at the provider: sign in as `login`, decide, and return the
    /// session id the identity service sends the browser back with.
    pub async fn consent(
        &self,
        authorization_url: &str,
        login: &str,
        decision: Decision,
    ) -> Result<String, String> {
        let landed = Browser::new()
            .authorize(authorization_url, login, decision, RETURN_URL)
            .await?;
        url::Url::parse(&landed)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "session_id")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("returned without session_id: {landed}"))
    }

    /// The user consents to `consent` at the provider and the binding service
    /// completes it for them: the grant is in the vault.
    pub async fn approve(&self, consent: &airlock_identity::Consent, user: &VerifiedUser) {
        let landed = self
            .consent(
                &consent.authorization_url,
                user.id().as_str(),
                Decision::Approve,
            )
            .await
            .unwrap();
        assert_eq!(landed, consent.session_uri);
        self.bind(&consent.session_uri, user.id().as_str())
            .await
            .unwrap();
    }

    /// The binding service: complete `session_uri` for the signed-in `user`.
    pub async fn bind(&self, session_uri: &str, user: &str) -> Result<(), IdentityError> {
        self.binder
            .complete_session(session_uri, &UserRef::UserId(user.to_string()))
            .await
    }

    /// Sign `login` in at the provider (a public client with PKCE) and
    /// return the ID token: the user JWT the agent would get from its IdP.
    pub async fn id_token(&self, login: &str) -> Secret {
        let verifier = "test-verifier-0123456789-0123456789-0123456789";
        let challenge = {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
        };
        let mut url = url::Url::parse(&format!("{}/auth", self.provider.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", "airlock-login")
            .append_pair("response_type", "code")
            .append_pair("scope", "openid")
            .append_pair("redirect_uri", LOGIN_REDIRECT)
            .append_pair("state", "s")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let landed = Browser::new()
            .authorize(url.as_str(), login, Decision::Approve, LOGIN_REDIRECT)
            .await
            .unwrap();
        let code = url::Url::parse(&landed)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let tokens: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/token", self.provider.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", LOGIN_REDIRECT),
                ("client_id", "airlock-login"),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Secret::new(tokens["id_token"].as_str().expect("an ID token"))
    }

    /// Time passes: the identity service's clock moves `by` forward (sessions
    /// and stored tokens expire on it), and every token the API has seen expires.
    pub fn let_time_pass(&self, by: std::time::Duration) {
        self.clock.advance(by);
        self.resource.expire_seen();
    }

    /// Grants the vault holds for `user`.
    pub fn stored_grants(&self, user: &str) -> u64 {
        self.identity.as_ref().expect("running").stored_grants(user)
    }

    /// Stop the identity service and start it again on the same port and data.
    pub async fn restart_identity(&mut self) {
        self.restart_identity_with(|_| {}).await;
    }

    /// The same, with its config changed by `change` first (kept for later restarts).
    pub async fn restart_identity_with(&mut self, change: impl FnOnce(&mut LocalConfig)) {
        change(&mut self.config);
        if let Some(identity) = self.identity.take() {
            identity.stop().await;
        }
        self.identity = Some(
            LocalIdentity::start_with_clock(self.config.clone(), self.clock.clone())
                .await
                .unwrap(),
        );
    }

    /// The data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }
}
