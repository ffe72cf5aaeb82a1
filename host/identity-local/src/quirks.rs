//! How the `oauth2` crate reaches token endpoints (our HTTP client: no
//! redirects, bounded time), and the vendor quirks smoothed before it reads
//! an answer. Each quirk is small, named, and tested against a stand-in that
//! answers like that vendor (tests/src/standin.rs):
//!
//! - GitHub answers a refused code or refresh with status 200 and an `error`
//!   field: read as the error response it is.
//! - Azure AD's v1 endpoints send `expires_in` (and `ext_expires_in`) as a
//!   string: read as the number it is.
//! - GitHub answers JSON only when asked with `Accept: application/json`,
//!   which `oauth2` sends; its comma-separated scopes are read by
//!   `scopes::granted`; its tokens never expire, which the broker handles
//!   after a 401.

use std::future::Future;

use http::StatusCode;
use serde_json::Value;

/// A token endpoint that could not be reached. Never names the URL's query.
#[derive(Debug)]
pub(crate) struct HttpFailure(String);

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpFailure {}

/// The HTTP client `oauth2` requests go through.
pub(crate) fn client(
    http: &reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
)
    -> std::pin::Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpFailure>> + Send>>
+ use<> {
    let http = http.clone();
    move |request| Box::pin(send(http.clone(), request))
}

async fn send(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpFailure> {
    let mut answer = airlock_verify::send(&http, request)
        .await
        .map_err(|e| HttpFailure(e.to_string()))?;
    let (status, body) = smooth(answer.status(), std::mem::take(answer.body_mut()));
    *answer.status_mut() = status;
    *answer.body_mut() = body;
    Ok(answer)
}

/// The answer as a standard one: an error sent with 200 gets an error
/// status; numbers sent as strings become numbers.
fn smooth(status: StatusCode, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
        return (status, body);
    };
    let mut changed = false;
    for name in ["expires_in", "ext_expires_in", "refresh_token_expires_in"] {
        if let Some(Value::String(s)) = fields.get(name)
            && let Ok(n) = s.trim().parse::<u64>()
        {
            fields.insert(name.to_string(), Value::from(n));
            changed = true;
        }
    }
    let status = if status == StatusCode::OK
        && fields.contains_key("error")
        && !fields.contains_key("access_token")
    {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let body = if changed {
        serde_json::to_vec(&Value::Object(fields)).unwrap_or(body)
    } else {
        body
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_sent_with_200_gets_an_error_status() {
        let (status, body) = smooth(
            StatusCode::OK,
            br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("bad_verification_code")
        );
        // A token answer stays as it is.
        let token = br#"{"access_token":"x","token_type":"bearer","scope":"repo,read:user"}"#;
        assert_eq!(
            smooth(StatusCode::OK, token.to_vec()),
            (StatusCode::OK, token.to_vec())
        );
    }

    #[test]
    fn lifetimes_sent_as_strings_become_numbers() {
        let (status, body) = smooth(
            StatusCode::OK,
            br#"{"access_token":"x","token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599"}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["expires_in"], 3599);
        assert_eq!(v["ext_expires_in"], 3599);
    }
}
