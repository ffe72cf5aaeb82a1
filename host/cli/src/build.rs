//! Build a tool folder into a component with its manifest embedded.
//!
//! A folder whose `tool.toml` has `[build]` (any language) runs its command
//! and gets the manifest packed into the component it writes. A Rust tool is
//! built with whichever toolchain is present, the standard one first: stable
//! cargo where rustc has the `wasm32-wasip2` std (`rustup target add
//! wasm32-wasip2`); else Debian's rustc-web with build-std (what
//! `scripts/setup-toolchain.sh` installs, for machines that cannot add a
//! target); else a rustup nightly with `rust-src`. The build-std routes build
//! std with the `immediate-abort` panic strategy, which keeps a tool's imports
//! to the basics; the prebuilt std adds wasi:filesystem and
//! wasi:cli/environment, linked inert, and refused in strict mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_manifest::Manifest;
use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";

enum Toolchain {
    /// rustc (`$RUSTC` or on the path) has the target's std: plain cargo.
    Standard,
    Debian {
        wasm_ld: PathBuf,
    },
    RustupNightly,
}

impl Toolchain {
    fn detect(folder: &Path) -> Result<Toolchain> {
        // In the folder, so that a rust-toolchain file there chooses the rustc.
        let standard = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .current_dir(folder)
            .args(["--print", "sysroot"])
            .output();
        if let Ok(out) = standard {
            let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && root.join("lib/rustlib").join(TARGET).join("lib").is_dir() {
                return Ok(Toolchain::Standard);
            }
        }
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
            "no toolchain can build {TARGET} components here: run `rustup target add {TARGET}`, \
             or where no target can be added, on Debian/Ubuntu `scripts/setup-toolchain.sh`"
        )
    }

    fn describe(&self) -> &'static str {
        match self {
            Toolchain::Standard => "cargo with rustc's own wasm32-wasip2 std",
            Toolchain::Debian { .. } => "Debian's rustc-web, std built from source",
            Toolchain::RustupNightly => "rustup's nightly, std built from source",
        }
    }

    /// The flags that build std from source, none for a prebuilt std.
    fn build_std_args(&self) -> Vec<String> {
        match self {
            Toolchain::Standard => Vec::new(),
            _ => vec![
                "-Zbuild-std=std,panic_abort".to_string(),
                "--config".to_string(),
                self.wasm_rustflags(),
            ],
        }
    }

    fn cargo(&self) -> Command {
        match self {
            Toolchain::Standard => {
                let mut c = Command::new("cargo");
                // A stable build: no unstable flag may slip in from outside.
                c.env_remove("RUSTC_BOOTSTRAP");
                c
            }
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

/// Any JSON object in, any JSON out: the schemas of a packed component
/// that names none.
fn open_schemas() -> serde_json::Value {
    serde_json::json!({"input": {"type": "object"}, "output": {}})
}

/// The schemas file `path` (`{"input": .., "output": ..}`), or the open ones.
fn read_schemas(path: Option<&Path>) -> Result<serde_json::Value> {
    match path {
        None => Ok(open_schemas()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} must be one JSON object with `input` and `output` schemas",
                    p.display()
                )
            })
        }
    }
}

