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
    /// `configured`, `dynamic` or `metadata_document`.
    pub(crate) kind: &'a str,
    /// Where the answer goes, whole: a host alone hides whose page it is.
    pub(crate) redirect_uri: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) request: &'a str,
    pub(crate) csrf: &'a str,
}

/// The consent page: the person approves before the façade takes them to
/// the IdP, so that no client can have a sign-in it was not given. Nothing
/// has focus: a keypress carried into a popup must not approve.
pub(crate) fn consent(c: &Consent) -> Response {
    let name = c.client_name.map(plain).filter(|n| !n.is_empty());
    let who = match (name, c.kind) {
        (Some(name), "configured") => format!(
            "<strong>{}</strong> (client <code>{}</code>)",
            escape(&name),
            escape(c.client_id)
        ),
        (None, "configured") => format!("The client <code>{}</code>", escape(c.client_id)),
        (name, kind) => {
            let named = match name {
                Some(name) => format!("A client calling itself <strong>{}</strong>", escape(&name)),
                None => "A client".to_string(),
            };
            let from = if kind == "metadata_document" {
                format!(
                    " (described by <code>{}</code>)",
                    escape(&plain(c.client_id))
                )
            } else {
                String::new()
            };
            format!("{named}{from}, <strong>not verified by this server</strong>,")
        }
    };
    let scopes: String = c
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code>: {}</li>", escape(s), describe(s)))
        .collect();
    let body = format!(
        "<p>{who} asks to use Airlock's tools as you.</p>\n<p>If you allow it, you will sign in, and the answer goes to <code>{sends_to}</code>.</p>\n<p>It may:</p>\n<ul>{scopes}</ul>\n<form method=\"post\" action=\"/oauth/consent\">\n<input type=\"hidden\" name=\"request\" value=\"{request}\">\n<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\n<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>\n<p>Only allow clients you started yourself, and only if that address is theirs.</p>",
        sends_to = escape(&plain(c.redirect_uri)),
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

/// Text a client chose, without the control and formatting characters
/// (bidirectional overrides, zero-width marks) that make it read otherwise.
pub(crate) fn plain(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            !(c.is_control()
                || matches!(c as u32,
                    0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
                    | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F))
        })
        .collect::<String>()
        .trim()
        .to_string()
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

    async fn html(c: &Consent<'_>) -> String {
        let r = consent(c);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn what_a_client_says_of_itself_is_escaped() {
        let html = html(&Consent {
            client_name: Some("<script>alert(1)</script>"),
            client_id: "c\"1",
            kind: "configured",
            redirect_uri: "http://127.0.0.1/cb",
            scopes: &["tools:list".into()],
            request: "r",
            csrf: "x",
        })
        .await;
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && html.contains("c&quot;1"),
            "{html}"
        );
        assert!(!html.contains("autofocus"), "{html}");
    }

    #[tokio::test]
    async fn a_self_registered_client_is_marked_unverified_and_its_whole_redirect_shown() {
        let html = html(&Consent {
            client_name: Some("Claude\u{202E}edoC"),
            client_id: "https://vscode.dev.oauth.client-metadata.microsoft.com.evil.io/c.json",
            kind: "metadata_document",
            redirect_uri: "https://script.google.com/macros/s/ATTACKER/exec",
            scopes: &["tools:call".into()],
            request: "r",
            csrf: "x",
        })
        .await;
        assert!(html.contains("not verified by this server"), "{html}");
        assert!(html.contains("calling itself <strong>ClaudeedoC</strong>"), "{html}");
        assert!(!html.contains('\u{202E}'), "{html}");
        assert!(html.contains("microsoft.com.evil.io/c.json"), "{html}");
        assert!(html.contains("https://script.google.com/macros/s/ATTACKER/exec"), "{html}");
    }

    #[test]
    fn control_and_format_characters_are_taken_out() {
        assert_eq!(plain(" a\u{200B}b\u{2066}c\nd "), "abcd");
        assert_eq!(escape("<\"&'>"), "&lt;&quot;&amp;&#39;&gt;");
    }
}
