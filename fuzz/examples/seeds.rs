//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from the request shapes real clients
//! send (DESIGN.md, "What real clients do"):
//! * the MCP Python SDK (`PrivateKeyJWTOAuthProvider`) and TypeScript SDK
//!   (`PrivateKeyJwtProvider`): header `{alg, typ: "JWT"}` without `kid`, `iss = sub =
//!   client_id`, `aud` = the issuer, `exp = iat + 300`, a UUID `jti`; form fields
//!   `grant_type, client_assertion_type, client_assertion, resource, scope` (one SDK sends
//!   no `scope`);
//! * openid-client: a `kid`, `nbf`, a 60 s lifetime, `client_id` in the body too;
//! * Authlib: the token endpoint URL as `aud`, a 3600 s lifetime (refused by default);
//! * GitHub Actions' OIDC token, a user's token from an IdP, an ID-JAG, our own access tokens.
//!
//! All signed with the fixed keys at the fixed time of the targets (`fuzz/src/lib.rs`), so
//! they stay valid. Run in `fuzz/`: `cargo run --example seeds` (any toolchain).

use agent_sts::crypto::{b64url_decode, Alg, SigningKey};
use agent_sts::mint::{Act, MintSpec, TokenIssuer};
use agent_sts::protocol::ScopeSet;
use agent_sts_fuzz::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

struct Corpus {
    root: PathBuf,
    count: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
        self.count += 1;
    }
}

/// A UUID-shaped `jti` (the SDKs use uuid4), fixed per seed.
fn uuid(n: u32) -> String {
    format!("6f1c2a9e-{:04x}-4d3b-9f0e-5a7c3e2b{:04x}", n, n.wrapping_mul(7919) & 0xffff)
}

fn header(k: K, typ: Option<&str>, kid: bool) -> Value {
    let mut h = json!({"alg": k.key().alg.as_str()});
    if let Some(t) = typ {
        h["typ"] = json!(t);
    }
    if kid {
        h["kid"] = json!(k.key().name);
    }
    h
}

/// The MCP SDKs' client assertion.
fn sdk_claims(agent: &str, n: u32) -> Value {
    json!({"iss": agent, "sub": agent, "aud": ISSUER, "exp": NOW + 300, "iat": NOW, "jti": uuid(n)})
}

/// openid-client's: kid, nbf, 60 s.
fn openid_client_claims(agent: &str, n: u32) -> Value {
    json!({"iss": agent, "sub": agent, "aud": ISSUER, "jti": uuid(n), "iat": NOW, "nbf": NOW, "exp": NOW + 60})
}

/// Authlib's: the token endpoint as aud, an hour.
fn authlib_claims(agent: &str, n: u32) -> Value {
    json!({"iss": agent, "sub": agent, "aud": format!("{ISSUER}/token"), "iat": NOW, "exp": NOW + 3600, "jti": uuid(n)})
}

/// GitHub Actions' OIDC token for a deploy workflow on main.
fn github_claims(n: u32) -> Value {
    json!({
        "jti": uuid(n), "sub": "repo:acme/infra:ref:refs/heads/main", "aud": ISSUER,
        "ref": "refs/heads/main", "sha": "d6e1f8a3", "repository": "acme/infra",
        "repository_owner": "acme", "repository_owner_id": "1234567", "run_id": "7001",
        "run_number": "12", "run_attempt": "1", "repository_visibility": "private",
        "repository_id": "89012345", "actor_id": "42", "actor": "octocat", "workflow": "deploy",
        "head_ref": "", "base_ref": "", "event_name": "push", "ref_protected": "true",
        "ref_type": "branch", "workflow_ref": "acme/infra/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/infra/.github/workflows/deploy.yml@refs/heads/main",
        "environment": "production", "iss": PLATFORM, "nbf": NOW - 5, "exp": NOW + 300, "iat": NOW
    })
}

/// A staff user's access token from the IdP (Keycloak-like), which agent-es256 may act for.
fn user_claims(n: u32) -> Value {
    json!({
        "iss": IDP, "sub": "user-8d2f", "aud": ISSUER, "exp": NOW + 600, "iat": NOW - 10,
        "jti": uuid(n), "scope": "read write", "groups": ["staff", "readers"],
        "email": "ada@acme.example", "may_act": {"sub": "agent-es256"}
    })
}

