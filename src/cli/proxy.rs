//! `agent-sts proxy`: a local token-injecting reverse proxy in front of one MCP server.

use super::AgentArgs;
use agent_sts::clock::SystemClock;
use agent_sts::proxy::{Proxy, ProxyConfig, DEFAULT_LISTEN};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// The one MCP server to forward to, e.g. https://server.example/mcp (http only on
    /// loopback). Clients connect to the same path on the proxy.
    #[arg(long)]
    pub upstream: String,
    /// The resource URI to ask the broker for (RFC 8707; default: --upstream).
    #[arg(long)]
    pub resource: Option<String>,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Allow --listen on an address other than loopback. Whoever reaches it acts as the agent.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

pub fn run(args: ProxyArgs) -> Result<(), String> {
    // Logs only: the proxy exports no traces.
    let _ = agent_sts::telemetry::init(agent_sts::config::LogFormat::Text, &Default::default());
    let key = args.agent.key()?;
    let mut config = ProxyConfig::new(args.agent.issuer.clone(), key, args.upstream, Arc::new(SystemClock));
    config.resource = args.resource;
    config.scope = args.agent.scope();
    config.listen = args.listen;
    config.allow_non_loopback = args.allow_non_loopback;
    crate::server_runtime()?.block_on(async move {
        let proxy = Proxy::build(config).map_err(|e| e.to_string())?;
        if !proxy.local_addr().ip().is_loopback() {
            tracing::warn!(
                "agent-sts proxy listens on {}: not loopback (--allow-non-loopback)",
                proxy.local_addr()
            );
        }
        match proxy.warm_up().await {
            Ok(()) => tracing::info!("agent-sts proxy: the broker issued a token for {}", proxy.upstream()),
            Err(why) => tracing::warn!("agent-sts proxy: no token yet (serving anyway, will retry): {why}"),
        }
        // The one line a user needs, on stdout, for scripts that start the proxy on port 0.
        println!("agent-sts proxy: {} -> {}", proxy.local_url(), proxy.upstream());
        proxy.run_until_stopped().await.map_err(|e| e.to_string())
    })
}
