//! The compile cache: a component compiled once is mapped from its file on
//! the next start, and a file that does not load is compiled again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use airlock_policy::OperatorPolicy;
use airlock_runtime::{Runtime, Tool};
use airlock_tests::tool_bytes;

fn runtime(cache: &Path) -> Runtime {
    Runtime::builder()
        .max_concurrent_calls(2)
        .compile_cache(cache)
        .build()
        .unwrap()
}

fn load(runtime: &Runtime) -> Tool {
    runtime
        .load(&tool_bytes("text-stats"), &OperatorPolicy::permissive())
        .unwrap()
}

/// The compiled files in `dir`.
fn cached(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

async fn words(runtime: &Runtime, tool: &Tool) -> serde_json::Value {
    let report = runtime.invoke(tool, r#"{"text": "from the cache"}"#).await;
    report.outcome.unwrap_output()["words"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_compiled_once_is_mapped_from_its_file_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path());
    let tool = load(&first);
    let files = cached(dir.path());
    assert_eq!(files.len(), 1, "one file per component: {files:?}");
    assert!(files[0].extension().is_some_and(|x| x == "cwasm"));
    assert_eq!(words(&first, &tool).await, 3);
    let written = inode(&files[0]);

    // A new engine, as after a restart: it reads the file, writes none.
    let second = runtime(dir.path());
    let tool = load(&second);
    assert_eq!(cached(dir.path()), files);
    assert_eq!(
        inode(&files[0]),
        written,
        "the file was replaced: the tool was compiled again"
    );
    assert_eq!(words(&second, &tool).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_file_that_does_not_load_is_compiled_again_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    load(&runtime(dir.path()));
    let file = cached(dir.path()).remove(0);
    let code = std::fs::read(&file).unwrap();
    // Cut short (a full disk), then not compiled code at all.
    for broken in [
        code[..code.len() / 2].to_vec(),
        b"not compiled code".to_vec(),
    ] {
        std::fs::write(&file, &broken).unwrap();
        let again = runtime(dir.path());
        let tool = load(&again);
        assert_eq!(words(&again, &tool).await, 3);
        assert_eq!(cached(dir.path()), [file.clone()]);
        assert_ne!(
            std::fs::read(&file).unwrap(),
            broken,
            "the broken file is kept"
        );
        // What replaced it loads.
        let replaced = inode(&file);
        let next = runtime(dir.path());
        assert_eq!(words(&next, &load(&next)).await, 3);
        assert_eq!(inode(&file), replaced);
    }
}

#[test]
fn a_compile_cache_that_is_not_a_folder_stops_the_runtime_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = dir.path().join("compiled");
    std::fs::write(&taken, "a file, not a folder").unwrap();
    let error = match Runtime::builder().compile_cache(&taken).build() {
        Ok(_) => panic!("a runtime was built on a file as its compile cache"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(&taken.display().to_string()) && error.contains("compile cache"),
        "{error}"
    );
}
