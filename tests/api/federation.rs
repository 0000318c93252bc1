//! Federation (issue 7): CI jobs and workloads trade their platform's OIDC token for an MCP
//! token with no stored secret. Local issuers (discovery and JWKS on free loopback ports,
//! keys the test generates) stand in for GitHub Actions, GitLab CI and Kubernetes.
//! Refusals: the jwt-bearer `assertion` is `invalid_grant` (RFC 7523 section 3.1), a token
//! exchange's `subject_token` is `invalid_request` (RFC 8693 section 2.2.2), an issuer whose
//! keys are not known yet is 503 `temporarily_unavailable`.

use crate::helpers::*;
use crate::idp::{Behaviour, Idp, JWKS_PATH};
use agent_sts::crypto::Alg;
use serde_json::{json, Value};
use std::time::Duration;

/// The policy text for one IdP acting as GitHub Actions, one as GitLab, one as a Kubernetes
/// cluster (reused tokens), mapped onto federation-only agents.
fn platform_policy(github: &Idp, gitlab: &Idp, k8s: &Idp) -> String {
    format!(
        r#"
[[issuer]]
id = "github"
issuer = "{github}"
discovery = true
algorithms = ["RS256", "ES256"]
max_token_age_secs = 600

[[issuer]]
id = "gitlab"
issuer = "{gitlab}"
jwks_uri = "{gitlab_jwks}"
algorithms = ["RS256"]

[[issuer]]
id = "cluster"
issuer = "{k8s}"
discovery = true
algorithms = ["RS256"]
single_use = false
audience = "agent-sts"

[[agent]]
id = "infra-deployer"
[[agent.allow]]
server = "docs"
scopes = ["read", "write"]
default_scopes = ["write"]

[[agent]]
id = "app-ci"
[[agent.allow]]
server = "tickets"
scopes = ["read"]
default_scopes = ["read"]

[[agent]]
id = "ci-runner"
[[agent.allow]]
server = "docs"
scopes = ["read"]
default_scopes = ["read"]

[[agent]]
id = "retired-deployer"
disabled = true

[[federation]]
id = "infra-deploy-from-main"
issuer = "github"
agent = "infra-deployer"
[federation.claims]
repository_owner_id = "1234567"
repository_id = "89012345"
ref = "refs/heads/main"
job_workflow_ref = {{ glob = "acme/infra/.github/workflows/deploy.yml@*" }}

[[federation]]
id = "retired-repo"
issuer = "github"
agent = "retired-deployer"
[federation.claims]
repository_id = "555"

[[federation]]
id = "app-protected-branches"
issuer = "gitlab"
agent = "app-ci"
[federation.claims]
project_id = "1001"
ref_protected = "true"
ref_type = "branch"

[[federation]]
id = "ci-namespace"
issuer = "cluster"
agent = "ci-runner"
[federation.claims]
"/kubernetes.io/namespace" = "ci"
"/kubernetes.io/serviceaccount/name" = "deployer"
"#,
        github = github.issuer(),
        gitlab = gitlab.issuer(),
        gitlab_jwks = gitlab.jwks_uri(),
        k8s = k8s.issuer(),
    )
}

struct Platforms {
    github: Idp,
    gitlab: Idp,
    k8s: Idp,
    app: TestApp,
}

async fn platforms() -> Platforms {
    let (github, gitlab, k8s) = (Idp::start(), Idp::start(), Idp::start());
    let app = TestApp::spawn_with(AppOptions {
        extra_policy: platform_policy(&github, &gitlab, &k8s),
        tweak: tweak(|s| s.issuers.retry_initial_ms = 50),
        ..AppOptions::default()
    })
    .await;
    let p = Platforms { github, gitlab, k8s, app };
    p.wait_loaded().await;
    p
}

impl Platforms {
    async fn wait_loaded(&self) {
        crate::idp::wait_keys_fetched(&[&self.github, &self.gitlab, &self.k8s]).await;
    }

