//! A real browser for the tests: Debian's headless Chromium, driven through
//! WebDriver (`chromedriver`) with `fantoccini`. Each [`Chrome`] is one
//! person's browser: its own profile, so its own cookies.

use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// One browser session, and the chromedriver serving it.
pub struct Chrome {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: `AIRLOCK_ARTIFACTS`, or `test-artifacts` in the
/// target folder (`CARGO_TARGET_DIR`, or the workspace's `target`).
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("AIRLOCK_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
                })
                .join("test-artifacts")
        });
    std::fs::create_dir_all(&dir).expect("the artifacts folder");
    dir
}

impl Chrome {
    /// Start chromedriver and a fresh headless Chromium.
    pub async fn start() -> Chrome {
        let port = crate::peers::free_port();
        let mut driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (apt install chromium chromium-driver; scripts/setup-test-peers.sh does)");
        let url = format!("http://127.0.0.1:{port}");
        let status = &format!("{url}/status");
        crate::eventually(Duration::from_secs(20), "chromedriver answers", || {
            if let Ok(Some(exit)) = driver.try_wait() {
                panic!("chromedriver exited: {exit}");
            }
            async move { reqwest::get(status).await.ok().map(drop) }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--window-size=900,700",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Chrome {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Open `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The page's URL.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The page's HTML.
    pub async fn html(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Wait until the page's URL starts with `prefix`.
    pub async fn until_at(&self, prefix: &str) {
        let what = format!("the browser at {prefix}");
        crate::eventually(Duration::from_secs(20), &what, || async {
            self.url().await.starts_with(prefix).then_some(())
        })
        .await;
        self.loaded().await
    }

    /// Go through oidc-provider's sign-in and consent pages as `login`
    /// (approving each), until the browser is at a URL starting with `done`.
    pub async fn approve_until(&self, login: &str, done: &str) {
        self.approve(login, &|url, _| url.starts_with(done)).await;
        self.loaded().await;
    }

    /// The same, until the page's HTML holds `text` (a device sign-in ends
    /// on the provider's own success page).
    pub async fn approve_until_text(&self, login: &str, text: &str) {
        self.approve(login, &|_, html| html.contains(text)).await;
    }

    async fn approve(&self, login: &str, done: &dyn Fn(&str, &str) -> bool) {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            let html = self.html().await;
            if done(&url, &html) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "stuck at {url}: {html}"
            );
            let path = url::Url::parse(&url)
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            // oidc-provider's pages, and the consent page of Airlock's authorization server.
            let asks = ["/interaction/", "/device", "/oauth/authorize"];
            if !asks.iter().any(|p| path.starts_with(p)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Ok(field) = self.client.find(Locator::Css("input[name=login]")).await {
                field.send_keys(login).await.unwrap();
                self.client
                    .find(Locator::Css("input[name=password]"))
                    .await
                    .unwrap()
                    .send_keys("any")
                    .await
                    .unwrap();
            }
            // The approving button: the autofocused one where there is a choice.
            let button = match self.client.find(Locator::Css("button[autofocus]")).await {
                Ok(b) => Ok(b),
                Err(_) => self.client.find(Locator::Css("button[type=submit]")).await,
            };
            match button {
                Ok(button) => {
                    let _ = button.click().await;
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            // Wait for the page to move on.
            let moved = Instant::now();
            while self.url().await == url && moved.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Wait for the page's heading: the page is there.
    async fn loaded(&self) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("h1"))
            .await
            .expect("a page with a heading");
    }

    /// A PNG of the page, saved as `name` among the artifacts.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = artifacts_dir().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// End the session.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // A test that failed before `close` leaves no browser behind: its
        // processes are the ones using this profile.
        let _ = std::process::Command::new("pkill")
            .args(["-f", "--"])
            .arg(format!(
                "--user-data-dir={}",
                self._profile.path().display()
            ))
            .status();
    }
}
