//! The `agent-sts` command: serve, policy check, keygen, assert, token, proxy.

mod cli;

use agent_sts::agent::AgentKey;
use agent_sts::clock::{Clock, SystemClock};
use agent_sts::config::Settings;
use agent_sts::crypto::{self, Alg};
use agent_sts::policy::Policy;
use agent_sts::startup::{Application, Mode, SettingsSource};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agent-sts",
    version,
    about = "Security token service for autonomous agents: signed assertions in, audience-bound MCP access tokens out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// TOML configuration file (environment: AGENT_STS__SECTION__KEY overrides).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Development mode: no files needed (example policy, in-memory replay store,
        /// ephemeral signing key). Never for production.
        #[arg(long)]
        dev: bool,
        /// Override server.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Override policy.path.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write a key pair: PREFIX.pem (private, mode 0600) and PREFIX.jwk.json (public JWK).
    /// Serves as an agent key or as the broker's signing key.
    Keygen {
        /// Path prefix of the files to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "ES256")]
        alg: Alg,
        /// Key id (default: the RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Mint a client assertion (RFC 7523) for an agent and print it: pipe it into curl.
    Assert {
        /// The agent id (iss and sub).
        #[arg(long)]
        agent: String,
        /// The agent's private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// The broker's issuer URL (or its token endpoint URL): the assertion's aud.
        #[arg(long)]
        audience: String,
        /// Key id to put in the header (default: none; the broker then picks the agent's
        /// only key for the algorithm).
        #[arg(long)]
        kid: Option<String>,
        /// Algorithm (default: inferred from the key; RSA keys default to RS256).
        #[arg(long)]
        alg: Option<Alg>,
        /// Seconds until exp.
        #[arg(long, default_value_t = 60)]
        lifetime_secs: i64,
    },
    /// Revoke an access token (RFC 7009) in the shared store: introspection then answers
    /// inactive and the token can't be exchanged. Needs the Redis replay backend.
    Revoke {
        /// The broker's configuration (Redis, issuer, signing keys).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The token itself (verified against the configured signing keys).
        #[arg(long, conflicts_with_all = ["jti", "exp"])]
        token: Option<String>,
        /// Or its `jti`...
        #[arg(long, requires = "exp")]
        jti: Option<String>,
        /// ...and its `exp` (Unix seconds): the revocation is kept until then.
        #[arg(long, requires = "jti")]
        exp: Option<i64>,
    },
    /// Exit 0 if the broker answers 200 on the URL (the container image's HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
        #[arg(long, default_value_t = 2)]
        timeout_secs: u64,
    },
    /// Sign any JWT claims (a JSON object) with a private key and print the JWT: a stand-in
    /// identity provider for trying on-behalf-of and federation rules (the walkthrough's
    /// user token). `iat`, `exp` and `jti` are added unless the claims have them.
    Jwt {
        /// The signing key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Key id for the header.
        #[arg(long)]
        kid: Option<String>,
        /// The header's typ.
        #[arg(long, default_value = "JWT")]
        typ: String,
        /// Seconds until exp (when the claims have no exp).
        #[arg(long, default_value_t = 300)]
        lifetime_secs: i64,
        /// The claims, a JSON object.
        claims: String,
    },
    /// Get an access token for one MCP server from the broker and print it (for scripts
    /// and CI steps): RFC 8414 discovery, a fresh assertion, client credentials.
    Token(cli::token::TokenArgs),
    /// Run a local proxy that forwards an MCP client's requests to one MCP server with a
    /// short-lived token from the broker: for clients that can't sign an assertion.
    Proxy(cli::proxy::ProxyArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file or directory and print a summary (with warnings about
    /// federation rules that can both match one token).
    Check { path: PathBuf },
    /// Decide a hypothetical request, as the broker would once its JWTs verified, and say why.
    Explain {
        /// The policy file or directory.
        #[arg(long)]
        policy: PathBuf,
        /// An agent authenticating as itself.
        #[arg(long, conflicts_with_all = ["issuer", "claims"])]
        agent: Option<String>,
        /// A trusted issuer (its [[issuer]] id or exact iss) whose token is presented ...
        #[arg(long, requires = "claims")]
        issuer: Option<String>,
        /// ... with these claims (a JSON file; the issuer defaults to its iss).
        #[arg(long)]
        claims: Option<PathBuf>,
        /// The agent acting: for the subject of --claims (on-behalf-of), or exchanging --token.
        #[arg(long)]
        actor: Option<String>,
        /// One of this broker's tokens, as its claims (a JSON file), exchanged by --actor.
        #[arg(long, requires = "actor", conflicts_with_all = ["agent", "claims"])]
        token: Option<PathBuf>,
        /// The MCP server: its id or resource URI.
        #[arg(long)]
        server: String,
        /// The requested scope (space-separated); default: the default scopes.
        #[arg(long)]
        scope: Option<String>,
        /// client_credentials, jwt-bearer or token-exchange (decides the error code).
        #[arg(long)]
        grant: Option<String>,
        /// The broker's configuration, for token lifetimes (default: the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a file of cases (hypothetical requests with expected outcomes); exit 1 on any
    /// mismatch, printing each.
    Test {
        #[arg(long)]
        policy: PathBuf,
        /// The cases file (TOML, [[case]] tables).
        cases: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, dev, listen, policy } => serve(config, dev, listen, policy),
        Command::Policy { command: PolicyCommand::Check { path } } => policy_check(&path),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    policy,
                    agent,
                    issuer,
                    claims,
                    actor,
                    token,
                    server,
                    scope,
                    grant,
                    config,
                },
        } => {
            let who = WhoArgs { agent, issuer, claims, actor, token };
            policy_explain(&policy, who, server, scope, grant, config.as_deref())
        }
        Command::Policy { command: PolicyCommand::Test { policy, cases, config } } => {
            policy_test(&policy, &cases, config.as_deref())
        }
        Command::Keygen { out, alg, kid, force } => keygen(&out, alg, kid.as_deref(), force),
        Command::Assert { agent, key, audience, kid, alg, lifetime_secs } => {
            assert_cmd(&agent, &key, &audience, kid.as_deref(), alg, lifetime_secs)
        }
        Command::Revoke { config, token, jti, exp } => Settings::load(config.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|s| agent_sts::ops::revoke(&s, token.as_deref(), jti.as_deref(), exp))
            .map(|msg| eprintln!("{msg}")),
        Command::Healthcheck { url, timeout_secs } => {
            agent_sts::ops::healthcheck(&url, std::time::Duration::from_secs(timeout_secs.max(1)))
        }
        Command::Jwt { key, kid, typ, lifetime_secs, claims } => {
            jwt_cmd(&key, kid.as_deref(), &typ, lifetime_secs, &claims)
        }
        Command::Token(args) => cli::token::run(args),
        Command::Proxy(args) => cli::proxy::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-sts: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policy_check(path: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let policy = Policy::load(path).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    policy.write_summary(&mut out).and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))?;
    // The process ends here: freeing a large policy object by object would only delay it.
    std::mem::forget(policy);
    Ok(())
}