    /// A GitHub Actions ID token (the claims GitHub documents), for the deploy workflow on main.
    fn github_claims(&self) -> Value {
        let now = self.app.now();
        json!({
            "iss": self.github.issuer(), "aud": self.app.issuer,
            "sub": "repo:acme/infra:ref:refs/heads/main",
            "jti": agent_sts::crypto::random_id(), "iat": now, "nbf": now - 5, "exp": now + 300,
            "ref": "refs/heads/main", "ref_type": "branch", "ref_protected": "true",
            "repository": "acme/infra", "repository_id": "89012345",
            "repository_owner": "acme", "repository_owner_id": "1234567",
            "run_id": "7001", "run_attempt": "1", "actor": "octocat", "event_name": "push",
            "workflow": "deploy", "environment": "prod", "runner_environment": "github-hosted",
            "job_workflow_ref": "acme/infra/.github/workflows/deploy.yml@refs/heads/main"
        })
    }

    fn gitlab_claims(&self) -> Value {
        let now = self.app.now();
        json!({
            "iss": self.gitlab.issuer(), "aud": self.app.issuer,
            "sub": "project_path:acme/app:ref_type:branch:ref:main",
            "jti": agent_sts::crypto::random_id(), "iat": now, "nbf": now, "exp": now + 300,
            "namespace_id": "42", "namespace_path": "acme", "project_id": "1001", "project_path": "acme/app",
            "pipeline_source": "push", "ref": "main", "ref_type": "branch", "ref_protected": "true",
            "user_login": "dev"
        })
    }

    fn k8s_claims(&self) -> Value {
        let now = self.app.now();
        json!({
            "iss": self.k8s.issuer(), "aud": ["agent-sts"],
            "sub": "system:serviceaccount:ci:deployer",
            "iat": now, "nbf": now, "exp": now + 600,
            "kubernetes.io": {
                "namespace": "ci",
                "pod": {"name": "runner-7f9", "uid": "0b6f"},
                "serviceaccount": {"name": "deployer", "uid": "5a1c"}
            }
        })
    }

    async fn jwt_bearer(&self, token: &str, resource: &str) -> Reply {
        self.app
            .post_token(&[("grant_type", GRANT_JWT_BEARER), ("assertion", token), ("resource", resource)])
            .await
    }

    async fn exchange(&self, token: &str, token_type: &str, resource: &str) -> Reply {
        self.app
            .post_token(&[
                ("grant_type", GRANT_TOKEN_EXCHANGE),
                ("subject_token", token),
                ("subject_token_type", token_type),
                ("resource", resource),
            ])
            .await
    }
}

fn with(mut claims: Value, name: &str, v: Value) -> Value {
    claims[name] = v;
    claims
}

fn description(r: &Reply) -> &str {
    r.body["error_description"].as_str().unwrap_or_default()
}

/// A GitHub Actions job on main gets a token as the mapped agent; `sub` stays the platform's.
#[tokio::test]
async fn github_actions_token_maps_to_its_agent() {
    let p = platforms().await;
    let r = p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), DOCS).await;
    r.assert_ok();
    let (_, claims) = r.token_parts();
    assert_eq!(claims["sub"], "repo:acme/infra:ref:refs/heads/main");
    assert_eq!(claims["client_id"], "infra-deployer");
    assert_eq!(claims["aud"], DOCS);
    assert_eq!(r.body["scope"], "write", "the agent's default scopes");
    assert!(claims.get("act").is_none());
    // ES256 keys of the same issuer work too.
    p.jwt_bearer(&p.github.sign(&p.github_claims(), "ec-1"), DOCS).await.assert_ok();
}

/// A rule's predicates all must hold: another branch, repository or workflow is refused.
#[tokio::test]
async fn github_token_failing_a_predicate_is_refused() {
    let p = platforms().await;
    for claims in [
        with(p.github_claims(), "ref", json!("refs/heads/feature")),
        with(p.github_claims(), "repository_id", json!("89012346")),
        with(
            p.github_claims(),
            "job_workflow_ref",
            json!("acme/infra/.github/workflows/evil.yml@refs/heads/main"),
        ),
        with(p.github_claims(), "repository_owner_id", json!(1234567)),
    ] {
        let r = p.jwt_bearer(&p.github.sign(&claims, "rsa-1"), DOCS).await;
        r.assert_error(400, "invalid_grant");
        assert!(description(&r).contains("no federation rule of issuer 'github' matches"), "{}", r.text);
    }
    // A missing claim never matches.
    let mut claims = p.github_claims();
    claims.as_object_mut().expect("object").remove("job_workflow_ref");
    p.jwt_bearer(&p.github.sign(&claims, "rsa-1"), DOCS).await.assert_error(400, "invalid_grant");
}

