//! The pages a person sees at the façade: the consent page (which client
//! asks, where it sends the answer, what it may do) and the error page. No
//! script, no style sheet, nothing loaded; not framed by anyone.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        title = escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // Not no-referrer: a form posted under it says `Origin: null`.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What the consent page shows of the request.
pub(crate) struct Consent<'a> {
    pub(crate) client_name: Option<&'a str>,
    pub(crate) client_id: &'a str,
    /// Where the answer goes (the redirect URI's host).
    pub(crate) sends_to: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) request: &'a str,
    pub(crate) csrf: &'a str,
}

/// The consent page: the person approves before the façade takes them to
/// the IdP, so that no client can have a sign-in it was not given.
pub(crate) fn consent(c: &Consent) -> Response {
    let who = match c.client_name {
        Some(name) => format!(
            "<strong>{}</strong> (client <code>{}</code>)",
            escape(name),
            escape(&shorten(c.client_id))
        ),
        None => format!("The client <code>{}</code>", escape(&shorten(c.client_id))),
    };
    let scopes: String = c
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code>: {}</li>", escape(s), describe(s)))
        .collect();
    let body = format!(
        "<p>{who} asks to use Airlock's tools as you.</p>\n<p>If you allow it, you will sign in, and the answer goes to <code>{sends_to}</code>.</p>\n<p>It may:</p>\n<ul>{scopes}</ul>\n<form method=\"post\" action=\"/oauth/consent\">\n<input type=\"hidden\" name=\"request\" value=\"{request}\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n<button type=\"submit\" name=\"decision\" value=\"allow\" autofocus>Allow</button>\n<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>\n<p>Only allow clients you started yourself.</p>",
        sends_to = escape(c.sends_to),
        request = escape(c.request),
        csrf = escape(c.csrf),
    );
    page(StatusCode::OK, "Allow this client?", &body)
}

fn describe(scope: &str) -> &'static str {
    match scope {
        "tools:list" => "see the tools you may use",
        "tools:call" => "call those tools for you",
        _ => "a permission of this server",
    }
}

/// A dynamic client's id is long: its start is enough to tell it apart.
fn shorten(id: &str) -> String {
    if id.chars().count() > 64 {
        format!("{}…", id.chars().take(48).collect::<String>())
    } else {
        id.to_string()
    }
}

/// An error the person sees (never the client's redirect: it could not be trusted).
pub(crate) fn error(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<p>{}</p>\n<p>Nothing was granted. Start again from your application.</p>",
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_a_client_says_of_itself_is_escaped() {
        let r = consent(&Consent {
            client_name: Some("<script>alert(1)</script>"),
            client_id: "c\"1",
            sends_to: "127.0.0.1",
            scopes: &["tools:list".into()],
            request: "r",
            csrf: "x",
        });
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && html.contains("c&quot;1"),
            "{html}"
        );
    }

    #[test]
    fn long_client_ids_are_shortened() {
        assert_eq!(shorten("abc"), "abc");
        assert!(shorten(&"x".repeat(200)).ends_with('…'));
        assert_eq!(escape("<\"&'>"), "&lt;&quot;&amp;&#39;&gt;");
    }
}