/// An ID-JAG (typ oauth-id-jag+jwt) for agent-es256 to reach docs.
fn id_jag_claims(n: u32) -> Value {
    json!({
        "iss": IDP, "sub": "user-8d2f", "aud": ISSUER, "client_id": "agent-es256",
        "jti": uuid(n), "exp": NOW + 300, "iat": NOW, "resource": DOCS, "scope": "read"
    })
}

fn signed(k: K, h: &Value, c: &Value) -> JwtInput<'static> {
    let header: &'static [u8] = Box::leak(h.to_string().into_bytes().into_boxed_slice());
    let payload: &'static [u8] = Box::leak(c.to_string().into_bytes().into_boxed_slice());
    JwtInput::Signed { key: k, damage: None, header, payload }
}

/// A token split back into the signed input (header and payload bytes as they were signed).
fn resigned(k: K, token: &str) -> JwtInput<'static> {
    let mut parts = token.split('.');
    let h = b64url_decode(parts.next().expect("header")).expect("b64");
    let p = b64url_decode(parts.next().expect("payload")).expect("b64");
    JwtInput::Signed {
        key: k,
        damage: None,
        header: Box::leak(h.into_boxed_slice()),
        payload: Box::leak(p.into_boxed_slice()),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn with_prefix(prefix: &[u8], input: &JwtInput<'_>) -> Vec<u8> {
    [prefix, &input.encode()].concat()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut c = Corpus { root, count: 0 };
    let agents = [K::AgentEs256, K::AgentEs384, K::AgentEddsa, K::AgentRs256, K::AgentPs256];
    let id = |k: K| k.trusted_for().expect("agent");

    // Our own access tokens, minted by the broker's real mint.
    let broker_key =
        SigningKey::from_pem(Alg::ES256, K::Broker.key().pem.as_bytes(), Some("broker")).expect("key");
    let tokens = TokenIssuer::new(ISSUER.into(), broker_key, vec![]).expect("issuer");
    let rw = ScopeSet::parse("read write").expect("scope");
    let ask = ScopeSet::parse("ask read").expect("scope");
    let own_docs = tokens
        .mint(&MintSpec {
            sub: "agent-es256",
            aud: DOCS,
            client_id: "agent-es256",
            scopes: &rw,
            iat: NOW,
            exp: NOW + 300,
            act: None,
            entitlement: Some("agent:agent-es256"),
        })
        .expect("mint")
        .token;
    // A token for svc-b on behalf of a user, with agent-es256 as actor: agent-b (the operator of
    // svc-b) may carry it one hop further.
    let act = Act { sub: "agent-es256".into(), act: None };
    let own_delegated = tokens
        .mint(&MintSpec {
            sub: "user-8d2f",
            aud: SVC_B,
            client_id: "agent-es256",
            scopes: &ask,
            iat: NOW,
            exp: NOW + 300,
            act: Some(&act),
            entitlement: Some("delegation:assistant-for-staff"),
        })
        .expect("mint")
        .token;

    // ---- form -------------------------------------------------------------------------------
    let sdk =
        sign_json(K::AgentEs256, &header(K::AgentEs256, Some("JWT"), false), &sdk_claims("agent-es256", 1));
    let oc =
        sign_json(K::AgentEs256, &header(K::AgentEs256, None, true), &openid_client_claims("agent-es256", 2));
    let gh = sign_json(K::PlatformRs256, &header(K::PlatformRs256, Some("JWT"), true), &github_claims(3));
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", &sdk),
    ];
    c.put(
        "form",
        "python-sdk-client-credentials",
        form(&[&cc[..], &[("resource", DOCS), ("scope", "read write")]].concat()).as_bytes(),
    );
    c.put(
        "form",
        "typescript-sdk-client-credentials",
        form(&[
            ("grant_type", "client_credentials"),
            ("resource", DOCS),
            ("scope", "read"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &sdk),
        ])
        .as_bytes(),
    );
    c.put("form", "sdk-without-scope", form(&[&cc[..], &[("resource", DOCS)]].concat()).as_bytes());
    c.put(
        "form",
        "openid-client-with-client-id",
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "agent-es256"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &oc),
            ("resource", DOCS),
            ("scope", "read"),
        ])
        .as_bytes(),
    );
    c.put(
        "form",
        "jwt-bearer",
        form(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", &sdk),
            ("resource", TICKETS),
            ("scope", "read"),
        ])
        .as_bytes(),
    );
    c.put(
        "form",
        "jwt-bearer-github-actions",
        form(&[("grant_type", GRANT_JWT_BEARER), ("assertion", &gh), ("resource", DOCS)]).as_bytes(),
    );
    c.put(
        "form",
        "token-exchange-access-token",
        form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &own_docs),
            ("subject_token_type", TT_ACCESS_TOKEN),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &sdk),
            ("resource", TICKETS),
            ("scope", "read"),
        ])
        .as_bytes(),
    );
    c.put(
        "form",
        "token-exchange-actor-token",
        form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &own_docs),
            ("subject_token_type", TT_JWT),
            ("actor_token", &sdk),
            ("actor_token_type", TT_JWT),
            ("audience", "tickets"),
            ("audience", TICKETS),
            ("requested_token_type", TT_ACCESS_TOKEN),
        ])
        .as_bytes(),
    );
    c.put(
        "form",
        "repeated-grant-type",
        b"grant_type=client_credentials&grant_type=client_credentials&scope=read",
    );
    c.put("form", "client-secret", b"grant_type=client_credentials&client_id=a&client_secret=s");
    c.put("form", "percent-and-plus", b"grant_type=client%5Fcredentials&scope=read+write%20%20admin&resource=https%3A%2F%2Fdocs.mcp.fuzz%2Fmcp%23frag&resource=");

    // ---- assertion: [flags][JwtInput] -----------------------------------------------------------
    for (i, k) in agents.into_iter().enumerate() {
        let n = 10 + i as u32;
        let input = signed(k, &header(k, Some("JWT"), false), &sdk_claims(id(k), n));
        c.put("assertion", &format!("sdk-{}", k.key().alg), &with_prefix(&[0], &input));
        let (token, _) = input.token();
        c.put(
            "assertion",
            &format!("sdk-{}-raw", k.key().alg),
            &with_prefix(&[0], &JwtInput::Raw(token.as_bytes())),
        );
    }
    let a = |k: K, h: Value, cl: Value| signed(k, &h, &cl);
    c.put(
        "assertion",
        "openid-client",
        &with_prefix(
            &[1],
            &a(K::AgentEs256, header(K::AgentEs256, None, true), openid_client_claims("agent-es256", 20)),
        ),
    );
    c.put(
        "assertion",
        "authlib-refused",
        &with_prefix(
            &[0],
            &a(K::AgentEs256, header(K::AgentEs256, Some("JWT"), false), authlib_claims("agent-es256", 21)),
        ),
    );
    c.put(
        "assertion",
        "rfc7523bis-typ",
        &with_prefix(
            &[0],
            &a(
                K::AgentEs256,
                header(K::AgentEs256, Some("client-authentication+jwt"), true),
                sdk_claims("agent-es256", 22),
            ),
        ),
    );
    c.put(
        "assertion",
        "stranger-key",
        &with_prefix(
            &[0],
            &a(K::Stranger, header(K::Stranger, Some("JWT"), false), sdk_claims("agent-es256", 23)),
        ),
    );
    c.put(
        "assertion",
        "other-agents-key",
        &with_prefix(
            &[2],
            &a(K::AgentB, header(K::AgentB, Some("JWT"), false), sdk_claims("agent-es256", 24)),
        ),
    );
    c.put("assertion", "aud-array-with-evil", &with_prefix(&[0], &a(K::AgentEs256, header(K::AgentEs256, Some("JWT"), false), json!({"iss": "agent-es256", "sub": "agent-es256", "aud": [ISSUER, "https://evil.example"], "exp": NOW + 300, "iat": NOW, "jti": uuid(25)}))));

    // ---- ecdsa: [key][mode]... --------------------------------------------------------------
    for (i, k) in [K::AgentEs256, K::AgentEs384].into_iter().enumerate() {
        let t = k
            .key()
            .signer
            .sign_compact("eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9", br#"{"iss":"agent"}"#)
            .expect("sign");
        let sig = b64url_decode(t.rsplit_once('.').expect("parts").1).expect("b64");
        c.put("ecdsa", &format!("valid-{}", k.key().alg), &[&[i as u8, 0][..], &sig].concat());
        let mut ops = vec![1u8, 11, b'e', b'y', b'J', b'h', b'b', b'G', b'c', b'i', b'O', b'i', b'J'];
        c.put("ecdsa", &format!("sign-{}", k.key().alg), &[&[i as u8, 1][..], &ops].concat());
        ops.extend_from_slice(&[0, 40, 0x80, 3, 0, 0]);
        c.put("ecdsa", &format!("sign-flip-prepend-{}", k.key().alg), &[&[i as u8, 1][..], &ops].concat());
    }
    for (i, name) in [(4u8, "EdDSA"), (5, "RS256"), (6, "PS256")] {
        c.put("ecdsa", &format!("sign-{name}"), &[i, 1, 4, b'a', b'b', b'c', b'd']);
    }

    // ---- policy: TOML, files split at NUL -------------------------------------------------------
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = vec![policies.join("example.toml")];
    for e in std::fs::read_dir(policies.join("examples")).expect("policies/examples") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        let name = f.file_stem().expect("name").to_string_lossy().into_owned();
        c.put("policy", &name, &std::fs::read(&f).expect("read a policy"));
    }
    let fixture_policy = policy_toml();
    c.put("policy", "fuzz-fixture", fixture_policy.as_bytes());
    let split = fixture_policy.find("[[agent]]").expect("agents");
    let (servers, rest) = fixture_policy.split_at(split);
    c.put(
        "policy",
        "fuzz-fixture-two-files",
        [servers.as_bytes(), b"\0", rest.as_bytes()].concat().as_slice(),
    );

    // ---- issued: [use][JwtInput] ----------------------------------------------------------------
    c.put(
        "issued",
        "github-actions-rs256",
        &with_prefix(
            &[0],
            &signed(K::PlatformRs256, &header(K::PlatformRs256, Some("JWT"), true), &github_claims(30)),
        ),
    );
    c.put(
        "issued",
        "github-actions-es256",
        &with_prefix(
            &[0],
            &signed(K::PlatformEs256, &header(K::PlatformEs256, Some("JWT"), true), &github_claims(31)),
        ),
    );
    c.put(
        "issued",
        "idp-user-token",
        &with_prefix(&[0], &signed(K::Idp, &header(K::Idp, Some("at+jwt"), true), &user_claims(32))),
    );
    c.put(
        "issued",
        "idp-id-token",
        &with_prefix(&[1], &signed(K::Idp, &header(K::Idp, None, true), &user_claims(33))),
    );
    c.put(
        "issued",
        "id-jag",
        &with_prefix(
            &[2],
            &signed(K::Idp, &header(K::Idp, Some("oauth-id-jag+jwt"), true), &id_jag_claims(34)),
        ),
    );
    c.put(
        "issued",
        "platform-claims-idp-key",
        &with_prefix(&[0], &signed(K::Idp, &header(K::Idp, Some("JWT"), true), &github_claims(35))),
    );

    // ---- exchange: [grant, subject type, client, actor, target, scope, requested][JwtInput] ------
    // grant: 0 token exchange, 3 jwt-bearer. subject type: 0 access_token, 1 jwt, 2 id_token.
    // client/actor: 0 none, 1 agent-es256, 2 agent-b. target: 1 docs, 2 tickets, 3 svc-b,
    // 4 audience docs, 5 audience svc-b. scope: 0 none, 1 read, 2 read write, 3 ask.
    c.put(
        "exchange",
        "rescope-own-token",
        &with_prefix(&[0, 0, 1, 0, 2, 1, 0], &resigned(K::Broker, &own_docs)),
    );
    c.put(
        "exchange",
        "own-token-as-jwt-actor-token",
        &with_prefix(&[0, 1, 0, 1, 4, 2, 1], &resigned(K::Broker, &own_docs)),
    );
    c.put(
        "exchange",
        "operator-carries-delegated-token",
        &with_prefix(&[0, 0, 2, 0, 1, 1, 0], &resigned(K::Broker, &own_delegated)),
    );
    c.put(
        "exchange",
        "own-token-client-and-actor",
        &with_prefix(&[0, 0, 1, 1, 2, 1, 2], &resigned(K::Broker, &own_docs)),
    );
    c.put(
        "exchange",
        "federated-subject",
        &with_prefix(
            &[0, 1, 0, 0, 1, 1, 0],
            &signed(K::PlatformRs256, &header(K::PlatformRs256, Some("JWT"), true), &github_claims(40)),
        ),
    );
    c.put(
        "exchange",
        "federated-jwt-bearer",
        &with_prefix(
            &[3, 0, 0, 0, 1, 0, 0],
            &signed(K::PlatformEs256, &header(K::PlatformEs256, Some("JWT"), true), &github_claims(41)),
        ),
    );
    c.put(
        "exchange",
        "on-behalf-of-user",
        &with_prefix(
            &[0, 0, 0, 1, 1, 2, 0],
            &signed(K::Idp, &header(K::Idp, Some("at+jwt"), true), &user_claims(42)),
        ),
    );
    c.put(
        "exchange",
        "on-behalf-of-id-token",
        &with_prefix(&[0, 2, 1, 0, 1, 1, 0], &signed(K::Idp, &header(K::Idp, None, true), &user_claims(43))),
    );
    c.put(
        "exchange",
        "id-jag-redeemed",
        &with_prefix(
            &[3, 0, 1, 0, 1, 1, 0],
            &signed(K::Idp, &header(K::Idp, Some("oauth-id-jag+jwt"), true), &id_jag_claims(44)),
        ),
    );
    c.put(
        "exchange",
        "own-assertion-as-subject",
        &with_prefix(
            &[0, 1, 0, 0, 1, 1, 0],
            &signed(
                K::AgentEs256,
                &header(K::AgentEs256, Some("JWT"), false),
                &sdk_claims("agent-es256", 45),
            ),
        ),
    );
    c.put(
        "exchange",
        "stranger-signs-our-claims",
        &with_prefix(&[0, 0, 1, 0, 2, 1, 0], &resigned(K::Stranger, &own_docs)),
    );

    // ---- differential: [key][JwtInput] --------------------------------------------------------
    for (i, k) in agents.into_iter().enumerate() {
        let input = signed(k, &header(k, Some("JWT"), false), &sdk_claims(id(k), 50 + i as u32));
        c.put("differential", &format!("sdk-{}", k.key().alg), &with_prefix(&[k.byte()], &input));
    }
    c.put(
        "differential",
        "github-actions",
        &with_prefix(
            &[K::PlatformRs256.byte()],
            &signed(K::PlatformRs256, &header(K::PlatformRs256, Some("JWT"), true), &github_claims(60)),
        ),
    );
    c.put(
        "differential",
        "own-access-token",
        &with_prefix(&[K::Broker.byte()], &resigned(K::Broker, &own_docs)),
    );
    let k = K::AgentEs256;
    let raw = |h: &str, p: &str| JwtInput::Signed {
        key: k,
        damage: None,
        header: Box::leak(h.as_bytes().to_vec().into_boxed_slice()),
        payload: Box::leak(p.as_bytes().to_vec().into_boxed_slice()),
    };
    let p = r#"{"iss":"agent-es256","sub":"agent-es256","aud":"https://sts.fuzz.example","exp":1800000300,"iat":1800000000,"jti":"j"}"#;
    for (name, h, pl) in [
        ("duplicate-alg", r#"{"alg":"ES256","alg":"ES256"}"#, p),
        ("duplicate-claim", r#"{"alg":"ES256"}"#, r#"{"iss":"a","iss":"b","exp":1800000300}"#),
        ("null-kid", r#"{"alg":"ES256","kid":null}"#, p),
        // RFC 7515 section 4: members not understood are ignored, whatever their value;
        // jsonwebtoken refuses non-strings there (found by this target).
        ("unknown-member-not-a-string", r#"{"alg":"ES256","rcit":["exp"]}"#, p),
        ("unknown-member-null", r#"{"alg":"ES256","x":null}"#, p),
        ("cty-jwt", r#"{"alg":"ES256","cty":"JWT"}"#, p),
        ("crit", r#"{"alg":"ES256","crit":["exp"]}"#, p),
        ("enc", r#"{"alg":"ES256","enc":"A128GCM"}"#, p),
        ("null-nbf", r#"{"alg":"ES256"}"#, r#"{"iss":"a","nbf":null}"#),
        ("float-exp", r#"{"alg":"ES256"}"#, r#"{"iss":"a","exp":1800000300.5}"#),
        ("array-payload", r#"{"alg":"ES256"}"#, r#"[1,2]"#),
        ("lone-surrogate-in-header", r#"{"alg":"ES256","x":"\ud800"}"#, p),
        ("escaped-name", r#"{"alg":"ES256","\u006bid":"agent-es256"}"#, p),
        ("unicode", r#"{"alg":"ES256","typ":"JWT"}"#, r#"{"iss":"agent-es256","name":"Zoë 😀"}"#),
    ] {
        c.put("differential", name, &with_prefix(&[k.byte()], &raw(h, pl)));
    }
    c.put(
        "differential",
        "raw-not-compact",
        &with_prefix(&[k.byte()], &JwtInput::Raw(b"eyJhbGciOiJFUzI1NiJ9.e30")),
    );

    println!("wrote {} seeds under {}", c.count, c.root.display());
}