/// The mapped agent's allowance applies: a server it may not reach, or a scope beyond it.
#[tokio::test]
async fn the_mapped_agents_allowance_applies() {
    let p = platforms().await;
    let r = p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), TICKETS).await;
    r.assert_error(400, "invalid_target");
    let t = p.github.sign(&p.github_claims(), "rsa-1");
    let r = p
        .app
        .post_token(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &t),
            ("resource", DOCS),
            ("scope", "admin read"),
        ])
        .await;
    r.assert_ok();
    assert_eq!(r.body["scope"], "read");
}

/// GitLab CI ID token (jwks_uri key source), as jwt-bearer and as a token exchange subject.
#[tokio::test]
async fn gitlab_token_via_jwt_bearer_and_token_exchange() {
    let p = platforms().await;
    let r = p.jwt_bearer(&p.gitlab.sign(&p.gitlab_claims(), "rsa-1"), TICKETS).await;
    r.assert_ok();
    assert_eq!(r.token_parts().1["client_id"], "app-ci");
    for tt in [TT_JWT, "urn:ietf:params:oauth:token-type:id_token"] {
        let r = p.exchange(&p.gitlab.sign(&p.gitlab_claims(), "rsa-1"), tt, TICKETS).await;
        r.assert_ok();
        assert_eq!(r.body["issued_token_type"], TT_ACCESS_TOKEN);
        assert_eq!(r.token_parts().1["sub"], "project_path:acme/app:ref_type:branch:ref:main");
    }
    // RFC 8693 §2.2.2: a token typed `at+jwt` (RFC 9068) may be a `jwt` subject, but it is
    // not an ID token: declared as `id_token` it is invalid_request.
    let at_jwt = json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"});
    let t = p.gitlab.sign_with_header(&at_jwt, &p.gitlab_claims(), "rsa-1");
    p.exchange(&t, TT_JWT, TICKETS).await.assert_ok();
    let t = p.gitlab.sign_with_header(&at_jwt, &p.gitlab_claims(), "rsa-1");
    let r = p.exchange(&t, "urn:ietf:params:oauth:token-type:id_token", TICKETS).await;
    r.assert_error(400, "invalid_request");
    assert!(description(&r).contains("typ"), "{}", r.text);
    // An unprotected branch does not match; as a subject token that is invalid_request.
    let t = p.gitlab.sign(&with(p.gitlab_claims(), "ref_protected", json!("false")), "rsa-1");
    p.exchange(&t, TT_JWT, TICKETS).await.assert_error(400, "invalid_request");
    // The issuer allows RS256 only: its ES256 key is not used even though it publishes one.
    let r = p.jwt_bearer(&p.gitlab.sign(&p.gitlab_claims(), "ec-1"), TICKETS).await;
    r.assert_error(400, "invalid_grant");
}

/// Kubernetes service-account tokens are reused by design (`single_use = false`): the same
/// token works twice; nested claims are matched by JSON Pointer.
#[tokio::test]
async fn kubernetes_token_is_reusable_and_matched_by_pointer() {
    let p = platforms().await;
    let t = p.k8s.sign(&p.k8s_claims(), "rsa-1");
    for _ in 0..2 {
        let r = p.jwt_bearer(&t, DOCS).await;
        r.assert_ok();
        assert_eq!(r.token_parts().1["sub"], "system:serviceaccount:ci:deployer");
    }
    let mut other = p.k8s_claims();
    other["kubernetes.io"]["namespace"] = json!("prod");
    p.jwt_bearer(&p.k8s.sign(&other, "rsa-1"), DOCS).await.assert_error(400, "invalid_grant");
    // The issuer's configured `audience` (a projected service-account token's audience)
    // replaces our issuer as the one audience accepted, RFC 7523 section 3 item 3.
    let ours = with(p.k8s_claims(), "aud", json!([p.app.issuer]));
    let r = p.jwt_bearer(&p.k8s.sign(&ours, "rsa-1"), DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("aud must be exactly"), "{}", r.text);
}

