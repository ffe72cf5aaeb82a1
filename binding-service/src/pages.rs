//! The pages a person sees: one short message, the right status, a way back.
//! No script, no style sheet, nothing loaded; no internals, no token.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Outcome;

pub(crate) struct Page<'a> {
    pub(crate) outcome: Outcome,
    /// The tool's name, already checked to be one.
    pub(crate) tool: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) return_url: Option<&'a str>,
    pub(crate) sign_out_url: Option<&'a str>,
}

fn escape(s: &str) -> String {
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

impl Page<'_> {
    fn status(&self) -> StatusCode {
        match self.outcome {
            Outcome::Bound => StatusCode::OK,
            Outcome::NotSignedIn => StatusCode::UNAUTHORIZED,
            Outcome::Malformed => StatusCode::BAD_REQUEST,
            Outcome::Refused => StatusCode::FORBIDDEN,
            Outcome::Expired => StatusCode::GONE,
            Outcome::NotFinished => StatusCode::CONFLICT,
            Outcome::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The title and the message, as HTML.
    fn text(&self) -> (&'static str, String) {
        let tool = self
            .tool
            .map(|t| format!("<code>{}</code>", escape(t)))
            .unwrap_or_else(|| "The tool".into());
        match self.outcome {
            Outcome::Bound => (
                "Access granted",
                format!("{tool} may now act for you at the service you approved. Return to your agent and ask again."),
            ),
            Outcome::NotSignedIn => (
                "Not signed in",
                "This page needs you to be signed in. Open the link from your agent again.".into(),
            ),
            Outcome::Malformed => (
                "This link is not valid",
                "The link is incomplete or was changed. Ask your agent again for a new one.".into(),
            ),
            Outcome::Refused => (
                "Not granted",
                format!(
                    "This link cannot complete an authorization for you: it expired, was declined at the service or already used, or it was started by someone other than you{}. Nothing was granted, and the link no longer works. If it was yours, sign out, sign in as yourself, and ask your agent again.",
                    self.user
                        .map(|u| format!(" (you are signed in as <code>{}</code>)", escape(u)))
                        .unwrap_or_default()
                ),
            ),
            Outcome::Expired => (
                "This link has expired",
                "The link is unknown here: it expired or was never issued. Ask your agent again for a new one.".into(),
            ),
            Outcome::NotFinished => (
                "Authorization not finished",
                "The approval at the service is not complete yet. Finish it there, or ask your agent again to start over.".into(),
            ),
            Outcome::Unavailable => (
                "Try again shortly",
                "The identity service could not be reached. Nothing was granted. Reload this page in a moment.".into(),
            ),
        }
    }
}

impl IntoResponse for Page<'_> {
    fn into_response(self) -> Response {
        let (title, message) = self.text();
        let mut links = String::new();
        if self.outcome == Outcome::Refused
            && let Some(url) = self.sign_out_url
        {
            links.push_str(&format!("<p><a href=\"{}\">Sign out</a></p>", escape(url)));
        }
        if let Some(url) = self.return_url {
            links.push_str(&format!(
                "<p><a href=\"{}\">Return to your agent</a></p>",
                escape(url)
            ));
        }
        let body = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n<p>{message}</p>\n{links}\n</main>\n</body>\n</html>\n"
        );
        (
            self.status(),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_shown_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
