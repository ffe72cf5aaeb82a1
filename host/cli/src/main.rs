//! `host`: build, inspect and run Airlock tools locally.

mod build;
mod identity;
mod push;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_policy::{HostPattern, OperatorPolicy, PolicyError, Route, UserId};
use airlock_runtime::{CallOutcome, CallReport, Runtime, Tool};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::time::Duration;

/// Airlock: run each AI-agent tool as a WebAssembly component with only the
/// hosts, credentials and limits it declared.
#[derive(Parser)]
#[command(name = "host", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one call of a tool and print its JSON result.
    ///
    /// Exit status: 0 with the output on stdout; 1 when the call failed (the
    /// error, as JSON with --json, on stderr); 2 when the tool cannot be
    /// loaded; 3 when the user must consent first (the URL is printed).
    Run {
        /// A tool's `.wasm`, or a tool folder (built first).
        tool: PathBuf,
        /// The input, a JSON document matching the tool's input schema.
        #[arg(long, short, default_value = "{}")]
        input: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        identity: identity::IdentityArgs,
        /// Print the whole call report (outcome, logs, requests) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a tool's manifest, imports and permissions. Runs no guest code.
    Inspect {
        /// A tool's `.wasm`, or a tool folder (built first).
        tool: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Serve tools to agents: MCP at /mcp, the AgentCore runtime contract
    /// (/invocations, /ping), metrics at /metrics. Stops on SIGTERM after the
    /// calls in flight finish.
    Serve(Box<serve::ServeArgs>),
    /// Check an audit trail's chain: "ok, N records", or the first broken
    /// link (exit 1). Give the files oldest first; a live file's rotated
    /// predecessors beside it are found when it is given alone.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Make an ed25519 signing key: KEY (private, OpenSSH format, mode 0600)
    /// and KEY.pub (the line an operator adds to its trusted keys).
    Keygen {
        /// Where to write the private key.
        key: PathBuf,
        /// A comment naming the key's holder.
        #[arg(long, default_value = "airlock-tool-signer")]
        comment: String,
    },
    /// Sign a tool: writes TOOL.wasm.sig beside the `.wasm`.
    Sign {
        /// A tool's `.wasm`, or a tool folder (built first).
        tool: PathBuf,
        /// The private key (from `host keygen`, or any unencrypted ed25519 OpenSSH key).
        #[arg(long)]
        key: PathBuf,
    },
    /// Upload a tool to a running host's admin API (with its signature, when
    /// TOOL.wasm.sig is beside it). The admin key comes from AIRLOCK_ADMIN_KEY.
    Push {
        /// A tool's `.wasm`, or a tool folder (built first).
        tool: PathBuf,
        /// The admin API, e.g. http://127.0.0.1:9443.
        #[arg(long)]
        to: String,
    },
    /// Embed a manifest into a component built by any toolchain (replacing
    /// any it holds), so that `host run`, `host push` and uploads take it.
    Pack {
        /// The component (`.wasm`).
        component: PathBuf,
        /// The tool's `tool.toml` (name, description, grants, limits).
        #[arg(long)]
        manifest: PathBuf,
        /// A JSON file `{"input": schema, "output": schema}` (default: any
        /// JSON object in, any JSON out).
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// Where to write (default: NAME.wasm beside the component).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Run the local AgentCore-compatible identity service on its own, for
    /// several processes to share (a binding service beside `host serve`).
    /// For development and tests only. Stops on SIGTERM.
    IdentityService {
        /// Its configuration (see examples/identity.toml); callers must be listed.
        #[arg(long)]
        config: PathBuf,
    },
    /// Build a tool folder into a `.wasm` with its manifest embedded.
    Build {
        /// The tool folder: a cargo package with `tool.toml`, or any folder
        /// whose `tool.toml` has a `[build]` section.
        folder: PathBuf,
        /// Where to write the `.wasm` (default: the tools' target dir, `airlock/NAME.wasm`).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Ask a running `host serve` whether it is healthy (a container's
    /// health check: images without a shell or curl). Exit 0 if so, 1 if not.
    Ping {
        /// Its `/ping`.
        #[arg(default_value = "http://127.0.0.1:8080/ping")]
        url: String,
    },
}

#[derive(clap::Args)]
struct PolicyArgs {
    /// The operator's policy file (TOML), which denies what it does not
    /// allow. Without it (local development), a tool gets what it declares,
    /// private addresses stay refused, and default limits apply.
    #[arg(long, env = "AIRLOCK_POLICY")]
    policy: Option<PathBuf>,
    /// Let tools reach loopback and private addresses (local testing only).
    #[arg(long)]
    allow_private_addresses: bool,
    /// Send requests for one origin to another: `--route https://api.github.com=https://staging.example.com`.
    #[arg(long, value_name = "FROM=TO")]
    route: Vec<String>,
    /// Let a --route send https requests to plain http, tokens included
    /// (local stand-ins only).
    #[arg(long)]
    dangerously_allow_https_to_http_routes: bool,
}

impl PolicyArgs {
    fn load(&self) -> Result<OperatorPolicy> {
        let mut policy = match &self.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                OperatorPolicy::from_toml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => OperatorPolicy::permissive(),
        };
        policy.allow_private_addresses |= self.allow_private_addresses;
        policy.dangerously_allow_https_to_http_routes |=
            self.dangerously_allow_https_to_http_routes;
        for r in &self.route {
            let (from, to) = r
                .split_once('=')
                .with_context(|| format!("--route `{r}`: write FROM=TO"))?;
            policy.routes.push(Route {
                from: HostPattern::parse(from)?,
                to: HostPattern::parse(to)?,
            });
        }
        policy.validate().map_err(|e| match e {
            PolicyError::DowngradingRoute { from, to } => anyhow::anyhow!(
                "--route {from}={to} sends https requests over plain http, tokens included; pass --dangerously-allow-https-to-http-routes to allow it (local stand-ins only)"
            ),
            e => anyhow::anyhow!("--route: {e}"),
        })?;
        Ok(policy)
    }
}

// Under load glibc's malloc spends a tenth of a call in its arena locks;
// mimalloc serves 20% more calls (BENCHMARKS.md) for more memory at rest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
            .unwrap_or_else(|_| default.into())
    };
    // Held until the end: the log lines still buffered are written on drop.
    let mut _log = None;
    if matches!(cli.command, Command::Serve(_)) {
        _log = Some(airlock_server::json_logs(
            std::io::stderr(),
            airlock_server::DEFAULT_LOG_FILTER,
        ));
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter("warn"))
            .with_writer(std::io::stderr)
            .init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(clap::Subcommand)]