/// Single-use issuers (the default): a platform token is spent like an assertion; a token
/// without a `jti` is spent by its hash.
#[tokio::test]
async fn platform_token_replayed_is_refused() {
    let p = platforms().await;
    let t = p.github.sign(&p.github_claims(), "rsa-1");
    p.jwt_bearer(&t, DOCS).await.assert_ok();
    let r = p.jwt_bearer(&t, DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("already used"), "{}", r.text);
    p.exchange(&t, TT_JWT, DOCS).await.assert_error(400, "invalid_request");
    let mut no_jti = p.gitlab_claims();
    no_jti.as_object_mut().expect("object").remove("jti");
    let t = p.gitlab.sign(&no_jti, "rsa-1");
    p.jwt_bearer(&t, TICKETS).await.assert_ok();
    p.jwt_bearer(&t, TICKETS).await.assert_error(400, "invalid_grant");
    // A different token without a jti is another credential: its own hash, not spent yet.
    no_jti["iat"] = json!(p.app.now() - 1);
    let other = p.gitlab.sign(&no_jti, "rsa-1");
    p.jwt_bearer(&other, TICKETS).await.assert_ok();
    p.jwt_bearer(&other, TICKETS).await.assert_error(400, "invalid_grant");
    // A jti is spent, not a token: the same jti in another token (re-signed, another iat) is
    // a replay (RFC 7519 section 4.1.7).
    let claims = p.gitlab_claims();
    p.jwt_bearer(&p.gitlab.sign(&claims, "rsa-1"), TICKETS).await.assert_ok();
    let again = with(claims, "iat", json!(p.app.now() - 4));
    p.jwt_bearer(&p.gitlab.sign(&again, "rsa-1"), TICKETS).await.assert_error(400, "invalid_grant");
    // An empty jti names nothing: such tokens are told apart by their hash too.
    for iat in [p.app.now() - 2, p.app.now() - 3] {
        let t = p.gitlab.sign(&with(with(p.gitlab_claims(), "jti", json!("")), "iat", json!(iat)), "rsa-1");
        p.jwt_bearer(&t, TICKETS).await.assert_ok();
        p.jwt_bearer(&t, TICKETS).await.assert_error(400, "invalid_grant");
    }
}

/// The issuer's tokens must be for us (exactly), not too old, not expired.
#[tokio::test]
async fn audience_age_and_expiry_of_platform_tokens() {
    let p = platforms().await;
    let now = p.app.now();
    for (claims, why) in [
        (with(p.github_claims(), "aud", json!("https://another-sts.example")), "aud must be exactly"),
        (
            with(p.github_claims(), "aud", json!([p.app.issuer, "https://another-sts.example"])),
            "aud must be exactly",
        ),
        (with(with(p.github_claims(), "iat", json!(now - 700)), "nbf", json!(now - 700)), "too old"),
        (with(with(p.github_claims(), "exp", json!(now - 120)), "iat", json!(now - 400)), "expired"),
    ] {
        let r = p.jwt_bearer(&p.github.sign(&claims, "rsa-1"), DOCS).await;
        r.assert_error(400, "invalid_grant");
        assert!(description(&r).contains(why), "{why}: {}", r.text);
    }
    // max_token_age_secs needs iat.
    let mut no_iat = p.github_claims();
    no_iat.as_object_mut().expect("object").remove("iat");
    p.jwt_bearer(&p.github.sign(&no_iat, "rsa-1"), DOCS).await.assert_error(400, "invalid_grant");
}

