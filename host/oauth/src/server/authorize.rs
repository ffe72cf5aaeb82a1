//! The authorization endpoint: the client and its redirect URI known, the
//! request checked (code flow, PKCE, this resource, our scopes), and the
//! consent page shown.

use super::*;

/// An authorization request as the client sent it.
#[derive(Debug, Deserialize)]
pub(super) struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

pub(super) async fn authorize(
    State(s): State<Arc<AuthorizationServer>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    // Until the client and its redirect URI check out, errors stay here.
    let (client, redirect_uri) = match requesting_client(&s, &q).await {
        Ok(found) => found,
        Err(page) => return page.into_response(),
    };
    // Only a configured client's redirect is trusted before the person has
    // seen the page: anyone can register one, and the façade must not
    // forward a browser there unasked.
    let back = |r: RedirectError| {
        if client.kind == "configured" {
            to_client(
                &s,
                &redirect_uri,
                q.state.as_deref(),
                r.error,
                &r.description,
            )
        } else {
            PageError::bad_request("Invalid request", r.description).into_response()
        }
    };
    let challenge = match code_challenge(&s, &q) {
        Ok(challenge) => challenge,
        Err(r) => return back(r),
    };
    let scopes = match granted_scopes(&s, q.scope.as_deref()) {
        Ok(scopes) => scopes,
        Err(r) => return back(r),
    };
    let csrf = random();
    let request = Request {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: q.state.clone(),
        code_challenge: challenge,
        scopes,
        resource: s.resource.clone(),
        exp: now() + REQUEST_SECS,
        csrf: digest(&csrf),
    };
    consent_page(&s, &client, &request, &csrf)
}

/// The client the request names, and the redirect URI to answer at: one
/// it registered.
async fn requesting_client(
    s: &AuthorizationServer,
    q: &AuthorizeQuery,
) -> Result<(Client, String), PageError> {
    let Some(client_id) = q.client_id.as_deref() else {
        return Err(PageError::bad_request(
            "Invalid request",
            "The request names no client (client_id).",
        ));
    };
    let client = s.clients.get(&s.keys, client_id).await.map_err(|e| {
        tracing::info!(reason = %e, "authorization request from an unusable client");
        PageError::bad_request("Unknown client", e.to_string())
    })?;
    let redirect_uri = match (&q.redirect_uri, client.redirect_uris.as_slice()) {
        (Some(used), registered) if registered.iter().any(|r| redirect_uri_matches(r, used)) => {
            used.clone()
        }
        (None, [only]) => only.clone(),
        (Some(_), _) => {
            return Err(PageError::bad_request(
                "Invalid redirect",
                "The client asked to send the answer to an address it did not register.",
            ));
        }
        (None, _) => {
            return Err(PageError::bad_request(
                "Invalid request",
                "The request names no redirect_uri.",
            ));
        }
    };
    Ok((client, redirect_uri))
}

/// The request's PKCE code challenge, once it is a code request (S256) for
/// this server's resource.
fn code_challenge(s: &AuthorizationServer, q: &AuthorizeQuery) -> Result<String, RedirectError> {
    if q.response_type.as_deref() != Some("code") {
        return Err(RedirectError::new(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let Some(challenge) = q
        .code_challenge
        .clone()
        .filter(|c| (43..=128).contains(&c.len()))
    else {
        return Err(RedirectError::new(
            "invalid_request",
            "PKCE is required: send code_challenge (S256)",
        ));
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return Err(RedirectError::new(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    if let Some(resource) = &q.resource
        && resource.trim_end_matches('/') != s.resource.trim_end_matches('/')
    {
        return Err(RedirectError::new(
            "invalid_target",
            "tokens here are for this server's MCP endpoint only",
        ));
    }
    Ok(challenge)
}

/// The scopes asked for that are ours (all of them when none are named).
fn granted_scopes(s: &AuthorizationServer, scope: Option<&str>) -> Result<Vec<String>, RedirectError> {
    let Some(scope) = scope else {
        return Ok(s.scopes.clone());
    };
    let asked: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
    // Scopes other servers know (openid, offline_access) are not ours to grant: ignored.
    let ours: Vec<String> = asked.into_iter().filter(|a| s.scopes.contains(a)).collect();
    if ours.is_empty() {
        return Err(RedirectError::new(
            "invalid_scope",
            format!("ask for some of: {}", s.scopes.join(" ")),
        ));
    }
    Ok(ours)
}

/// The consent page for a checked `request`, which it carries sealed; its
/// CSRF value is also set as a cookie.
fn consent_page(
    s: &AuthorizationServer,
    client: &Client,
    request: &Request,
    csrf: &str,
) -> Response {
    let sealed = s.keys.seal(Purpose::Request, request);
    let mut page = pages::consent(&pages::Consent {
        client_name: client.name.as_deref(),
        client_id: &client.id,
        kind: client.kind,
        redirect_uri: &request.redirect_uri,
        scopes: &request.scopes,
        request: &sealed,
        csrf,
    });
    page.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(s, CSRF_COOKIE, csrf, REQUEST_SECS),
    );
    page
}

fn redirect_uri_matches(registered: &str, used: &str) -> bool {
    if registered == used {
        return true;
    }
    // RFC 8252 §7.3: a loopback IP redirect may use any port.
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(used)) else {
        return false;
    };
    let loopback = |u: &Url| matches!(u.host_str(), Some("127.0.0.1" | "[::1]"));
    a.scheme() == "http"
        && loopback(&a)
        && a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_may_change_port_and_nothing_else() {
        let registered = "http://127.0.0.1:3000/callback";
        assert!(redirect_uri_matches(
            registered,
            "http://127.0.0.1:41234/callback"
        ));
        assert!(!redirect_uri_matches(
            registered,
            "http://127.0.0.1:41234/other"
        ));
        assert!(!redirect_uri_matches(
            registered,
            "http://127.0.0.2:3000/callback"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example.com/cb",
            "https://app.example.com:444/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:3000/cb",
            "http://localhost:4000/cb"
        ));
    }
}