enum AuditAction {
    /// Verify the chain through FILES (and, with --key, its signed checkpoints).
    Verify {
        /// The audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A file of OpenSSH public keys whose checkpoints count (the audit
        /// signing key's `.pub`): every checkpoint signed, nothing after the last.
        #[arg(long)]
        key: Option<PathBuf>,
        /// FILES are the deployed archive's objects (Firehose, gzip, any
        /// order): every task's chain is put back together and verified.
        #[arg(long)]
        archive: bool,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen { key, comment } => keygen(&key, &comment),
        Command::Sign { tool, key } => sign(&tool, &key),
        Command::Push { tool, to } => push::push(&wasm(&tool)?, &to),
        Command::Audit {
            action:
                AuditAction::Verify {
                    files,
                    key,
                    archive,
                },
        } => verify_audit(files, key.as_deref(), archive),
        Command::Serve(args) => serve(*args),
        Command::Pack {
            component,
            manifest,
            schemas,
            out,
        } => pack(&component, &manifest, schemas.as_deref(), out.as_deref()),
        Command::IdentityService { config } => identity_service(&config),
        Command::Ping { url } => ping(&url),
        Command::Build { folder, out } => build(&folder, out.as_deref()),
        Command::Inspect { tool, policy } => inspect(&tool, &policy),
        Command::Run {
            tool,
            input,
            policy,
            identity,
            json,
        } => run_tool(&tool, &input, &policy, &identity, json),
    }
}