/// RFC 8725: every algorithm trick of the assertion checklist, against a trusted issuer.
#[tokio::test]
async fn rfc8725_algorithm_tricks_are_refused() {
    let p = platforms().await;
    let claims = p.github_claims();
    // alg none, unsigned.
    let unsigned = p.github.sign_with_header(&json!({"alg": "none", "kid": "rsa-1"}), &claims, "rsa-1");
    let (head, _) = unsigned.rsplit_once('.').expect("parts");
    p.jwt_bearer(&format!("{head}."), DOCS).await.assert_error(400, "invalid_grant");
    // HS256 keyed with the issuer's public RSA key.
    let secret = Value::Object(p.github.public_jwk("rsa-1")).to_string();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
            .expect("hs256");
    let r = p.jwt_bearer(&forged, DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("HS256"), "{}", r.text);
    // Key references in the header, and crit.
    for (name, v) in [
        ("jku", json!(format!("{}/evil-jwks", p.github.issuer()))),
        ("x5u", json!("https://evil.example/c.pem")),
        ("jwk", Value::Object(p.github.public_jwk("rsa-1"))),
        ("x5c", json!(["MIIB"])),
        ("crit", json!(["exp"])),
    ] {
        let h = json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT", name: v});
        p.jwt_bearer(&p.github.sign_with_header(&h, &claims, "rsa-1"), DOCS)
            .await
            .assert_error(400, "invalid_grant");
    }
    // The kid of the RSA key with an ES256 header: the key fixes the algorithm.
    let h = json!({"alg": "ES256", "kid": "rsa-1", "typ": "JWT"});
    let r = p.jwt_bearer(&p.github.sign_with_header(&h, &claims, "ec-1"), DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("RS256"), "{}", r.text);
    // Signed by a key the issuer does not publish.
    let stranger = Idp::start();
    let r = p.jwt_bearer(&stranger.sign(&claims, "rsa-1"), DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("signature"), "{}", r.text);
    // An agent assertion type or an access token type is not a platform token.
    for typ in ["client-authentication+jwt", "oauth-id-jag+jwt"] {
        let h = json!({"alg": "RS256", "kid": "rsa-1", "typ": typ});
        p.jwt_bearer(&p.github.sign_with_header(&h, &claims, "rsa-1"), DOCS)
            .await
            .assert_error(400, "invalid_grant");
    }
}

/// An iss that no [[issuer]] lists is refused before any network call: the broker never
/// fetches anything named by an unverified token.
#[tokio::test]
async fn unlisted_issuer_is_refused_without_any_fetch() {
    let p = platforms().await;
    let unlisted = Idp::start();
    let claims = with(p.github_claims(), "iss", json!(unlisted.issuer()));
    let t = unlisted.sign(&claims, "rsa-1");
    let r = p.jwt_bearer(&t, DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("not a registered agent or a trusted issuer"), "{}", r.text);
    p.exchange(&t, TT_JWT, DOCS).await.assert_error(400, "invalid_request");
    // With a kid it doesn't know, too (no refetch for an issuer it doesn't trust).
    let t = unlisted.sign_with_header(&json!({"alg": "RS256", "kid": "nope"}), &claims, "rsa-1");
    p.jwt_bearer(&t, DOCS).await.assert_error(400, "invalid_grant");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(unlisted.total_requests(), 0, "no request left the broker for the unlisted issuer");
}

/// The issuer rotates its key mid-run: a token with the new kid triggers exactly one fetch.
#[tokio::test]
async fn issuer_key_rotation_fetches_the_new_kid_once() {
    let p = platforms().await;
    let before = p.github.requests(JWKS_PATH);
    p.github.add_key(Alg::ES256, "ec-2");
    let first = p.jwt_bearer(&p.github.sign(&p.github_claims(), "ec-2"), DOCS).await;
    first.assert_ok();
    assert_eq!(p.github.requests(JWKS_PATH), before + 1, "one refetch for the unknown kid");
    for _ in 0..3 {
        p.jwt_bearer(&p.github.sign(&p.github_claims(), "ec-2"), DOCS).await.assert_ok();
    }
    assert_eq!(p.github.requests(JWKS_PATH), before + 1, "the new key is cached");
    // A kid the issuer never had: refused, and the refetch is rate-limited (no new fetch).
    let h = json!({"alg": "RS256", "kid": "never", "typ": "JWT"});
    p.jwt_bearer(&p.github.sign_with_header(&h, &p.github_claims(), "rsa-1"), DOCS)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(p.github.requests(JWKS_PATH), before + 1);
}

