//! Writes a generated policy at organisation scale (issue 12), to measure what loading it
//! costs (`agent-sts policy check`, `serve` start-up) and to reproduce benches/README.md.
//!
//! ```text
//! cargo bench --bench policygen -- --agents 10000 --servers 1000 --out /tmp/p10k.toml
//! cargo bench --bench policygen -- --agents 100000 --servers 5000 --out /tmp/p100k.toml
//! cargo bench --bench policygen -- --agents 100000 --servers 5000 --files 1000 --out /tmp/p100k.d
//! target/release/agent-sts policy check /tmp/p100k.toml
//! ```
//!
//! Every agent has one key (EC P-256 by default) and `--allow` allowances on distinct servers
//! chosen at random (any file's); every server offers `read write admin audit`. The same
//! `--seed` gives the same files. Without `--out` (plain `cargo bench`) it prints this help
//! and writes nothing.

mod common;

use agent_sts::crypto::Alg;
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(name = "policygen", about = "Write a generated agent-sts policy (issue 12).")]
struct Args {
    /// MCP servers.
    #[arg(long, default_value_t = 1000)]
    servers: usize,
    /// Agents, one key each.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Allowances per agent (distinct servers).
    #[arg(long, default_value_t = 5)]
    allow: usize,
    /// Key algorithm: ES256, ES384 or EdDSA.
    #[arg(long, default_value = "ES256")]
    alg: Alg,
    /// Split the policy over this many files in the directory `--out`.
    #[arg(long, default_value_t = 1)]
    files: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A `.toml` file (with `--files 1`) or a directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `cargo bench` passes `--bench`; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    use clap::CommandFactory;
    let args = Args::parse();
    let Some(out) = &args.out else {
        // Plain `cargo bench` runs every bench target: say what this one is and stop.
        let _ = Args::command().print_help();
        return;
    };
    let spec = common::generated::Spec {
        servers: args.servers,
        agents: args.agents,
        allow: args.allow,
        alg: args.alg,
        seed: args.seed,
        prefix: String::new(),
    };
    let started = Instant::now();
    match common::generated::write_policy(&spec, out, args.files) {
        Ok(paths) => {
            let bytes: u64 = paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
            eprintln!(
                "wrote {} file(s), {:.1} MB, to {} in {:.1} s: {} servers, {} agents x {} allowances ({} keys, seed {})",
                paths.len(),
                bytes as f64 / 1e6,
                out.display(),
                started.elapsed().as_secs_f64(),
                spec.servers,
                spec.agents,
                spec.allow,
                spec.alg,
                spec.seed
            );
        }
        Err(e) => {
            eprintln!("policygen: {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}
