//! deploy/: the shipped configuration and policy load with the broker's own validation
//! (unknown keys are refused, so a typo in deploy/ fails here), and the image's healthcheck
//! command works against a live broker.

use crate::helpers::*;
use agent_sts::config::Settings;
use agent_sts::policy::Policy;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

#[test]
fn shipped_configs_and_policy_validate() {
    for f in ["deploy/k8s/agent-sts.toml", "deploy/compose/agent-sts.toml"] {
        let s = Settings::load_from(Some(Path::new(f)), Vec::new()).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(s.log.format, agent_sts::config::LogFormat::Json, "{f}");
        assert!(s.metrics.listen.is_some(), "{f}: metrics on their own port");
        assert!(s.signing.active.is_some(), "{f}: rotation-ready signing keys");
    }
    let p = Policy::load(Path::new("deploy/k8s/policy")).expect("deploy policy");
    assert!(p.agents.iter().all(|a| a.disabled), "the shipped placeholder agent is disabled");
}

#[tokio::test]
async fn healthcheck_command_probes_the_listener() {
    let app = TestApp::spawn().await;
    let url = format!("{}/healthz", app.base);
    let ok =
        tokio::task::spawn_blocking(move || Command::new(BIN).args(["healthcheck", "--url", &url]).output())
            .await
            .expect("join")
            .expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let nothing = format!("http://127.0.0.1:{}/healthz", free_port());
    let down = Command::new(BIN)
        .args(["healthcheck", "--url", &nothing, "--timeout-secs", "1"])
        .output()
        .expect("run");
    assert!(!down.status.success(), "no listener: unhealthy");
    let missing = format!("{}/nope", app.base);
    let not_found = tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(["healthcheck", "--url", &missing]).output()
    })
    .await
    .expect("join")
    .expect("run");
    assert!(!not_found.status.success(), "a 404 is unhealthy");
}