/// The issuer goes down after its keys were fetched: the last good keys keep working.
#[tokio::test]
async fn issuer_down_keeps_last_good_keys() {
    let mut p = platforms().await;
    p.github.go_down();
    p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), DOCS).await.assert_ok();
    p.github.resume();
}

/// An issuer that is down when the broker starts: agents keep working, its tokens get 503
/// (fail closed) until its keys are known, then work without a restart.
#[tokio::test]
async fn never_fetched_issuer_gives_503_until_it_is_up() {
    let (github, gitlab, k8s) = (Idp::start(), Idp::start(), Idp::start());
    github.set_behaviour(Behaviour::Status(500));
    let app = TestApp::spawn_with(AppOptions {
        extra_policy: platform_policy(&github, &gitlab, &k8s),
        tweak: tweak(|s| {
            s.issuers.retry_initial_ms = 50;
            s.issuers.retry_max_secs = 1;
        }),
        ..AppOptions::default()
    })
    .await;
    let p = Platforms { github, gitlab, k8s, app };
    // Agents are unaffected.
    p.app.client_credentials(&p.app.assertion("bot").sign(), DOCS, None).await.assert_ok();
    let r = p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), DOCS).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(description(&r).contains("keys of its issuer are not available yet"), "{}", r.text);
    // Ready (agents work), and /readyz says which issuer has no keys yet and why.
    let said = wait_until_async(Duration::from_secs(10), || async {
        let ready = p.app.get("/readyz").await;
        assert_eq!(ready.status, 200, "{}", ready.text);
        let github =
            ready.body["issuers"].as_array().and_then(|a| a.iter().find(|i| i["id"] == "github")).cloned();
        github.is_some_and(|g| {
            g["keys_loaded"] == false && g["last_error"].as_str().is_some_and(|e| e.contains("500"))
        })
    })
    .await;
    assert!(said, "/readyz names the issuer whose keys could not be fetched");
    p.github.set_behaviour(Behaviour::Normal);
    let back = wait_until_async(Duration::from_secs(10), || async {
        p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), DOCS).await.status == 200
    })
    .await;
    assert!(back, "the issuer's tokens work once its keys are fetched, without a restart");
}

/// Two rules that both match one token: refused as ambiguous (fail closed), and `policy
/// check` warns about them.
#[tokio::test]
async fn ambiguous_rules_refuse_the_token() {
    let (github, gitlab, k8s) = (Idp::start(), Idp::start(), Idp::start());
    let extra = format!(
        "{}\n[[federation]]\nid = \"any-main\"\nissuer = \"github\"\nagent = \"ci-runner\"\n[federation.claims]\nref = \"refs/heads/main\"\n",
        platform_policy(&github, &gitlab, &k8s)
    );
    let app = TestApp::spawn_with(AppOptions { extra_policy: extra, ..AppOptions::default() }).await;
    let p = Platforms { github, gitlab, k8s, app };
    p.wait_loaded().await;
    let r = p.jwt_bearer(&p.github.sign(&p.github_claims(), "rsa-1"), DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("ambiguous"), "{}", r.text);
}

/// A rule that maps to a disabled agent, and client authentication naming another agent.
#[tokio::test]
async fn disabled_agent_and_mismatched_client_are_refused() {
    let p = platforms().await;
    let t = p.github.sign(&with(p.github_claims(), "repository_id", json!("555")), "rsa-1");
    let r = p.jwt_bearer(&t, DOCS).await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("disabled"), "{}", r.text);
    let t = p.github.sign(&p.github_claims(), "rsa-1");
    let r = p
        .app
        .post_token(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &t),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &p.app.assertion("bot").sign()),
            ("resource", DOCS),
        ])
        .await;
    r.assert_error(400, "invalid_grant");
    assert!(description(&r).contains("not to the authenticated client"), "{}", r.text);
}

/// A platform token as `access_token`-typed subject without an actor is not federation.
#[tokio::test]
async fn platform_token_as_access_token_subject_is_refused() {
    let p = platforms().await;
    let t = p.github.sign(&p.github_claims(), "rsa-1");
    let r = p.exchange(&t, TT_ACCESS_TOKEN, DOCS).await;
    r.assert_error(400, "invalid_request");
}
