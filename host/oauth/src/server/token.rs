//! The token endpoint: a client authenticated, then a code redeemed or a
//! refresh token rotated, and an access token for the resource issued.

use super::*;
use crate::once::OnceError;

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

/// The client the token request is from, authenticated as it registered.
async fn authenticated_client(
    s: &AuthorizationServer,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Client, OAuthError> {
    let unauthorized = |m: &str| OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", m);
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let decode = |v: &str| {
                url::form_urlencoded::parse(format!("v={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            Some((decode(id)?, decode(secret)?))
        });
    let (id, secret) = match (&basic, &form.client_id) {
        (Some((id, secret)), _) => (id.clone(), Some(secret.clone())),
        (None, Some(id)) => (id.clone(), form.client_secret.clone()),
        (None, None) => return Err(unauthorized("no client_id")),
    };
    let client = match s.clients.get(&s.keys, &id).await {
        Ok(c) => c,
        Err(ClientError::Document { .. }) => {
            return Err(unauthorized("the client's metadata document is unusable"));
        }
        Err(_) => return Err(unauthorized("unknown client")),
    };
    match (client.auth, secret) {
        (ClientAuth::None, None) => Ok(client),
        (ClientAuth::None, Some(_)) => Err(unauthorized("a public client sends no secret")),
        (_, Some(secret)) if client.secret_matches(&s.keys, &secret) => Ok(client),
        _ => Err(unauthorized("client authentication failed")),
    }
}

pub(super) async fn token(
    State(s): State<Arc<AuthorizationServer>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    match redeem(&s, &headers, &form).await {
        Ok(answer) => {
            let mut response = axum::Json(answer).into_response();
            let h = response.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn redeem(
    s: &AuthorizationServer,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    let client = authenticated_client(s, headers, form).await?;
    if let Some(resource) = &form.resource
        && resource.trim_end_matches('/') != s.resource.trim_end_matches('/')
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "tokens here are for this server's MCP endpoint only",
        ));
    }
    match form.grant_type.as_str() {
        "authorization_code" => redeem_code(s, &client, form).await,
        "refresh_token" => rotate_refresh(s, &client, form).await,
        _ => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use authorization_code or refresh_token",
        )),
    }
}

/// Tokens for an authorization code, which is good once: a replayed one
/// revokes what it bought.
async fn redeem_code(
    s: &AuthorizationServer,
    client: &Client,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    let code = checked_code(s, client, form)?;
    let first_use = s
        .claim(
            format!("code-{}", digest(&code.jti)),
            CODE_SECS + CLOCK_SKEW_SECS,
        )
        .await?;
    if !first_use {
        // A replayed code: its refresh tokens are revoked (RFC 6749
        // §4.1.2); its access tokens live out their minutes.
        s.claim(
            format!("revoked-{}", digest(&code.jti)),
            s.session_secs() + 3600,
        )
        .await?;
        s.audit.record(Record::TokenRefused {
            user: code.grant.sub.clone(),
            client_id: client.id.clone(),
            grant: "authorization_code",
            reason: "the code was used before; the refresh tokens it bought are revoked",
        });
        return Err(OAuthError::grant("the code was already used"));
    }
    Ok(s.issue(client, code.grant, code.jti, "authorization_code"))
}