/// `component` with `manifest` embedded in place of any it held.
pub fn pack(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>> {
    let bare = airlock_manifest::without_manifest(component)?;
    Ok(airlock_manifest::embed(&bare, manifest)?)
}

/// `host pack`: embed the manifest `tool_toml` (with `schemas`) into a
/// component built by any toolchain; writes `out` (default: NAME.wasm beside it).
pub fn pack_file(
    component: &Path,
    tool_toml: &Path,
    schemas: Option<&Path>,
    out: Option<&Path>,
) -> Result<Built> {
    let text = std::fs::read_to_string(tool_toml)
        .with_context(|| format!("reading {}", tool_toml.display()))?;
    let manifest = Manifest::from_tool_toml(&text, &read_schemas(schemas)?)
        .with_context(|| format!("in {}", tool_toml.display()))?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let packed = pack(&bytes, &manifest).with_context(|| format!("in {}", component.display()))?;
    let dest = match out {
        Some(p) => p.to_path_buf(),
        None => component.with_file_name(format!("{}.wasm", manifest.name)),
    };
    write_built(&dest, &packed)?;
    Ok(Built {
        wasm: dest,
        manifest,
    })
}

/// Write a built tool whole, so a reader never sees half of one.
fn write_built(dest: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    airlock_runtime::write_atomically(dest, bytes)
        .with_context(|| format!("writing {}", dest.display()))
}

/// A folder whose `tool.toml` has `[build]`: run its command, then pack its output.
fn build_other(
    folder: &Path,
    text: &str,
    section: &airlock_manifest::BuildSection,
    out: Option<&Path>,
) -> Result<Built> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(&section.command)
        .current_dir(folder)
        .status()
        .with_context(|| format!("running `{}`", section.command))?;
    if !status.success() {
        bail!(
            "the build command `{}` of {} failed ({status}); see its output above",
            section.command,
            folder.display()
        );
    }
    let schemas = read_schemas(section.schemas.as_ref().map(|p| folder.join(p)).as_deref())?;
    let manifest = Manifest::from_tool_toml(text, &schemas)
        .with_context(|| format!("in {}", folder.join("tool.toml").display()))?;
    let output = folder.join(&section.output);
    let bytes = std::fs::read(&output).with_context(|| {
        format!(
            "reading {} ([build] output): did `{}` write it?",
            output.display(),
            section.command
        )
    })?;
    let packed = pack(&bytes, &manifest).with_context(|| format!("in {}", output.display()))?;
    let dest = match out {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("AIRLOCK_TOOLS_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| folder.join("target"))
            .join("airlock")
            .join(format!("{}.wasm", manifest.name)),
    };
    write_built(&dest, &packed)?;
    Ok(Built {
        wasm: dest,
        manifest,
    })
}

/// Build the tool in `folder`: a cargo package with a `tool.toml`, or any
/// folder whose `tool.toml` says how in `[build]`.
pub fn build(folder: &Path, out: Option<&Path>) -> Result<Built> {
    let tool_toml_path = folder.join("tool.toml");
    let tool_toml = std::fs::read_to_string(&tool_toml_path).with_context(|| {
        format!(
            "reading {}: a tool folder holds tool.toml, and Cargo.toml or a [build] section (see tools/README.md)",
            tool_toml_path.display()
        )
    })?;
    let parsed = airlock_manifest::ToolToml::parse(&tool_toml)
        .with_context(|| format!("in {}", tool_toml_path.display()))?;
    if let Some(section) = &parsed.build {
        return build_other(folder, &tool_toml, section, out);
    }
    let meta = metadata(folder)?;
    let toolchain = Toolchain::detect(folder)?;
    eprintln!(
        "building {} with {}",
        folder.display(),
        toolchain.describe()
    );
    let target_dir = std::env::var_os("AIRLOCK_TOOLS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(meta.target_dir);

    // Schemas first: a natively built binary prints them from the tool's types.
    let schemas = native_schemas(&toolchain, folder, &target_dir)?;
    let manifest = Manifest::from_tool_toml(&tool_toml, &schemas)
        .with_context(|| format!("in {}", tool_toml_path.display()))?;

    let raw = compile_wasm(&toolchain, folder, &target_dir, &meta.lib_name)?;
    let bytes = std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?;
    let with_manifest = airlock_manifest::embed(&bytes, &manifest)?;

    let dest = match out {
        Some(p) => p.to_path_buf(),
        None => target_dir
            .join("airlock")
            .join(format!("{}.wasm", manifest.name)),
    };
    write_built(&dest, &with_manifest)?;
    Ok(Built {
        wasm: dest,
        manifest,
    })
}

/// The tool's input and output schemas, printed by its native `schema` binary.
fn native_schemas(
    toolchain: &Toolchain,
    folder: &Path,
    target_dir: &Path,
) -> Result<serde_json::Value> {
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
    serde_json::from_slice(&schema_out.stdout)
        .context("the schema binary must print one JSON object with `input` and `output`")
}

/// Build the package's library for wasm32-wasip2; returns the component's path.
fn compile_wasm(
    toolchain: &Toolchain,
    folder: &Path,
    target_dir: &Path,
    lib_name: &str,
) -> Result<PathBuf> {
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
            "--target-dir",
        ])
        .arg(&wasm_target)
        .args(toolchain.build_std_args())
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
    Ok(wasm_target
        .join(TARGET)
        .join("release")
        .join(format!("{lib_name}.wasm")))
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
