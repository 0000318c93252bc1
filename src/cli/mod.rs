//! The agent-side subcommands of the `agent-sts` binary: `token` and `proxy`.

pub mod proxy;
pub mod token;

use agent_sts::agent::AgentKey;
use agent_sts::crypto::Alg;
use std::path::PathBuf;

/// Who the agent is and how to reach its broker: shared by `token` and `proxy`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The broker's issuer URL, exactly as its metadata states it (RFC 8414); the
    /// assertion's aud.
    #[arg(long)]
    pub issuer: String,
    /// The agent id (the assertion's iss and sub).
    #[arg(long)]
    pub agent: String,
    /// The agent's private key (PEM, as `agent-sts keygen` writes it).
    #[arg(long)]
    pub key: PathBuf,
    /// Scopes to ask for (space-separated, or the flag repeated). Default: the policy's
    /// default scopes for this agent on that server.
    #[arg(long)]
    pub scope: Vec<String>,
    /// Key id for the assertion header (default: none; the broker then uses the agent's
    /// only key for the algorithm).
    #[arg(long)]
    pub kid: Option<String>,
    /// Algorithm (default: inferred from the key; RSA keys default to RS256).
    #[arg(long)]
    pub alg: Option<Alg>,
}

impl AgentArgs {
    pub fn key(&self) -> Result<AgentKey, String> {
        AgentKey::load(&self.agent, &self.key, self.kid.as_deref(), self.alg).map_err(|e| e.to_string())
    }

    pub fn scope(&self) -> Option<String> {
        let joined = self.scope.iter().flat_map(|s| s.split_whitespace()).collect::<Vec<_>>().join(" ");
        (!joined.is_empty()).then_some(joined)
    }
}
