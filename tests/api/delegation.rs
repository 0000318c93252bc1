//! Delegation (issue 8): agents acting for users (RFC 8693 on-behalf-of), agent-to-agent
//! chains that only ever narrow, and ID-JAG redemption. A local IdP stands in for the users'
//! identity provider (Keycloak, Entra, Okta ...). Refusals of a subject or actor token are
//! RFC 8693 section 2.2.2's `invalid_request`; a server out of reach is `invalid_target`
//! (RFC 8707); nothing left of the scopes is `invalid_scope`; a bad ID-JAG is RFC 7523
//! section 3.1's `invalid_grant`.

use crate::helpers::*;
use crate::idp::{wait_until, Idp, JWKS_PATH};
use serde_json::{json, Value};
use std::time::Duration;

const ID_JAG_TYP: &str = "oauth-id-jag+jwt";

fn delegation_policy(idp: &Idp, enterprise: &Idp) -> String {
    format!(
        r#"
[[issuer]]
id = "corp-idp"
issuer = "{idp}"
discovery = true
algorithms = ["RS256", "ES256"]
single_use = false          # users' access tokens are presented many times by design

[[issuer]]
id = "enterprise"
issuer = "{enterprise}"
discovery = true
algorithms = ["ES256"]
id_jag = true

[[delegation]]
id = "assistant-for-staff"
issuer = "corp-idp"
actor = "agent-a"
[delegation.subject]
groups = {{ contains = "staff" }}
email = {{ glob = "*@acme.example" }}
  [[delegation.allow]]
  server = "svc-b"
  scopes = ["ask", "read"]
  [[delegation.allow]]
  server = "svc-c"
  scopes = ["ask", "read"]
  [[delegation.allow]]
  server = "svc-d"
  scopes = ["ask"]
  [[delegation.allow]]
  server = "docs"
  scopes = ["read"]

[[delegation]]
id = "bot-for-readers"
issuer = "corp-idp"
actor = "bot"
limit_to_subject_scopes = true
[delegation.subject]
groups = {{ contains = "readers" }}
  [[delegation.allow]]
  server = "docs"
  scopes = ["read", "write"]
"#,
        idp = idp.issuer(),
        enterprise = enterprise.issuer(),
    )
}

struct World {
    idp: Idp,
    enterprise: Idp,
    app: TestApp,
}

async fn world() -> World {
    let (idp, enterprise) = (Idp::start(), Idp::start());
    let app = TestApp::spawn_with(AppOptions {
        extra_policy: delegation_policy(&idp, &enterprise),
        ..AppOptions::default()
    })
    .await;
    crate::idp::wait_keys_fetched(&[&idp, &enterprise]).await;
    World { idp, enterprise, app }
}

impl World {
    /// Alice's access token from the corporate IdP, for this broker.
    fn user_claims(&self) -> Value {
        let now = self.app.now();
        json!({
            "iss": self.idp.issuer(), "aud": self.app.issuer, "sub": "alice",
            "email": "alice@acme.example", "groups": ["staff", "readers"],
            "scope": "read", "iat": now, "exp": now + 600, "jti": agent_sts::crypto::random_id()
        })
    }

    fn user_token(&self, claims: &Value) -> String {
        self.idp.sign(claims, "rsa-1")
    }

    /// A token exchange by `actor` (its client assertion) of `subject` for `resource`.
    async fn exchange(
        &self,
        actor: &str,
        subject: &str,
        subject_type: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> Reply {
        let assertion = self.app.assertion(actor).sign();
        let mut p = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
            ("resource", resource),
        ];
        if let Some(s) = scope {
            p.push(("scope", s));
        }
        self.app.post_token(&p).await
    }

