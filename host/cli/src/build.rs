//! Build a tool folder into a component with its manifest embedded.
//!
//! Two toolchains are used, whichever is present: Debian's rustc-web with
//! build-std (what `scripts/setup-toolchain.sh` installs), or a rustup nightly
//! with `rust-src` and the `wasm32-wasip2` target. Both build std with the
//! `immediate-abort` panic strategy: a prebuilt std would pull in
//! wasi:filesystem and wasi:cli/environment imports (for panic messages and
//! preopens) that the host refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_manifest::Manifest;
use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

enum Toolchain {
    Debian { wasm_ld: PathBuf },
    RustupNightly,
}

impl Toolchain {
    fn detect() -> Result<Toolchain> {
        let rustc = Path::new("/usr/bin/rustc");
        if rustc.exists() && Path::new("/usr/lib/rustlib/src/rust/library").exists() {
            let out = Command::new(rustc)
                .arg("-vV")
                .output()
                .context("running /usr/bin/rustc -vV")?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(major) = text
                .lines()
                .find_map(|l| l.strip_prefix("LLVM version: "))
                .and_then(|v| v.split('.').next())
            {
                let wasm_ld = PathBuf::from(format!("/usr/bin/wasm-ld-{major}"));
                if wasm_ld.exists() {
                    return Ok(Toolchain::Debian { wasm_ld });
                }
            }
        }
        let sysroot = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--print", "sysroot"])
            .output();
        if let Ok(out) = sysroot {
            let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success()
                && root.join("lib/rustlib").join(TARGET).exists()
                && root.join("lib/rustlib/src/rust/library").exists()
            {
                return Ok(Toolchain::RustupNightly);
            }
        }
        bail!(
            "no toolchain can build {TARGET} components here. On Debian/Ubuntu run `scripts/setup-toolchain.sh`; \
             elsewhere run `rustup toolchain install nightly --component rust-src --target {TARGET}`"
        )
    }

    fn cargo(&self) -> Command {
        match self {
            Toolchain::Debian { .. } => {
                let mut c = Command::new("/usr/bin/cargo");
                c.env("RUSTC", "/usr/bin/rustc")
                    .env("RUSTDOC", "/usr/bin/rustdoc")
                    .env("RUSTC_BOOTSTRAP", "1");
                c
            }
            Toolchain::RustupNightly => {
                let mut c = Command::new("cargo");
                c.arg("+nightly");
                c
            }
        }
    }

    fn wasm_rustflags(&self) -> String {
        let mut flags = vec![
            "\"-Zunstable-options\"".to_string(),
            "\"-Cpanic=immediate-abort\"".to_string(),
        ];
        if let Toolchain::Debian { wasm_ld } = self {
            flags.push(
                "\"-Clink-arg=--wasm-ld-path=".to_string() + &wasm_ld.display().to_string() + "\"",
            );
            flags.extend([
                "\"-L\"".to_string(),
                "\"native=/usr/lib/wasm32-wasi\"".to_string(),
            ]);
        }
        format!("target.{TARGET}.rustflags=[{}]", flags.join(","))
    }
}

/// What a build produced.
pub struct Built {
    /// The component with its manifest.
    pub wasm: PathBuf,
    /// The manifest embedded.
    pub manifest: Manifest,
}

/// Build the tool in `folder` (a cargo package with a `tool.toml`).
pub fn build(folder: &Path, out: Option<&Path>) -> Result<Built> {
    let tool_toml_path = folder.join("tool.toml");
    let tool_toml = std::fs::read_to_string(&tool_toml_path).with_context(|| {
        format!(
            "reading {}: a tool folder holds Cargo.toml and tool.toml (see tools/README.md)",
            tool_toml_path.display()
        )
    })?;
    let meta = metadata(folder)?;
    let toolchain = Toolchain::detect()?;
    let target_dir = std::env::var_os("AIRLOCK_TOOLS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(meta.target_dir);

    // Schemas first: a natively built binary prints them from the tool's types.
    let schema_out = toolchain
        .cargo()
        .current_dir(folder)
        .args(["run", "--quiet", "--bin", "schema", "--target-dir"])
        .arg(target_dir.join("airlock-native"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .context("running cargo for the schema step")?;
    if !schema_out.status.success() {
        bail!(
            "generating the schemas of {} failed (does src/bin/schema.rs call airlock_tool::print_schemas?):\n{}",
            folder.display(),
            String::from_utf8_lossy(&schema_out.stderr)
        );
    }
    let schemas: serde_json::Value = serde_json::from_slice(&schema_out.stdout)
        .context("the schema binary must print one JSON object with `input` and `output`")?;
    let manifest = Manifest::from_tool_toml(&tool_toml, &schemas)
        .with_context(|| format!("in {}", tool_toml_path.display()))?;

    let wasm_target = target_dir.join("airlock-wasm");
    let status = toolchain
        .cargo()
        .current_dir(folder)
        .args([
            "build",
            "--release",
            "--lib",
            "--target",
            TARGET,
            "-Zbuild-std=std,panic_abort",
            "--target-dir",
        ])
        .arg(&wasm_target)
        .arg("--config")
        .arg(toolchain.wasm_rustflags())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .context("running cargo build for wasm32-wasip2")?;
    if !status.success() {
        bail!(
            "building {} for {TARGET} failed (see cargo's output above)",
            folder.display()
        );
    }
    let raw = wasm_target
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", meta.lib_name));
    let bytes = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let with_manifest = airlock_manifest::embed(&bytes, &manifest)?;

    let dest = match out {
        Some(p) => p.to_path_buf(),
        None => target_dir
            .join("airlock")
            .join(format!("{}.wasm", manifest.name)),
    };
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write then rename, so a reader never sees half a tool.
    let tmp = dest.with_extension("wasm.tmp");
    std::fs::write(&tmp, &with_manifest).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(Built {
        wasm: dest,
        manifest,
    })
}

struct Meta {
    target_dir: PathBuf,
    lib_name: String,
}

fn metadata(folder: &Path) -> Result<Meta> {
    let out = Command::new("cargo")
        .current_dir(folder)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "{} is not a cargo package: {}",
            folder.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let manifest_path = std::fs::canonicalize(folder.join("Cargo.toml"))
        .with_context(|| format!("{} has no Cargo.toml", folder.display()))?;
    let package = meta["packages"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["manifest_path"].as_str().map(Path::new) == Some(manifest_path.as_path())
            })
        })
        .with_context(|| {
            format!(
                "{} is not a member of its cargo workspace",
                folder.display()
            )
        })?;
    let lib_name = package["targets"]
        .as_array()
        .and_then(|ts| {
            ts.iter().find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            })
        })
        .and_then(|t| t["name"].as_str())
        .map(|n| n.replace('-', "_"))
        .with_context(|| {
            format!(
                "{} has no cdylib target: add [lib] crate-type = [\"cdylib\", \"rlib\"]",
                folder.display()
            )
        })?;
    let target_dir = PathBuf::from(
        meta["target_directory"]
            .as_str()
            .context("cargo metadata lacks target_directory")?,
    );
    Ok(Meta {
        target_dir,
        lib_name,
    })
}
