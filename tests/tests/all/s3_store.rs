//! The shared tool store against an S3-compatible server (moto): kept,
//! replaced, removed, no orphan left, every blob checked against its digest,
//! two replicas writing at once losing nothing, an unreachable bucket named.

use std::sync::Arc;

use airlock_server::store::s3::{S3Location, S3Store};
use airlock_server::store::{StoredTool, ToolStore, digest_of};
use airlock_tests::s3::Moto;

const BUCKET: &str = "airlock-tools";

fn entry(name: &str, wasm: &[u8]) -> StoredTool {
    StoredTool::new(name, wasm, "ci", 1, None)
}

async fn store(moto: &Moto) -> Arc<S3Store> {
    let at = S3Location::parse(&format!("s3://{BUCKET}/prod"))
        .unwrap()
        .unwrap();
    // No grace: an unnamed blob goes at once, so the test sees it go.
    Arc::new(S3Store::with_client(moto.client(), at).with_grace(0))
}

/// The store's methods block: run them as the server does.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn keys(moto: &Moto) -> Vec<String> {
    let listed = moto
        .client()
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_keeps_replaces_and_removes_and_checks_every_blob() {
    let moto = Moto::start().await;
    moto.bucket(BUCKET).await;
    let s = store(&moto).await;
    let blob = |w: &[u8]| format!("prod/blobs/{}.wasm", digest_of(w));

    let st = s.clone();
    let (empty, listed) = blocking(move || st.poll(None)).await.unwrap().unwrap();
    assert!(listed.is_empty());
    let (st, v) = (s.clone(), empty.clone());
    assert!(blocking(move || st.poll(Some(&v))).await.unwrap().is_none());

    let st = s.clone();
    let replaced = blocking(move || {
        assert!(st.put(&entry("a", b"one"), b"one", true).unwrap().is_none());
        let replaced = st.put(&entry("a", b"two"), b"two", true).unwrap();
        st.put(&entry("b", b"two"), b"two", true).unwrap();
        replaced
    })
    .await;
    assert_eq!(replaced.unwrap().digest, digest_of(b"one"));
    // The replaced content is gone; the shared one is there once.
    assert_eq!(
        keys(&moto).await,
        [blob(b"two"), "prod/index.json".to_string()]
    );

    let (st, v) = (s.clone(), empty.clone());
    let (v1, names, content) = blocking(move || {
        let (v1, listed) = st.poll(Some(&v)).unwrap().unwrap();
        let names: Vec<String> = listed.into_iter().map(|t| t.name).collect();
        (v1, names, st.read(&digest_of(b"two")).unwrap())
    })
    .await;
    assert_eq!(
        (names, content),
        (vec!["a".to_string(), "b".to_string()], b"two".to_vec())
    );
    let st = s.clone();
    let v = v1.clone();
    assert!(blocking(move || st.poll(Some(&v))).await.unwrap().is_none());

    // Shared content stays until its last name goes.
    let st = s.clone();
    blocking(move || {
        assert_eq!(st.remove("a").unwrap().unwrap().name, "a");
        assert_eq!(st.read(&digest_of(b"two")).unwrap(), b"two");
        st.remove("b").unwrap().unwrap();
        assert!(st.remove("b").unwrap().is_none());
    })
    .await;
    assert_eq!(keys(&moto).await, ["prod/index.json"]);
    let st = s.clone();
    let (v2, listed) = blocking(move || st.poll(Some(&v1))).await.unwrap().unwrap();
    assert!(listed.is_empty() && v2 != empty);

    // A blob changed in the bucket is refused on load; a path is not a digest.
    let st = s.clone();
    blocking(move || st.put(&entry("c", b"three"), b"three", true).unwrap()).await;
    moto.client()
        .put_object()
        .bucket(BUCKET)
        .key(blob(b"three"))
        .body(b"thr3e".to_vec().into())
        .send()
        .await
        .unwrap();
    let st = s.clone();
    let (changed, path) = blocking(move || {
        (
            st.read(&digest_of(b"three")).unwrap_err().to_string(),
            st.read("../index").unwrap_err().to_string(),
        )
    })
    .await;
    assert!(changed.contains("does not match its digest"), "{changed}");
    assert!(path.contains("not a sha256 digest"), "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_changing_the_index_at_once_lose_no_change() {
    let moto = Moto::start().await;
    moto.bucket(BUCKET).await;
    let (a, b) = (store(&moto).await, store(&moto).await);
    let writer = |s: Arc<S3Store>, side: &'static str| {
        tokio::task::spawn_blocking(move || {
            for i in 0..8 {
                let wasm = format!("{side}{i}").into_bytes();
                s.put(&entry(&format!("{side}-{i}"), &wasm), &wasm, true)
                    .unwrap();
            }
        })
    };
    let (x, y) = tokio::join!(writer(a.clone(), "a"), writer(b.clone(), "b"));
    x.unwrap();
    y.unwrap();
    let listed = blocking(move || a.list().unwrap()).await;
    assert_eq!(listed.len(), 16, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_is_named_and_nothing_pretends_to_succeed() {
    let mut moto = Moto::start().await;
    moto.bucket(BUCKET).await;
    let s = store(&moto).await;
    moto.stop();
    let e = blocking(move || {
        let listed = s.list().unwrap_err().to_string();
        let put = s
            .put(&entry("a", b"one"), b"one", true)
            .unwrap_err()
            .to_string();
        (listed, put)
    })
    .await;
    for message in [&e.0, &e.1] {
        assert!(message.contains("s3://airlock-tools/prod/"), "{message}");
    }
}
