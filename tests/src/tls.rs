//! An HTTPS server on 127.0.0.1 answering for `localhost`, its certificate
//! from a CA made for the test (rcgen): for peers that must be reached over
//! TLS, like client ID metadata documents. The CA's PEM is written to a file
//! the server under test is told to trust.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type Documents = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// The server: JSON documents by path.
pub struct Https {
    /// Its port.
    pub port: u16,
    /// The CA certificate to trust (PEM file).
    pub ca: PathBuf,
    documents: Documents,
    _dir: tempfile::TempDir,
}

impl Https {
    /// Start inside the current tokio runtime.
    pub async fn start() -> Https {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let documents: Documents = Arc::default();
        let served = documents.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, served) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let found = served.lock().unwrap().get(req.uri().path()).cloned();
                        async move {
                            let response = match found {
                                Some(body) => Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body))),
                                None => Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new())),
                            };
                            Ok::<_, Infallible>(response.unwrap())
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Https {
            port,
            ca,
            documents,
            _dir: dir,
        }
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Serve `document` at `path`.
    pub fn put(&self, path: &str, document: &serde_json::Value) {
        self.documents
            .lock()
            .unwrap()
            .insert(path.to_string(), document.to_string().into_bytes());
    }
}
