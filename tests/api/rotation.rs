//! Signing key rotation end to end, on a running `serve` process (reload by SIGHUP): publish
//! the next key, activate it, retire the old one; a token minted before the rotation keeps
//! verifying against `/jwks.json` (with an independent JOSE library) and keeps being
//! accepted by the broker itself. And the `revoke` command.

use crate::helpers::*;
use crate::process::{eventually, now, write_signing_key, Proc};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

fn signing_section(p: &Proc, active: &str, kids: &[&str]) -> String {
    let mut s = format!("[signing]\nactive = \"{active}\"\n");
    for kid in kids {
        s.push_str(&format!(
            "[[signing.keys]]\nkid = \"{kid}\"\nkey_file = \"{}\"\n",
            p.path(&format!("{kid}.pem")).display()
        ));
    }
    s
}

/// Replace the `[signing]` section of the running broker's config and SIGHUP it.
fn rewrite_signing(p: &Proc, section: &str) {
    let path = p.path("agent-sts.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let start = config.find("[signing]").expect("signing section");
    let end = config[start..].find("[replay]").map_or(config.len(), |i| start + i);
    std::fs::write(&path, format!("{}{section}\n{}", &config[..start], &config[end..])).expect("rewrite");
    p.signal(libc::SIGHUP);
}

async fn jwks_kids(p: &Proc) -> Vec<String> {
    let v: serde_json::Value =
        p.http.get(format!("{}/jwks.json", p.issuer)).send().await.expect("jwks").json().await.expect("json");
    v["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_string()).collect()
}

async fn token_kid(p: &Proc) -> String {
    let r = p.token("bot", DOCS).await;
    r.assert_ok();
    r.token_parts().0["kid"].as_str().expect("kid").to_string()
}

/// Verify `token` with jsonwebtoken against the served JWKS.
async fn verifies_against_jwks(p: &Proc, token: &str) -> bool {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let jwks: JwkSet = p
        .http
        .get(format!("{}/jwks.json", p.issuer))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("a JWK Set");
    let kid = decode_header(token).expect("header").kid.expect("kid");
    let Some(jwk) = jwks.find(&kid) else { return false };
    let key = DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[DOCS]);
    v.set_issuer(&[p.issuer.as_str()]);
    decode::<serde_json::Value>(token, &key, &v).is_ok()
}

/// The broker itself still accepts the old token (as a token exchange subject).
async fn exchangeable(p: &Proc, token: &str) -> Reply {
    let a = assertion_for("bot", &p.issuer, now()).sign();
    p.post_token(&[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", TT_ACCESS_TOKEN),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", &a),
        ("resource", TICKETS),
    ])
    .await
}

#[tokio::test]
async fn rotation_publish_activate_retire_keeps_live_tokens_verifying() {
    let p = Proc::start(&policy_toml(), "", &[]);
    assert_eq!(jwks_kids(&p).await, ["signing-1"]);
    let before = p.token("bot", DOCS).await;
    before.assert_ok();
    let old_token = before.access_token().to_string();
    assert_eq!(before.token_parts().0["kid"], "signing-1");

    // 1. Publish the next key: both in the JWKS, the old one still signs.
    write_signing_key(p.dir.path(), "signing-2");
    rewrite_signing(&p, &signing_section(&p, "signing-1", &["signing-1", "signing-2"]));
    assert!(
        eventually(Duration::from_secs(5), || async { jwks_kids(&p).await.len() == 2 }).await,
        "published\n{}",
        p.stderr()
    );
    assert_eq!(token_kid(&p).await, "signing-1");

    // 2. Activate it: new tokens are signed by signing-2; the old token still verifies
    // against /jwks.json and is still accepted by the broker.
    rewrite_signing(&p, &signing_section(&p, "signing-2", &["signing-1", "signing-2"]));
    assert!(
        eventually(Duration::from_secs(5), || async { token_kid(&p).await == "signing-2" }).await,
        "activated\n{}",
        p.stderr()
    );
    assert!(verifies_against_jwks(&p, &old_token).await, "a token minted before the rotation verifies");
    exchangeable(&p, &old_token).await.assert_ok();

    // 3. Retire the old key (once its last token has expired): gone from the JWKS.
    rewrite_signing(&p, &signing_section(&p, "signing-2", &["signing-2"]));
    assert!(eventually(Duration::from_secs(5), || async { jwks_kids(&p).await == ["signing-2"] }).await);
    assert!(!verifies_against_jwks(&p, &old_token).await);

    // A broken key change is refused and the keys now serving stay.
    rewrite_signing(&p, &signing_section(&p, "signing-3", &["signing-2", "signing-3"]));
    assert!(
        eventually(Duration::from_secs(5), || async {
            crate::metrics::value(&p.metrics().await, "agent_sts_policy_reloads_total{result=\"failed\"}")
                == 1.0
        })
        .await
    );
    assert_eq!(token_kid(&p).await, "signing-2");
}

/// `agent-sts revoke --token` marks the token revoked in Redis: the running broker then
/// refuses to exchange it. `--jti/--exp` does the same from the audit log's fields.
#[tokio::test]
async fn revoke_command_revokes_in_the_shared_store() {
    let p = Proc::start(&policy_toml(), "", &[]);
    let config = p.path("agent-sts.toml");
    let t1 = p.token("bot", DOCS).await.access_token().to_string();
    let t2 = p.token("bot", DOCS).await;
    let (_, c2) = t2.token_parts();
    exchangeable(&p, &t1).await.assert_ok();

    let out = Command::new(BIN)
        .args(["revoke", "--config", config.to_str().expect("utf8"), "--token", &t1])
        .output()
        .expect("run revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exchangeable(&p, &t1).await.assert_error(400, "invalid_request");

    let out = Command::new(BIN)
        .args([
            "revoke",
            "--config",
            config.to_str().expect("utf8"),
            "--jti",
            c2["jti"].as_str().expect("jti"),
            "--exp",
            &c2["exp"].to_string(),
        ])
        .output()
        .expect("run revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exchangeable(&p, t2.access_token()).await.assert_error(400, "invalid_request");

    let out = Command::new(BIN)
        .args(["revoke", "--config", config.to_str().expect("utf8"), "--token", "not-a-token"])
        .output()
        .expect("run revoke");
    assert!(!out.status.success(), "a token that does not verify is refused");
}