fn serve(
    config: Option<PathBuf>,
    dev: bool,
    listen: Option<String>,
    policy: Option<PathBuf>,
) -> Result<(), String> {
    // The same reading of file, environment and flags at start and on every reload.
    let load = {
        let config = config.clone();
        move || -> Result<Settings, String> {
            let mut settings = Settings::load(config.as_deref()).map_err(|e| e.to_string())?;
            if let Some(l) = &listen {
                settings.server.listen = l.clone();
            }
            if let Some(p) = &policy {
                settings.policy.path = Some(p.clone());
            }
            Ok(settings)
        }
    };
    let settings = load()?;
    let mode = if dev { Mode::Dev } else { Mode::Production };
    let runtime = server_runtime()?;
    // The trace exporter's HTTP client must not be built inside the runtime.
    let telemetry = agent_sts::telemetry::init(settings.log.format, &settings.otel)?;
    if let Some(url) = &telemetry.traces_endpoint {
        tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
    }
    let result = runtime.block_on(async move {
        let source = SettingsSource { config_file: config, load: Box::new(load) };
        let app = Application::build_with_source(settings, mode, Arc::new(SystemClock), source)
            .map_err(|e| e.to_string())?;
        release_freed_memory();
        app.run_until_signalled().await.map_err(|e| e.to_string())
    });
    telemetry.shutdown();
    result
}