    async fn on_behalf_of(
        &self,
        actor: &str,
        user_token: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> Reply {
        self.exchange(actor, user_token, TT_ACCESS_TOKEN, resource, scope).await
    }
}

fn description(r: &Reply) -> &str {
    r.body["error_description"].as_str().unwrap_or_default()
}

/// RFC 8693: an agent acting for a user: `sub` = the user, `act` = the agent, `client_id`
/// = the agent, `aud` = the one server, scopes = request ∩ rule ∩ agent, `exp` ≤ the user's.
#[tokio::test]
async fn rfc8693_on_behalf_of_names_the_agent_in_act() {
    let w = world().await;
    let user = w.user_token(&w.user_claims());
    let r = w.on_behalf_of("agent-a", &user, SVC_B, Some("ask read admin")).await;
    r.assert_ok();
    assert_eq!(r.body["issued_token_type"], TT_ACCESS_TOKEN);
    assert_eq!(r.body["scope"], "ask read");
    let (_, c) = r.token_parts();
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"], json!({"sub": "agent-a"}));
    assert_eq!(c["client_id"], "agent-a");
    assert_eq!(c["aud"], SVC_B);
    assert_eq!(c["entitlement"], "delegation:assistant-for-staff");
    // The same user token as an ID token, and with an actor_token instead of client auth.
    let id_token = w.user_token(&w.user_claims());
    w.exchange("agent-a", &id_token, "urn:ietf:params:oauth:token-type:id_token", SVC_B, None)
        .await
        .assert_ok();
    let r = w
        .app
        .post_token(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &w.user_token(&w.user_claims())),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("actor_token", &w.app.assertion("agent-a").sign()),
            ("actor_token_type", TT_JWT),
            ("resource", SVC_B),
        ])
        .await;
    r.assert_ok();
    assert_eq!(r.token_parts().1["act"]["sub"], "agent-a");
}

/// The agent authenticated twice (client assertion and actor_token): both must name it.
#[tokio::test]
async fn rfc8693_client_and_actor_token_must_name_one_agent() {
    let w = world().await;
    async fn send(w: &World, actor_token_of: &str) -> Reply {
        let user = w.user_token(&w.user_claims());
        w.app
            .post_token(&[
                ("grant_type", GRANT_TOKEN_EXCHANGE),
                ("subject_token", &user),
                ("subject_token_type", TT_ACCESS_TOKEN),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", &w.app.assertion("agent-a").sign()),
                ("actor_token", &w.app.assertion(actor_token_of).sign()),
                ("actor_token_type", TT_JWT),
                ("resource", SVC_B),
            ])
            .await
    }
    send(&w, "agent-a").await.assert_ok();
    let r = send(&w, "agent-b").await;
    r.assert_error(400, "invalid_request");
    assert!(description(&r).contains("actor_token names another agent"), "{}", r.text);
}

/// A subject outside the rule's predicates, or an actor no rule names, is refused.
#[tokio::test]
async fn rfc8693_2_2_2_subject_outside_the_rule_is_refused() {
    let w = world().await;
    let mut outsider = w.user_claims();
    outsider["groups"] = json!(["contractors"]);
    let r = w.on_behalf_of("agent-a", &w.user_token(&outsider), SVC_B, None).await;
    r.assert_error(400, "invalid_request");
    assert!(description(&r).contains("no delegation rule lets agent 'agent-a' act"), "{}", r.text);
    let mut other_domain = w.user_claims();
    other_domain["email"] = json!("alice@acme.example.evil");
    w.on_behalf_of("agent-a", &w.user_token(&other_domain), SVC_B, None)
        .await
        .assert_error(400, "invalid_request");
    // agent-b is not an actor of any rule for this issuer.
    w.on_behalf_of("agent-b", &w.user_token(&w.user_claims()), SVC_C, None)
        .await
        .assert_error(400, "invalid_request");
    // A user token without an actor is not delegation (nor federation: no rule of this issuer).
    let r = w
        .app
        .post_token(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &w.user_token(&w.user_claims())),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("resource", SVC_B),
        ])
        .await;
    r.assert_error(400, "invalid_request");
}

/// RFC 8693 section 4.4: `may_act`, when present, must name the actor.
#[tokio::test]
async fn rfc8693_4_4_may_act_must_name_the_actor() {
    let w = world().await;
    let mut claims = w.user_claims();
    claims["may_act"] = json!({"sub": "agent-z"});
    let r = w.on_behalf_of("agent-a", &w.user_token(&claims), SVC_B, None).await;
    r.assert_error(400, "invalid_request");
    assert!(description(&r).contains("may_act does not name agent 'agent-a'"), "{}", r.text);
    claims["may_act"] = json!({"sub": "agent-a", "iss": "https://someone-else.example"});
    w.on_behalf_of("agent-a", &w.user_token(&claims), SVC_B, None).await.assert_error(400, "invalid_request");
    claims["may_act"] = json!({"sub": "agent-a"});
    w.on_behalf_of("agent-a", &w.user_token(&claims), SVC_B, None).await.assert_ok();
    claims["may_act"] = json!({"sub": "agent-a", "iss": w.app.issuer});
    w.on_behalf_of("agent-a", &w.user_token(&claims), SVC_B, None).await.assert_ok();
}

