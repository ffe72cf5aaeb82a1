//! What a client may register, checked the same whether the operator
//! configured it, it registered itself (RFC 7591) or its metadata document
//! says so: how it authenticates, its grants, its redirect URIs. A leaf:
//! `config` and `clients` both check with it.

use serde::{Deserialize, Serialize};
use url::Url;

/// What one redirect URI may be, in bytes.
const REDIRECT_URI_MAX: usize = 512;

/// How a client proves itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client: PKCE alone.
    None,
    /// `client_secret_basic`.
    ClientSecretBasic,
    /// `client_secret_post`.
    ClientSecretPost,
}

/// What is wrong with a client's metadata (a registration request, a
/// metadata document, a configured client). Shown to whoever sent it, so it
/// quotes at most the first 200 characters of a redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// An authentication method other than the three known (first 64
    /// characters).
    #[error(
        "token_endpoint_auth_method `{0}` is not supported: use none, client_secret_basic or client_secret_post"
    )]
    AuthMethod(String),
    /// `grant_types` given without `authorization_code`.
    #[error("grant_types must include authorization_code")]
    GrantTypes,
    /// `response_types` given without `code`.
    #[error("response_types must include code")]
    ResponseTypes,
    /// None, or more than ten.
    #[error("redirect_uris: give between one and ten")]
    RedirectUriCount,
    /// Longer than a redirect URI may be (`REDIRECT_URI_MAX` bytes).
    #[error("redirect_uri `{0}…` is longer than {max} bytes", max = REDIRECT_URI_MAX)]
    RedirectUriLength(String),
    /// Not a URL.
    #[error("redirect_uri `{uri}`: {error}")]
    RedirectUriSyntax {
        /// The URI as shown.
        uri: String,
        /// Why it does not parse.
        error: url::ParseError,
    },
    /// It has a fragment, which a redirect cannot carry.
    #[error("redirect_uri `{0}` has a fragment")]
    RedirectUriFragment(String),
    /// Plain HTTP off loopback, or a scheme that runs or reads locally.
    #[error("redirect_uri `{0}`: use https, or http on a loopback address")]
    RedirectUriInsecure(String),
    /// A scheme that is neither web nor a native app's reverse-DNS one.
    #[error("redirect_uri `{0}`: use https, http on loopback, or a reverse-DNS scheme")]
    RedirectUriScheme(String),
}

/// What a dynamic registration asks for (RFC 7591 §2), as far as it matters here.
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    /// Where codes may go.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Its name.
    #[serde(default)]
    pub client_name: Option<String>,
    /// `none` (default for these), `client_secret_basic` or `client_secret_post`.
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// Must allow `authorization_code` when given.
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    /// Must allow `code` when given.
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
}

/// The authentication method a client asked for (`none` when it named none).
pub(crate) fn auth_method(method: Option<&str>) -> Result<ClientAuth, RegistrationError> {
    match method.unwrap_or("none") {
        "none" => Ok(ClientAuth::None),
        "client_secret_basic" => Ok(ClientAuth::ClientSecretBasic),
        "client_secret_post" => Ok(ClientAuth::ClientSecretPost),
        other => Err(RegistrationError::AuthMethod(
            other.chars().take(64).collect(),
        )),
    }
}

/// Given, the grant and response types must include the code flow.
pub(crate) fn check_grants(
    grants: Option<&[String]>,
    responses: Option<&[String]>,
) -> Result<(), RegistrationError> {
    if let Some(g) = grants
        && !g.iter().any(|g| g == "authorization_code")
    {
        return Err(RegistrationError::GrantTypes);
    }
    if let Some(r) = responses
        && !r.iter().any(|r| r == "code")
    {
        return Err(RegistrationError::ResponseTypes);
    }
    Ok(())
}

/// Redirect URIs a client may register: HTTPS, or HTTP on a loopback
/// address (RFC 8252 §7.3), or a private-use scheme for native apps; never a
/// fragment. At least one, at most ten.
pub fn check_redirect_uris(uris: &[String]) -> Result<(), RegistrationError> {
    if uris.is_empty() || uris.len() > 10 {
        return Err(RegistrationError::RedirectUriCount);
    }
    for uri in uris {
        let shown: String = uri.chars().take(200).collect();
        if uri.len() > REDIRECT_URI_MAX {
            return Err(RegistrationError::RedirectUriLength(shown));
        }
        let url = Url::parse(uri).map_err(|error| RegistrationError::RedirectUriSyntax {
            uri: shown.clone(),
            error,
        })?;
        if url.fragment().is_some() {
            return Err(RegistrationError::RedirectUriFragment(shown));
        }
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" | "javascript" | "data" | "file" => {
                return Err(RegistrationError::RedirectUriInsecure(shown));
            }
            _ if url.scheme().contains('.') => {} // a native app's private-use scheme
            _ => return Err(RegistrationError::RedirectUriScheme(shown)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_loopback_or_a_private_scheme() {
        for good in [
            "https://app.example.com/cb",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "com.example.app:/oauth",
        ] {
            assert!(check_redirect_uris(&[good.into()]).is_ok(), "{good}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(600));
        for bad in [
            "http://evil.example/cb",
            "https://app.example.com/cb#frag",
            "javascript:alert(1)",
            "not a url",
            "file:///etc/passwd",
            long.as_str(),
        ] {
            assert!(check_redirect_uris(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(check_redirect_uris(&[]).is_err());
    }
}