/// The form's code: sealed here, unexpired, the client's, for the same
/// redirect URI, its PKCE verifier matching, and not from before a restart.
fn checked_code(
    s: &AuthorizationServer,
    client: &Client,
    form: &TokenForm,
) -> Result<Code, OAuthError> {
    let code: Code = form
        .code
        .as_deref()
        .and_then(|c| s.keys.open(Purpose::Code, c))
        .ok_or_else(|| OAuthError::grant("the code is not valid"))?;
    if code.exp < now() {
        return Err(OAuthError::grant("the code has expired"));
    }
    if code.client_id != client.id {
        return Err(OAuthError::grant("the code was issued to another client"));
    }
    if form
        .redirect_uri
        .as_deref()
        .is_some_and(|r| r != code.redirect_uri)
    {
        return Err(OAuthError::grant(
            "redirect_uri is not the one the code was sent to",
        ));
    }
    let verifier = form.code_verifier.as_deref().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !(43..=128).contains(&verifier.len()) || challenge != code.code_challenge {
        return Err(OAuthError::grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    if s.forgotten(code.issued_ms) {
        return Err(OAuthError::grant(
            "the server restarted since the code was issued: sign in again",
        ));
    }
    Ok(code)
}

/// Tokens for a refresh token, which rotates: one used twice revokes its
/// whole family.
async fn rotate_refresh(
    s: &AuthorizationServer,
    client: &Client,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    let refresh = checked_refresh(s, client, form)?;
    let family = format!("revoked-{}", digest(&refresh.family));
    let revoked = s.once.is_set(&family).await.map_err(unavailable)?;
    if revoked {
        return Err(OAuthError::grant("the refresh token was revoked"));
    }
    let first_use = s
        .claim(
            format!("refresh-{}", digest(&refresh.jti)),
            refresh.exp.saturating_sub(now()) + CLOCK_SKEW_SECS,
        )
        .await?;
    if !first_use {
        // Used twice: someone else holds it too. The family goes.
        s.claim(family, s.session_secs() + 3600).await?;
        s.audit.record(Record::TokenRefused {
            user: refresh.grant.sub.clone(),
            client_id: client.id.clone(),
            grant: "refresh_token",
            reason: "a refresh token was used twice; its whole family is revoked",
        });
        return Err(OAuthError::grant("the refresh token was already used"));
    }
    let mut grant = refresh.grant;
    if let Some(scope) = &form.scope {
        grant.scopes = narrowed(&grant.scopes, scope)?;
    }
    Ok(s.issue(client, grant, refresh.family, "refresh_token"))
}

/// The form's refresh token: sealed here, the client's, its sign-in
/// unexpired, and not from before a restart.
fn checked_refresh(
    s: &AuthorizationServer,
    client: &Client,
    form: &TokenForm,
) -> Result<Refresh, OAuthError> {
    let refresh: Refresh = form
        .refresh_token
        .as_deref()
        .and_then(|r| s.keys.open(Purpose::Refresh, r))
        .ok_or_else(|| OAuthError::grant("the refresh token is not valid"))?;
    if refresh.client_id != client.id {
        return Err(OAuthError::grant(
            "the refresh token was issued to another client",
        ));
    }
    if refresh.exp < now() || refresh.grant.signed_in + s.session_secs() < now() {
        return Err(OAuthError::grant("the sign-in has expired: sign in again"));
    }
    if s.forgotten(refresh.issued_ms) {
        // Without a shared once_dir a restart forgets which refresh
        // tokens were used: a stolen, rotated one must not come back.
        return Err(OAuthError::grant(
            "the server restarted since the refresh token was issued: sign in again",
        ));
    }
    Ok(refresh)
}

/// The scopes a refresh asks for, which may narrow the grant's, never add.
fn narrowed(granted: &[String], scope: &str) -> Result<Vec<String>, OAuthError> {
    let narrower: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    if narrower.iter().any(|n| !granted.contains(n)) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a refresh cannot add scopes",
        ));
    }
    Ok(narrower)
}

/// The single-use marks could not be read or written: logged, and the
/// client asked to try again.
fn unavailable(e: OnceError) -> OAuthError {
    tracing::error!("{e}");
    OAuthError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again",
    )
}

/// The access token's claims (RFC 9068).
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
}

impl AuthorizationServer {
    fn session_secs(&self) -> u64 {
        self.config.session_hours * 3600
    }

    /// Whether a code or refresh token issued at `issued_ms` predates the
    /// marks kept in memory. Milliseconds: a token issued in the second of
    /// a restart is told apart.
    fn forgotten(&self, issued_ms: u64) -> bool {
        self.remembers_since_ms
            .is_some_and(|since| issued_ms <= since)
    }

    /// Mark `key` used for `keep` seconds: false when it already was.
    async fn claim(&self, key: String, keep: u64) -> Result<bool, OAuthError> {
        self.once
            .claim(&key, Duration::from_secs(keep))
            .await
            .map_err(unavailable)
    }

    /// An access token and a new refresh token of `family` for `grant`.
    fn issue(&self, client: &Client, grant: Grant, family: String, how: &'static str) -> Value {
        let issued = now();
        let expires_in = self.config.access_token_secs;
        let scope = grant.scopes.join(" ");
        let access = self.keys.sign(&AccessClaims {
            iss: &self.issuer,
            sub: &grant.sub,
            aud: &grant.resource,
            exp: issued + expires_in,
            iat: issued,
            jti: random(),
            client_id: &client.id,
            scope: scope.clone(),
            email: grant.email.as_deref(),
            email_verified: grant.email_verified,
            groups: &grant.groups,
        });
        let refresh = self.keys.seal(
            Purpose::Refresh,
            &Refresh {
                jti: random(),
                family,
                client_id: client.id.clone(),
                exp: grant.signed_in + self.session_secs(),
                issued_ms: now_ms(),
                grant: grant.clone(),
            },
        );
        self.audit.record(Record::Token {
            user: grant.sub.clone(),
            client_id: client.id.clone(),
            grant: how,
            scope: scope.clone(),
            expires_in,
        });
        json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": refresh,
            "scope": scope,
        })
    }
}