/// The delegated token never outlives the user's (no lifetime extension), and scopes never
/// exceed what the user's token itself carries when the rule says so.
#[tokio::test]
async fn lifetime_and_subject_scopes_only_narrow() {
    let w = world().await;
    let mut claims = w.user_claims();
    let now = w.app.now();
    claims["exp"] = json!(now + 30);
    let r = w.on_behalf_of("agent-a", &w.user_token(&claims), SVC_B, None).await;
    r.assert_ok();
    let exp = r.token_parts().1["exp"].as_i64().expect("exp");
    assert!(exp <= now + 30, "the delegated token ends with the user's ({exp} > {})", now + 30);
    assert!(r.body["expires_in"].as_i64().expect("expires_in") <= 30);
    // bot-for-readers: limit_to_subject_scopes; the user's token carries "read" only.
    let r = w.on_behalf_of("bot", &w.user_token(&w.user_claims()), DOCS, Some("read write")).await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
    let r = w.on_behalf_of("bot", &w.user_token(&w.user_claims()), DOCS, Some("write")).await;
    r.assert_error(400, "invalid_scope");
    // An expired user token is refused.
    let mut old = w.user_claims();
    old["exp"] = json!(now - 120);
    old["iat"] = json!(now - 700);
    w.on_behalf_of("agent-a", &w.user_token(&old), SVC_B, None).await.assert_error(400, "invalid_request");
}

/// A three-hop chain user ▶ A ▶ B ▶ C: each hop is exchanged by the operator of the
/// previous token's audience, narrows, and nests `act` with the newest actor outermost
/// (RFC 8693 section 4.1); a fourth hop is refused by the depth cap (3 actors).
#[tokio::test]
async fn rfc8693_4_1_three_hop_chain_narrows_and_nests_then_the_cap_refuses() {
    let w = world().await;
    let hop1 = w.on_behalf_of("agent-a", &w.user_token(&w.user_claims()), SVC_B, Some("ask read")).await;
    hop1.assert_ok();
    let t1 = hop1.access_token().to_string();
    let (_, c1) = hop1.token_parts();

    // B operates svc-b: it may carry the token to svc-c, one hop deeper, no wider.
    let hop2 = w.exchange("agent-b", &t1, TT_ACCESS_TOKEN, SVC_C, Some("ask read admin")).await;
    hop2.assert_ok();
    let (_, c2) = hop2.token_parts();
    assert_eq!(c2["sub"], "alice");
    assert_eq!(c2["client_id"], "agent-b");
    assert_eq!(c2["act"], json!({"sub": "agent-b", "act": {"sub": "agent-a"}}));
    assert_eq!(hop2.body["scope"], "ask read", "admin: B may, the user may not");
    assert!(c2["exp"].as_i64() <= c1["exp"].as_i64());
    let t2 = hop2.access_token().to_string();

    let hop3 = w.exchange("agent-c", &t2, TT_JWT, SVC_D, None).await;
    hop3.assert_ok();
    let (_, c3) = hop3.token_parts();
    assert_eq!(c3["act"], json!({"sub": "agent-c", "act": {"sub": "agent-b", "act": {"sub": "agent-a"}}}));
    assert_eq!(hop3.body["scope"], "ask");
    assert!(c3["exp"].as_i64() <= c2["exp"].as_i64());
    assert_eq!(c3["entitlement"], "delegation:assistant-for-staff", "the entitlement travels");

    // The fourth actor would exceed [chains] max_actors = 3.
    let hop4 = w.exchange("agent-d", hop3.access_token(), TT_ACCESS_TOKEN, SVC_E, None).await;
    hop4.assert_error(400, "invalid_request");
    assert!(description(&hop4).contains("4 actors; this broker issues at most 3"), "{}", hop4.text);
}

