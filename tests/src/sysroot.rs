//! A stable rustc whose sysroot holds a prebuilt std for wasm32-wasip2, as
//! `rustup target add wasm32-wasip2` leaves it, made on machines that cannot
//! add a target.

use std::path::PathBuf;
use std::process::Command;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_ok(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}:\n{}", text(&out.stderr));
}

/// A rustc as a machine has it after `rustup target add wasm32-wasip2`: a
/// stable compiler whose sysroot holds a prebuilt std for the target. These
/// machines cannot add a target, so it is made once from Debian's stable
/// rustc-web (`scripts/setup-toolchain.sh`): std built for the target with
/// bitcode, as rustup ships it, wasi-libc as its self-contained libc, and the
/// native sysroot shared. Kept in the target dir.
pub fn stable_rustc_with_a_prebuilt_wasm_std() -> PathBuf {
    let own = Command::new("rustc").args(["--print", "sysroot"]).output();
    if let Ok(out) = own
        && out.status.success()
        && PathBuf::from(text(&out.stdout).trim())
            .join("lib/rustlib/wasm32-wasip2/lib")
            .is_dir()
    {
        return PathBuf::from("rustc");
    }
    let root = crate::target_root().join("test-stable-sysroot");
    let rustc = root.join("bin/rustc");
    if rustc.exists() {
        return rustc;
    }
    assert!(
        std::path::Path::new("/usr/lib/rustlib/src/rust/library").exists(),
        "Debian's rustc-web is missing: run scripts/setup-toolchain.sh"
    );
    let version = Command::new("/usr/bin/rustc").arg("-vV").output().unwrap();
    let llvm = text(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .expect("rustc -vV names its LLVM");

    let work = build_wasm_std();
    let staging = crate::target_root().join("test-stable-sysroot.tmp");
    let _ = std::fs::remove_dir_all(&staging);
    let lib = staging.join("lib/rustlib/wasm32-wasip2/lib");
    std::fs::create_dir_all(lib.join("self-contained")).unwrap();
    let deps = work.path().join("target/wasm32-wasip2/release/deps");
    for entry in std::fs::read_dir(&deps).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".rlib") && !name.starts_with("libonly_std") {
            std::fs::copy(&path, lib.join(&name)).unwrap();
        }
    }
    for entry in std::fs::read_dir("/usr/lib/wasm32-wasi").unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            lib.join("self-contained").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(
        "/usr/lib/rustlib/x86_64-unknown-linux-gnu",
        staging.join("lib/rustlib/x86_64-unknown-linux-gnu"),
    )
    .unwrap();
    std::fs::create_dir_all(staging.join("bin")).unwrap();
    // rustup's toolchains carry their own wasm-ld; this one names Debian's.
    let wrapper = format!(
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = wasm32-wasip2 ] && set -- \"$@\" -Clink-arg=--wasm-ld-path=/usr/bin/wasm-ld-{llvm} && break; done\nexec /usr/bin/rustc --sysroot {} \"$@\"\n",
        root.display()
    );
    let script = staging.join("bin/rustc");
    std::fs::write(&script, wrapper).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staging, &root).unwrap();
    rustc
}

/// std for wasm32-wasip2, built by Debian's cargo with bitcode, in a
/// throwaway crate's target folder.
fn build_wasm_std() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("Cargo.toml"),
        "[package]\nname = \"only-std\"\nversion = \"0.0.0\"\nedition = \"2024\"\n[lib]\npath = \"lib.rs\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(work.path().join("lib.rs"), "").unwrap();
    run_ok(
        Command::new("/usr/bin/cargo")
            .current_dir(work.path())
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "-Zbuild-std=std,panic_abort",
            ])
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTDOC", "/usr/bin/rustdoc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTFLAGS", "-Cembed-bitcode=yes")
            .env_remove("CARGO_TARGET_DIR"),
        "building std for wasm32-wasip2",
    );
    work
}
