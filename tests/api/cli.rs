//! The `agent-sts` command itself: keygen, assert, policy check, and serve from a config
//! file with environment overrides (the production path, not dev mode).

use crate::helpers::*;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run agent-sts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A child process killed on drop.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(dir: &Path, name: &str) -> String {
    let out = run(&["keygen", "--out", dir.join(name).to_str().expect("utf8"), "--kid", name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn write_policy(dir: &Path, agent_jwk_toml: &str) -> std::path::PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "[[server]]\nid = \"docs\"\nresource = \"{DOCS}\"\nscopes = [\"read\", \"write\"]\n\n\
             [[agent]]\nid = \"ci-bot\"\nkeys = [{agent_jwk_toml}]\n\
             [[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\ndefault_scopes = [\"read\"]\n"
        ),
    )
    .expect("write policy");
    path
}

#[test]
fn keygen_output_registers_in_a_policy_that_checks() {
    let dir = tempfile::tempdir().expect("tmp");
    let jwk = keygen(dir.path(), "ci-bot-1");
    assert!(dir.path().join("ci-bot-1.pem").exists() && dir.path().join("ci-bot-1.jwk.json").exists());
    let policy = write_policy(dir.path(), &jwk);
    let out = run(&["policy", "check", policy.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains("ci-bot") && summary.contains("ci-bot-1 (ES256)") && summary.contains("docs: read"),
        "{summary}"
    );
    let out = run(&["policy", "check", "policies/example.toml"]);
    assert!(out.status.success(), "the shipped example policy checks: {}", text(&out.stderr));
}

#[test]
fn policy_check_names_the_file_and_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[agent]]\nid = \"x\"\ndisabled = true\n[[agent.allow]]\nserver = \"ghost\"\nscopes = [\"read\"]\n",
    )
    .expect("write");
    let out = run(&["policy", "check", path.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("no such server"), "{err}");
}

fn wait_ready(base: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("broker exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(base.trim_start_matches("http://")) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("broker at {base} not ready within 20 s");
}

/// `serve --config` with a key file and policy from keygen; an environment variable
/// overrides a file value; `assert` mints what curl would send.
#[tokio::test]
async fn serve_from_config_file_with_env_override() {
    let dir = tempfile::tempdir().expect("tmp");
    let agent_jwk = keygen(dir.path(), "ci-bot-1");
    keygen(dir.path(), "signing");
    let policy = write_policy(dir.path(), &agent_jwk);
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let prefix = unique_prefix();
    let config = dir.path().join("agent-sts.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nissuer = \"{issuer}\"\nworkers = 1\n\
             [policy]\npath = \"{}\"\n[signing]\nkey_file = \"{}\"\nkid = \"signing\"\n\
             [tokens]\ndefault_lifetime_secs = 300\n\
             [replay]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{}\"\n",
            policy.display(),
            dir.path().join("signing.pem").display(),
            shared_redis_url(),
            prefix,
        ),
    )
    .expect("write config");
    // A Redis that has served for long (a missing replay marker would count as a loss).
    crate::replay_support::seed_single(&shared_redis_url(), &prefix).await.expect("seed markers");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().expect("utf8")])
        .env("AGENT_STS__TOKENS__DEFAULT_LIFETIME_SECS", "120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    wait_ready(&issuer, &mut child);
    let _guard = Broker(child);

    let out = run(&[
        "assert",
        "--agent",
        "ci-bot",
        "--key",
        dir.path().join("ci-bot-1.pem").to_str().expect("utf8"),
        "--audience",
        &issuer,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let assertion = text(&out.stdout).trim().to_string();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
            ("resource", DOCS),
        ])
        .finish();
    let r = http
        .post(format!("{issuer}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST");
    let r = Reply::read(r).await;
    r.assert_ok();
    assert_eq!(r.body["expires_in"], 120, "the environment overrides the file");
    let jwks =
        http.get(format!("{issuer}/jwks.json")).send().await.expect("jwks").text().await.expect("text");
    assert!(jwks.contains("\"kid\":\"signing\""), "the configured signing key is published: {jwks}");
}

/// Outside dev mode, a policy that trusts the example agent key (public in this repo) stops
/// the start; so does an unknown configuration key.
#[test]
fn serve_refuses_the_public_example_key_and_unknown_settings() {
    let dir = tempfile::tempdir().expect("tmp");
    keygen(dir.path(), "signing");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nissuer = \"https://sts.example\"\n[policy]\npath = \"policies/example.toml\"\n\
             [signing]\nkey_file = \"{}\"\n[replay]\nbackend = \"memory\"\n",
            dir.path().join("signing.pem").display()
        ),
    )
    .expect("write");
    let out = run(&["serve", "--config", config.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("a key of the example policy"), "{}", text(&out.stderr));
    // The example identity provider's key, inline in an [[issuer]] of another policy, too.
    let policy = dir.path().join("idp.toml");
    let example = std::fs::read_to_string("policies/example.toml").expect("example policy");
    let issuer_table = &example[example.find("[[issuer]]").expect("issuer")
        ..example.find("# The example agent may act").expect("rule")];
    std::fs::write(&policy, format!("[[server]]\nid = \"s\"\nresource = \"https://s.example/mcp\"\nscopes = [\"r\"]\n\n{issuer_table}")).expect("write");
    let config2 = dir.path().join("c2.toml");
    let c = std::fs::read_to_string(&config)
        .expect("read")
        .replace("policies/example.toml", &policy.display().to_string());
    std::fs::write(&config2, c).expect("write");
    let out = run(&["serve", "--config", config2.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("issuer \"example-idp\" trusts a key of the example policy"),
        "{}",
        text(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("AGENT_STS__SERVER__COLOUR", "blue")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("colour"), "{}", text(&out.stderr));
}
