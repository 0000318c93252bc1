//! Fixtures shared by the benchmark binaries: agent keys, a policy that registers them, and
//! assertions and form bodies shaped like the ones the MCP SDKs send (DESIGN.md, "What real
//! clients do"): header `{alg, typ: "JWT"}` without `kid`, `iss = sub = client_id`,
//! `aud` = the issuer, a random `jti`, form fields `grant_type, client_assertion_type,
//! client_assertion, resource, scope`.
//!
//! Not a bench target itself: cargo discovers only `benches/*.rs` and `benches/*/main.rs`.

#![allow(dead_code)] // each bench binary uses a different part

use agent_sts::crypto::{self, Alg, SigningKey};
use agent_sts::protocol::{ASSERTION_TYPE_JWT_BEARER, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE};

/// The two MCP servers of the bench policy; every agent may reach both with `read write`.
pub const DOCS: &str = "https://docs.mcp.example/mcp";
pub const TICKETS: &str = "https://tickets.mcp.example/mcp";
pub const SCOPE: &str = "read write";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An agent with its private key (to sign assertions) and its public JWK (for the policy).
pub struct AgentKey {
    pub id: String,
    pub alg: Alg,
    pub private_pem: String,
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
    signer: SigningKey,
    header: String,
}

impl AgentKey {
    pub fn generate(id: &str, alg: Alg) -> AgentKey {
        let pair = crypto::generate_key_pair(alg, None).expect("generate an agent key pair");
        let signer =
            SigningKey::from_pem(alg, pair.private_pem.0.as_bytes(), None).expect("load the agent key");
        // The SDKs send no kid: the broker picks the agent's only key for the alg.
        let header = signer.encoded_header("JWT", false);
        AgentKey {
            id: id.to_string(),
            alg,
            private_pem: pair.private_pem.0,
            public_jwk: pair.public_jwk,
            signer,
            header,
        }
    }

    /// A client assertion (RFC 7523 §3) for `aud`, valid from `now` for `lifetime` seconds.
    pub fn assertion(&self, aud: &str, now: i64, lifetime: i64) -> String {
        let claims = serde_json::json!({
            "iss": self.id,
            "sub": self.id,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid_v4(),
        });
        self.signer.sign_compact(&self.header, claims.to_string().as_bytes()).expect("sign an assertion")
    }
}

/// A random UUID (version 4) string: the SDKs' `jti` (Python `uuid.uuid4()`, JS
/// `crypto.randomUUID()`).
pub fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    let h = format!(
        "{:032x}",
        (u128::from_be_bytes(b) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    );
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A policy (TOML) with the two servers and the given agents, each allowed on both.
pub fn policy_toml(agents: &[&AgentKey]) -> String {
    let mut out = format!(
        "[[server]]\nid = \"docs\"\nresource = \"{DOCS}\"\nscopes = [\"read\", \"write\"]\n\n\
         [[server]]\nid = \"tickets\"\nresource = \"{TICKETS}\"\nscopes = [\"read\", \"write\"]\n\n"
    );
    for a in agents {
        let jwk: toml::Value =
            serde_json::from_value(serde_json::Value::Object(a.public_jwk.clone())).expect("JWK as TOML");
        out.push_str(&format!(
            "[[agent]]\nid = \"{}\"\nkeys = [{jwk}]\n\
             [[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n\
             [[agent.allow]]\nserver = \"tickets\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n\n",
            a.id
        ));
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `client_credentials` with `private_key_jwt`, as the MCP SDKs send it.
pub fn client_credentials_body(assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
        ("resource", resource),
        ("scope", SCOPE),
    ])
}

/// RFC 7523 §2.1: the assertion is the grant; no client authentication.
pub fn jwt_bearer_body(assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", GRANT_JWT_BEARER),
        ("assertion", assertion),
        ("resource", resource),
        ("scope", SCOPE),
    ])
}

/// RFC 8693: re-scope an access token of ours for another server, the agent authenticated
/// by a fresh client assertion.
pub fn token_exchange_body(subject_token: &str, assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
        ("resource", resource),
        ("scope", "read"),
    ])
}