/// Each way a hop could widen or go astray is refused with its code.
#[tokio::test]
async fn chain_hops_that_widen_or_stray_are_refused() {
    let w = world().await;
    let t1 = {
        let r = w.on_behalf_of("agent-a", &w.user_token(&w.user_claims()), SVC_B, Some("ask read")).await;
        r.assert_ok();
        r.access_token().to_string()
    };
    // Scope widening: B may have admin on svc-c, the user may not.
    let r = w.exchange("agent-b", &t1, TT_ACCESS_TOKEN, SVC_C, Some("admin")).await;
    r.assert_error(400, "invalid_scope");
    // ... nor more than the token carries.
    let t_ask = {
        let r = w.on_behalf_of("agent-a", &w.user_token(&w.user_claims()), SVC_B, Some("ask")).await;
        r.assert_ok();
        r.access_token().to_string()
    };
    w.exchange("agent-b", &t_ask, TT_ACCESS_TOKEN, SVC_C, Some("read"))
        .await
        .assert_error(400, "invalid_scope");
    // A server the actor may not reach.
    let r = w.exchange("agent-b", &t1, TT_ACCESS_TOKEN, SVC_D, None).await;
    r.assert_error(400, "invalid_target");
    assert!(description(&r).contains("agent 'agent-b' may not reach server 'svc-d'"), "{}", r.text);
    // A server the actor may reach but the user may not (the confused deputy's request).
    let r = w.exchange("agent-b", &t1, TT_ACCESS_TOKEN, SVC_E, None).await;
    r.assert_error(400, "invalid_target");
    assert!(
        description(&r).contains("delegation rule 'assistant-for-staff') may not reach server 'svc-e'"),
        "{}",
        r.text
    );
    // An agent that neither holds the token nor operates its audience.
    let r = w.exchange("agent-c", &t1, TT_ACCESS_TOKEN, SVC_D, None).await;
    r.assert_error(400, "invalid_request");
    assert!(description(&r).contains("or the operator of its audience"), "{}", r.text);
    // Its holder may still re-scope it for another server the user and it may reach.
    let r = w.exchange("agent-a", &t1, TT_ACCESS_TOKEN, DOCS, None).await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
    assert_eq!(r.token_parts().1["act"], json!({"sub": "agent-a"}), "the same actor again is not a new hop");
}

/// A second agent may not exchange an agent's own token (no operator relation), as before;
/// the operator of its audience may.
#[tokio::test]
async fn agent_tokens_are_carried_only_by_the_operator_of_their_audience() {
    let w = world().await;
    let own = w.app.token_for("agent-a", SVC_B, Some("ask")).await;
    w.exchange("agent-c", &own, TT_ACCESS_TOKEN, SVC_D, None).await.assert_error(400, "invalid_request");
    let r = w.exchange("agent-b", &own, TT_ACCESS_TOKEN, SVC_C, None).await;
    // agent-a's own entitlement on svc-c: none. The subject (agent-a) could not get it.
    r.assert_error(400, "invalid_target");
    assert!(description(&r).contains("agent 'agent-a') may not reach"), "{}", r.text);
}

// ---- ID-JAG ----------------------------------------------------------------------------

fn id_jag_claims(w: &World, client_id: &str) -> Value {
    let now = w.app.now();
    json!({
        "iss": w.enterprise.issuer(), "aud": w.app.issuer, "sub": "alice@acme.example",
        "client_id": client_id, "jti": agent_sts::crypto::random_id(),
        "iat": now, "exp": now + 300, "resource": DOCS, "scope": "read write"
    })
}

fn id_jag(w: &World, claims: &Value, typ: &str) -> String {
    w.enterprise.sign_with_header(&json!({"alg": "ES256", "kid": "ec-1", "typ": typ}), claims, "ec-1")
}

async fn redeem(w: &World, agent: Option<&str>, grant: &str, resource: &str, scope: Option<&str>) -> Reply {
    let assertion = agent.map(|a| w.app.assertion(a).sign());
    let mut p = vec![("grant_type", GRANT_JWT_BEARER), ("assertion", grant), ("resource", resource)];
    if let Some(a) = &assertion {
        p.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
        p.push(("client_assertion", a));
    }
    if let Some(s) = scope {
        p.push(("scope", s));
    }
    w.app.post_token(&p).await
}

