//! An S3-compatible server on 127.0.0.1: moto (PyPI `moto[server]`, pinned
//! in tests/s3/requirements.txt, installed by scripts/setup-test-peers.sh).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// A running moto server; killed on drop.
pub struct Moto {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Start one on a free port and wait until it answers.
    pub async fn start() -> Moto {
        let server = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("s3/.venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/setup-test-peers.sh",
            server.display()
        );
        let port = crate::peers::free_port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let moto = Moto {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let what = format!("moto_server answers on {}", moto.endpoint);
        let endpoint = &moto.endpoint;
        crate::eventually(Duration::from_secs(10), &what, || async move {
            reqwest::get(endpoint).await.ok().map(drop)
        })
        .await;
        moto
    }

    /// A client for it (path-style, any key: moto checks none).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new("moto", "moto", None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Create the bucket `name`.
    pub async fn bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e:?}"));
    }

    /// Stop it (the bucket goes away with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
