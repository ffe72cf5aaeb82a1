//! oidc-provider (npm, OpenID Certified) as the third-party provider, and a
//! driver for its login and consent pages over plain HTTP.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running oidc-provider.
pub struct OidcProvider {
    /// The issuer URL (`http://127.0.0.1:PORT`).
    pub issuer: String,
    child: Child,
}

/// The folder with `server.mjs` and its `node_modules`.
pub fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

impl OidcProvider {
    /// Start `node server.mjs` with `config` (see server.mjs) and wait for it.
    pub fn start(config: &Value) -> OidcProvider {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed; run `npm ci` in {} (scripts/test.sh does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("OIDC_CONFIG", config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is installed");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading: a closed pipe would end the provider at its next line.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("oidc-provider did not start: {line:?}"));
        OidcProvider {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            child,
        }
    }

    /// Take the provider down (it stays down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The discovery URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the user does at the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Sign in and consent.
    Approve,
    /// Sign in and abort.
    Deny,
}

/// A browser without JavaScript: follows redirects by hand, keeps cookies,
/// fills the provider's login and consent forms.
pub struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    /// A fresh browser (no cookies).
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn remember(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let Ok(value) = value.to_str() else { continue };
            let pair = value.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Open `url` and follow redirects, login and consent as `login`, to the
    /// first page that is neither: its URL, status and text.
    pub async fn visit(
        &mut self,
        url: &str,
        login: &str,
        decision: Decision,
    ) -> Result<(String, u16, String), String> {
        match self.walk(url, login, decision, None).await? {
            Walked::Page { url, status, body } => Ok((url.to_string(), status, body)),
            Walked::Stopped(url) => Ok((url, 0, String::new())),
        }
    }

    /// The form to post on an interaction page (None: `url` was moved on).
    fn answer(
        &self,
        url: &mut url::Url,
        body: &str,
        login: &str,
        decision: Decision,
    ) -> Result<Option<Vec<(&'static str, String)>>, String> {
        if body.contains(FACADE_CONSENT) {
            // Airlock's authorization server asks whether to allow the client.
            let field = |name: &str| {
                let marker = format!("name=\"{name}\" value=\"");
                body.split_once(&marker)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(value, _)| value.to_string())
                    .unwrap_or_default()
            };
            let choice = if decision == Decision::Approve {
                "allow"
            } else {
                "deny"
            };
            *url = url.join("/oauth/consent").map_err(|e| e.to_string())?;
            return Ok(Some(vec![
                ("request", field("request")),
                ("csrf", field("csrf")),
                ("decision", choice.into()),
            ]));
        }
        if body.contains(r#"name="prompt" value="login""#) {
            Ok(Some(vec![
                ("prompt", "login".into()),
                ("login", login.into()),
                ("password", "any".into()),
            ]))
        } else if body.contains(r#"name="prompt" value="consent""#) {
            if decision == Decision::Deny {
                *url = url.join(&format!("{}/abort", url.path())).unwrap();
                return Ok(None);
            }
            Ok(Some(vec![("prompt", "consent".into())]))
        } else {
            Err(format!(
                "unexpected page at {}: {}",
                url.path(),
                strip(body)
            ))
        }
    }

    /// Follow `url` through login and consent as `login`, until the browser is
    /// sent to a URL starting with `stop_at`; return that URL.
    pub async fn authorize(
        &mut self,
        url: &str,
        login: &str,
        decision: Decision,
        stop_at: &str,
    ) -> Result<String, String> {
        match self.walk(url, login, decision, Some(stop_at)).await? {
            Walked::Stopped(url) => Ok(url),
            Walked::Page { url, status, body } => {
                Err(format!("{status} at {}: {}", url.path(), strip(&body)))
            }
        }
    }

    /// Redirects and interaction pages, until a URL starts with `stop_at`
    /// (not requested) or a page is neither; with `stop_at`, a failing
    /// interaction page ends the walk too.
    async fn walk(
        &mut self,
        url: &str,
        login: &str,
        decision: Decision,
        stop_at: Option<&str>,
    ) -> Result<Walked, String> {
        let mut url = url::Url::parse(url).map_err(|e| e.to_string())?;
        let mut form: Option<Vec<(&str, String)>> = None;
        for _ in 0..30 {
            if stop_at.is_some_and(|s| url.as_str().starts_with(s)) {
                return Ok(Walked::Stopped(url.to_string()));
            }
            let request = match form.take() {
                Some(fields) => self.http.post(url.clone()).form(&fields),
                None => self.http.get(url.clone()),
            };
            let response = request
                .header("cookie", self.cookie_header())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            self.remember(&response);
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"].to_str().unwrap().to_string();
                url = url.join(&location).map_err(|e| e.to_string())?;
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            let failed = stop_at.is_some() && !status.is_success();
            let interaction =
                url.path().starts_with("/interaction/") || body.contains(FACADE_CONSENT);
            if failed || !interaction {
                return Ok(Walked::Page {
                    url,
                    status: status.as_u16(),
                    body,
                });
            }
            form = match self.answer(&mut url, &body, login, decision)? {
                Some(fields) => Some(fields),
                None => continue,
            };
        }
        Err("too many redirects".into())
    }
}

/// What marks the consent page of Airlock's authorization server.
const FACADE_CONSENT: &str = "action=\"/oauth/consent\"";

/// Where a walk ended.
enum Walked {
    /// At a URL starting with the stop prefix, not requested.
    Stopped(String),
    /// At a page that is no redirect and no interaction.
    Page {
        url: url::Url,
        status: u16,
        body: String,
    },
}

fn strip(html: &str) -> String {
    let mut out = String::new();
    let mut tag = false;
    for c in html.chars() {
        match c {
            '<' => tag = true,
            '>' => tag = false,
            c if !tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect()
}