/// `host keygen`: KEY (mode 0600) and KEY.pub, the public line printed.
fn keygen(key: &Path, comment: &str) -> Result<ExitCode> {
    let (private, public) = airlock_server::signing::keygen(comment)
        .map_err(|e| anyhow::anyhow!("making a key: {e}"))?;
    let public_path = key.with_extension("pub");
    if key.exists() {
        anyhow::bail!("{} exists; choose another path", key.display());
    }
    write_private(key, &private)?;
    std::fs::write(&public_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", public_path.display()))?;
    println!("{public}");
    eprintln!(
        "private key: {}; public key: {}",
        key.display(),
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `host sign`: writes TOOL.wasm.sig and prints its path.
fn sign(tool: &Path, key: &Path) -> Result<ExitCode> {
    let wasm = wasm(tool)?;
    let private =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let signature = airlock_server::signing::sign(&private, &read(&wasm)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let sig = sidecar(&wasm);
    std::fs::write(&sig, signature).with_context(|| format!("writing {}", sig.display()))?;
    println!("{}", sig.display());
    Ok(ExitCode::SUCCESS)
}

/// `host audit verify`: "ok, …" (exit 0) or the first broken link (exit 1).
fn verify_audit(mut files: Vec<PathBuf>, key: Option<&Path>, archive: bool) -> Result<ExitCode> {
    if !archive && let [live] = files.as_slice() {
        let mut all = airlock_server::audit::rotated_files(live)?;
        if !all.contains(live) {
            all.push(live.clone());
            files = all;
        }
    }
    let keys = key.map(read_public_keys).transpose()?;
    let verified = match &keys {
        _ if archive => {
            airlock_server::audit::verify_archive(&files, keys.as_deref()).map(|chains| {
                let mut said = format!("ok, {} chains", chains.len());
                for c in chains {
                    said.push_str(&format!(
                        "\n  {} records, {} signed checkpoints, from {}",
                        c.records, c.checkpoints, c.first
                    ));
                }
                said
            })
        }
        None => airlock_server::audit::verify(&files).map(|n| format!("ok, {n} records")),
        Some(keys) => airlock_server::audit::verify_signed(&files, keys).map(|s| {
            format!(
                "ok, {} records, {} signed checkpoints, the last record among them",
                s.records, s.checkpoints
            )
        }),
    };
    match verified {
        Ok(said) => {
            println!("{said}");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            println!("broken: {broken}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The OpenSSH public keys in a `--key` file; blank lines and `#` comments skipped.
fn read_public_keys(path: &Path) -> Result<Vec<ssh_key::PublicKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<ssh_key::PublicKey>()
                .map_err(|e| anyhow::anyhow!("{}: not an OpenSSH public key: {e}", path.display()))
        })
        .collect()
}

/// `host serve`, until SIGTERM.
fn serve(args: serve::ServeArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve::serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// `host pack`: prints the packed `.wasm`'s path.
fn pack(
    component: &Path,
    manifest: &Path,
    schemas: Option<&Path>,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let built = build::pack_file(component, manifest, schemas, out)?;
    println!("{}", built.wasm.display());
    eprintln!("packed {} {}", built.manifest.name, built.manifest.version);
    Ok(ExitCode::SUCCESS)
}

/// `host identity-service`: prints its endpoint as JSON, then runs until SIGTERM.
fn identity_service(config: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let parsed = airlock_identity_local::LocalConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    if parsed.callers.is_empty() {
        anyhow::bail!(
            "{}: list the [[caller]]s (access key, secret, operations) that may call the service",
            config.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let local = airlock_identity_local::LocalIdentity::start(parsed)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        println!(
            "{}",
            serde_json::json!({ "identity": local.endpoint_url() })
        );
        serve::signal().await;
        local.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `host ping`: exit 0 when `url` answers Healthy or HealthyBusy, else 1.
fn ping(url: &str) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let healthy = rt.block_on(async {
        let response = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()?
            .get(url)
            .send()
            .await?;
        let ok = response.status().is_success();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        anyhow::Ok(ok && matches!(body["status"].as_str(), Some("Healthy" | "HealthyBusy")))
    });
    match healthy {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => {
            eprintln!("{url}: not healthy");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("{url}: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `host build`: prints the built `.wasm`'s path.
fn build(folder: &Path, out: Option<&Path>) -> Result<ExitCode> {
    let built = build::build(folder, out)?;
    println!("{}", built.wasm.display());
    eprintln!("built {} {}", built.manifest.name, built.manifest.version);
    Ok(ExitCode::SUCCESS)
}

/// `host inspect`: the manifest, imports and permissions as JSON.
fn inspect(tool: &Path, policy: &PolicyArgs) -> Result<ExitCode> {
    let policy = policy.load()?;
    let wasm = wasm(tool)?;
    let (_runtime, tool) = load(&wasm, &read(&wasm)?, &policy, None)?;
    let view = serde_json::json!({
        "manifest": tool.manifest(),
        "imports": tool.imports(),
        "permissions": tool.permissions(),
    });
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(ExitCode::SUCCESS)
}

/// `host run`: one call, its result on stdout; exit 0, 1 (failed) or 3 (consent).
fn run_tool(
    tool: &Path,
    input: &str,
    policy: &PolicyArgs,
    identity: &identity::IdentityArgs,
    json: bool,
) -> Result<ExitCode> {
    let policy = policy.load()?;
    let wasm = wasm(tool)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(call(&wasm, &policy, identity, input))?;
    let code = match &report.outcome {
        CallOutcome::Output(_) => ExitCode::SUCCESS,
        CallOutcome::ConsentRequired(_) => ExitCode::from(3),
        CallOutcome::Failed(_) => ExitCode::from(1),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    for line in &report.logs {
        eprintln!("[{:?}] {}", line.level, line.message);
    }
    for r in &report.requests {
        eprintln!(
            "request {} {}: {}",
            r.method,
            r.url,
            serde_json::to_string(&r.outcome)?
        );
    }
    match &report.outcome {
        CallOutcome::Output(value) => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!("error: {other}");
            Ok(code)
        }
    }
}

/// One call; with `--user`, through the broker, waiting for consent when asked.
async fn call(
    wasm: &Path,
    policy: &OperatorPolicy,
    args: &identity::IdentityArgs,
    input: &str,
) -> Result<CallReport> {
    // Local runs: the user is whoever runs the command says.
    let user = args
        .user
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .context("--user")?
        .map(airlock_verify::VerifiedUser::local);
    let bytes = read(wasm)?;
    let oauth = airlock_manifest::inspect(&bytes)
        .map(|i| !i.manifest.grants.oauth.is_empty())
        .unwrap_or(false);
    let (Some(user), true) = (&user, oauth) else {
        // Nothing to broker: no identity service to start.
        let (runtime, tool) = load(wasm, &bytes, policy, None)?;
        return Ok(runtime.invoke_as(&tool, user.as_ref(), input).await);
    };
    let identity = args.start(Default::default()).await?;
    let (runtime, tool) = load(wasm, &bytes, policy, Some(identity.broker.clone()))?;
    let report = runtime.invoke_as(&tool, Some(user), input).await;
    let (Some(consent), Some(wait)) = (report.outcome.consent(), args.wait) else {
        return Ok(report);
    };
    eprintln!(
        "authorization required: open this URL to let `{}` act for {} at `{}`:\n{}",
        tool.manifest().name,
        user.id(),
        consent.provider,
        consent.authorization_url
    );
    let grant = tool
        .permissions()
        .grants
        .oauth
        .iter()
        .find(|g| g.provider.as_str() == consent.provider)
        .context("the consent names a provider the tool has no grant for")?;
    identity::wait_for_consent(
        &identity.broker,
        user,
        grant,
        consent,
        Duration::from_secs(wait),
    )
    .await?;
    eprintln!("consent given; calling again");
    Ok(runtime.invoke_as(&tool, Some(user), input).await)
}

/// The `.wasm` to load: the file, or a tool folder built first.
fn wasm(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        Ok(build::build(path, None)?.wasm)
    } else {
        Ok(path.to_path_buf())
    }
}

/// Where a tool's signature sits: `NAME.wasm.sig`.
fn sidecar(wasm: &Path) -> PathBuf {
    let mut name = wasm.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Write a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn read(wasm: &Path) -> Result<Vec<u8>> {
    std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))
}

fn load(
    wasm: &Path,
    bytes: &[u8],
    policy: &OperatorPolicy,
    tokens: Option<std::sync::Arc<airlock_identity::Broker>>,
) -> Result<(Runtime, Tool)> {
    let mut builder = Runtime::builder().max_concurrent_calls(4);
    if let Some(tokens) = tokens {
        builder = builder.token_source(tokens);
    }
    // Large components (an interpreter inside) compile once, then load from here.
    if let Some(dir) = std::env::var_os("AIRLOCK_COMPILE_CACHE").filter(|d| !d.is_empty()) {
        builder = builder.compile_cache(PathBuf::from(dir));
    }
    let runtime = builder
        .build()
        .map_err(|e| anyhow::anyhow!("starting the wasm engine: {e:#}"))?;
    let tool = runtime
        .load(bytes, policy)
        .with_context(|| format!("loading {}", wasm.display()))?;
    Ok((runtime, tool))
}