/// The broker settings the policy tools need: token lifetimes and the issuer.
fn tool_settings(
    config: Option<&std::path::Path>,
) -> Result<(agent_sts::policy::Lifetimes, Option<String>), String> {
    let s = Settings::load(config).map_err(|e| e.to_string())?;
    let lifetimes = agent_sts::policy::Lifetimes {
        default_secs: s.tokens.default_lifetime_secs,
        max_secs: s.tokens.max_lifetime_secs,
    };
    Ok((lifetimes, s.server.issuer))
}

/// Who asks, as `policy explain` was told.
struct WhoArgs {
    agent: Option<String>,
    issuer: Option<String>,
    claims: Option<PathBuf>,
    actor: Option<String>,
    token: Option<PathBuf>,
}

fn json_file(path: &std::path::Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a JSON object: {e}", path.display()))
}

fn policy_explain(
    policy: &std::path::Path,
    who: WhoArgs,
    server: String,
    scope: Option<String>,
    grant: Option<String>,
    config: Option<&std::path::Path>,
) -> Result<(), String> {
    use agent_sts::policy::explain::{explain, Hypothetical, Via, Who};
    let (lifetimes, broker_issuer) = tool_settings(config)?;
    let policy = Policy::load(policy).map_err(|e| e.to_string())?;
    let who = match who {
        WhoArgs { agent: Some(id), claims: None, token: None, actor: None, .. } => Who::Agent { id },
        WhoArgs { token: Some(path), actor: Some(actor), .. } => Who::Carried { token: json_file(&path)?, actor },
        WhoArgs { claims: Some(path), issuer, actor, .. } => {
            let claims = json_file(&path)?;
            let issuer = match issuer.or_else(|| claims.get("iss").and_then(|v| v.as_str()).map(String::from)) {
                Some(i) => i,
                None => return Err("--issuer is required when the claims have no iss".into()),
            };
            match actor {
                Some(actor) => Who::OnBehalfOf { issuer, claims, actor },
                None => Who::Federated { issuer, claims },
            }
        }
        _ => {
            return Err(
                "name who asks: --agent ID; --claims FILE [--issuer ID] [--actor AGENT]; or --token FILE --actor AGENT"
                    .into(),
            )
        }
    };
    let via = match grant.as_deref() {
        None => None,
        Some(g) => Some(Via::parse(g).ok_or_else(|| format!("--grant: unknown grant '{g}'"))?),
    };
    let via =
        via.or(matches!(who, Who::OnBehalfOf { .. } | Who::Carried { .. }).then_some(Via::TokenExchange));
    print!("{}", explain(&policy, &Hypothetical { who, via, server, scope, broker_issuer }, lifetimes));
    Ok(())
}

fn policy_test(
    policy: &std::path::Path,
    cases: &std::path::Path,
    config: Option<&std::path::Path>,
) -> Result<(), String> {
    let (lifetimes, broker_issuer) = tool_settings(config)?;
    let policy = Policy::load(policy).map_err(|e| e.to_string())?;
    let results = agent_sts::policy::cases::run_cases(&policy, cases, lifetimes, broker_issuer.as_deref())?;
    let failed = results.iter().filter(|r| !r.mismatches.is_empty()).count();
    for r in &results {
        if r.mismatches.is_empty() {
            println!("ok    {}", r.name);
        } else {
            println!("FAIL  {}", r.name);
            for m in &r.mismatches {
                println!("      {m}");
            }
            for line in r.explanation.to_string().lines() {
                println!("      | {line}");
            }
        }
    }
    println!("{} case(s), {} passed, {failed} failed", results.len(), results.len() - failed);
    if failed > 0 {
        return Err(format!("{failed} case(s) did not match their expected outcome"));
    }
    Ok(())
}