/// MCP enterprise-managed authorization: the IdP's ID-JAG, redeemed by the client it names.
#[tokio::test]
async fn id_jag_is_redeemed_by_its_client() {
    let w = world().await;
    let r =
        redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP), DOCS, Some("read")).await;
    r.assert_ok();
    let (_, c) = r.token_parts();
    assert_eq!((c["sub"].as_str(), c["client_id"].as_str()), (Some("alice@acme.example"), Some("bot")));
    assert_eq!(r.body["scope"], "read");
    // No scope asked: the grant's, narrowed to the agent's allowance.
    let r = redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP), DOCS, None).await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read write");
}

/// Each ID-JAG rule refused with its code.
#[tokio::test]
async fn id_jag_refusals() {
    let w = world().await;
    // Another client's grant (client_id mismatch): invalid_grant.
    let r =
        redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "other-bot"), ID_JAG_TYP), DOCS, None).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("client_id is not the authenticated client"), "{}", r.text);
    // No client authentication: invalid_client.
    redeem(&w, None, &id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP), DOCS, None)
        .await
        .assert_error(401, "invalid_client");
    // Wrong typ: not an ID-JAG, so a federated token, which no rule maps: invalid_grant.
    let r = redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "bot"), "JWT"), DOCS, None).await;
    r.assert_error(400, "invalid_grant");
    // A resource it does not grant; a scope beyond it.
    redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP), TICKETS, None)
        .await
        .assert_error(400, "invalid_target");
    redeem(&w, Some("bot"), &id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP), DOCS, Some("admin read"))
        .await
        .assert_error(400, "invalid_scope");
    // Replayed: the jti is spent once.
    let g = id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP);
    redeem(&w, Some("bot"), &g, DOCS, None).await.assert_ok();
    let r = redeem(&w, Some("bot"), &g, DOCS, None).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("already used"), "{}", r.text);
    // An ID-JAG without jti is refused.
    let mut no_jti = id_jag_claims(&w, "bot");
    no_jti.as_object_mut().expect("object").remove("jti");
    redeem(&w, Some("bot"), &id_jag(&w, &no_jti, ID_JAG_TYP), DOCS, None)
        .await
        .assert_error(400, "invalid_grant");
    // An issuer not trusted with ID-JAGs (the corporate IdP is id_jag = false).
    let mut from_idp = id_jag_claims(&w, "bot");
    from_idp["iss"] = json!(w.idp.issuer());
    let g = w.idp.sign_with_header(
        &json!({"alg": "RS256", "kid": "rsa-1", "typ": ID_JAG_TYP}),
        &from_idp,
        "rsa-1",
    );
    let r = redeem(&w, Some("bot"), &g, DOCS, None).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("not trusted to issue ID-JAGs"), "{}", r.text);
}

/// An ID-JAG redeemed by two broker instances sharing Redis: spent once across them.
#[tokio::test]
async fn id_jag_is_single_use_across_instances() {
    let (idp, enterprise) = (Idp::start(), Idp::start());
    let prefix = unique_prefix();
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let opts = || AppOptions {
        extra_policy: delegation_policy(&idp, &enterprise),
        key_prefix: Some(prefix.clone()),
        issuer: Some(issuer.clone()),
        ..AppOptions::default()
    };
    let (one, two) = (TestApp::spawn_with(opts()).await, TestApp::spawn_with(opts()).await);
    assert!(wait_until(Duration::from_secs(10), || enterprise.requests(JWKS_PATH) >= 2).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let w = World { idp, enterprise, app: one };
    let g = id_jag(&w, &id_jag_claims(&w, "bot"), ID_JAG_TYP);
    redeem(&w, Some("bot"), &g, DOCS, None).await.assert_ok();
    let w2 = World { idp: Idp::start(), enterprise: Idp::start(), app: two };
    let r = redeem(&w2, Some("bot"), &g, DOCS, None).await;
    r.assert_error(400, "invalid_grant");
}
