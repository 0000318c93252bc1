//! `agent-sts token`: one access token on stdout, for scripts and CI steps.

use super::AgentArgs;
use agent_sts::agent::{self, TokenRequest};
use agent_sts::clock::{Clock, SystemClock};

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// The MCP server's resource URI (RFC 8707): the token's aud.
    #[arg(long)]
    pub resource: String,
    /// Print the broker's whole JSON response instead of the access token alone.
    #[arg(long)]
    pub json: bool,
}

/// Discover the broker (RFC 8414), sign a fresh assertion for its issuer, ask for a token,
/// print it. A refusal prints the broker's `error` and `error_description`.
pub fn run(args: TokenArgs) -> Result<(), String> {
    let key = args.agent.key()?;
    let scope = args.agent.scope();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let http = agent::broker_http_client().map_err(|e| e.to_string())?;
        let meta = agent::discover(&http, &args.agent.issuer).await.map_err(|e| e.to_string())?;
        let req = TokenRequest { resource: &args.resource, scope: scope.as_deref() };
        let issued = agent::request_token(&http, &meta, &key, SystemClock.now_secs(), req)
            .await
            .map_err(|e| e.to_string())?;
        if args.json {
            println!("{}", issued.response);
        } else {
            println!("{}", issued.access_token.secret());
        }
        Ok(())
    })
}