/// The runtime `serve` and `proxy` run on: the HTTP workers have their own threads, so
/// one more is enough for the rest.
fn server_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Loading a large policy frees hundreds of megabytes (file text, TOML trees); mimalloc
/// hands freed pages back to the system only when it next allocates, and an idle broker
/// does not (issue 12: 100 000 agents, 206 MiB at idle without this, 88 MiB with it).
fn release_freed_memory() {
    extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: `void mi_collect(bool force)` from the mimalloc linked as the global allocator
    // (above): it only walks and trims the allocator's own free lists, from any thread.
    unsafe { mi_collect(true) }
}

fn keygen(out: &std::path::Path, alg: Alg, kid: Option<&str>, force: bool) -> Result<(), String> {
    let pair = crypto::generate_key_pair(alg, kid).map_err(|e| e.to_string())?;
    let pem_path = out.with_extension("pem");
    let jwk_path = out.with_extension("jwk.json");
    for p in [&pem_path, &jwk_path] {
        if p.exists() && !force {
            return Err(format!("{} exists (use --force to replace it)", p.display()));
        }
    }
    write_private(&pem_path, pair.private_pem.0.as_bytes())?;
    let jwk = serde_json::Value::Object(pair.public_jwk);
    let pretty = serde_json::to_string_pretty(&jwk).map_err(|e| e.to_string())?;
    std::fs::write(&jwk_path, format!("{pretty}\n")).map_err(|e| format!("{}: {e}", jwk_path.display()))?;
    let toml_line: toml::Value = serde_json::from_value(jwk).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} (private key, keep it secret) and {} (public JWK)",
        pem_path.display(),
        jwk_path.display()
    );
    eprintln!(
        "as the broker's signing key: [[signing.keys]] kid = \"{}\" key_file = \"{}\" (README: Signing key rotation)",
        kid.unwrap_or("<thumbprint>"),
        pem_path.display()
    );
    eprintln!("to register it for an agent (or an MCP server), add this to its `keys` in the policy:");
    println!("{toml_line}");
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn jwt_cmd(
    key: &std::path::Path,
    kid: Option<&str>,
    typ: &str,
    lifetime: i64,
    claims: &str,
) -> Result<(), String> {
    let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let alg = crypto::detect_alg(&pem)
        .ok_or_else(|| format!("{}: not a PEM private key of a supported type", key.display()))?;
    let signer =
        crypto::SigningKey::from_pem(alg, &pem, kid).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(claims).map_err(|e| format!("the claims are not a JSON object: {e}"))?;
    let now = SystemClock.now_secs();
    claims.entry("iat").or_insert(now.into());
    claims.entry("exp").or_insert((now + lifetime).into());
    claims.entry("jti").or_insert(crypto::random_id().into());
    let header = signer.encoded_header(typ, kid.is_some());
    let payload = serde_json::Value::Object(claims).to_string();
    println!("{}", signer.sign_compact(&header, payload.as_bytes()).map_err(|e| e.to_string())?);
    Ok(())
}

fn assert_cmd(
    agent: &str,
    key: &std::path::Path,
    audience: &str,
    kid: Option<&str>,
    alg: Option<Alg>,
    lifetime: i64,
) -> Result<(), String> {
    if !(1..=3600).contains(&lifetime) {
        return Err("--lifetime-secs must be between 1 and 3600".into());
    }
    let key = AgentKey::load(agent, key, kid, alg).map_err(|e| e.to_string())?;
    let jwt = key.assertion(audience, SystemClock.now_secs(), lifetime).map_err(|e| e.to_string())?;
    println!("{jwt}");
    Ok(())
}
