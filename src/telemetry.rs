//! Logging: `tracing` to stderr, text or JSON, filtered by `RUST_LOG` (default `info`).
//! Audit events use the target `agent_sts::audit`; they carry ids (`jti`, agent, audience),
//! never token or key text.

use crate::config::LogFormat;
use tracing_subscriber::{fmt, EnvFilter};

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: a log file or journald would keep the escapes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true).with_ansi(ansi);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
