//! What the fuzz targets share: fixed keys (committed in `fuzz/keys/`, test keys only), a
//! fixed clock, a policy that registers the keys, a broker built the way
//! `benches/hot_path.rs` builds one (memory replay store, inline issuer keys: no I/O), the
//! input format of the targets that sign what they get, and independent checks with
//! `jsonwebtoken` (RustCrypto primitives, no OpenSSL).
//!
//! Seeds: `cargo run --example seeds` (in `fuzz/`) writes `corpus/<target>/` from the request
//! shapes of the official MCP SDKs (DESIGN.md, "What real clients do").

use agent_sts::broker::Broker;
use agent_sts::client_auth::AssertionRules;
use agent_sts::clock::{Clock, SharedClock};
use agent_sts::crypto::{b64url_decode, b64url_encode, Alg, SigningKey, VerifyingKey};
use agent_sts::issuers::Issuers;
use agent_sts::mint::TokenIssuer;
use agent_sts::policy::{Lifetimes, Policy};
use agent_sts::protocol::is_description_char;
use agent_sts::replay::{AnyReplayStore, MemoryStore};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// The fixed "now" of every target (2027-01-15): inputs stay valid forever, and a run is
/// deterministic.
pub const NOW: i64 = 1_800_000_000;
/// This broker's issuer identifier: the `aud` of assertions, the `iss` of our tokens.
pub const ISSUER: &str = "https://sts.fuzz.example";
/// A CI platform (GitHub Actions' issuer), single use, inline keys.
pub const PLATFORM: &str = "https://token.actions.githubusercontent.com";
/// A users' identity provider: on-behalf-of subjects and ID-JAGs, inline keys.
pub const IDP: &str = "https://idp.fuzz.example";
pub const DOCS: &str = "https://docs.mcp.fuzz/mcp";
pub const TICKETS: &str = "https://tickets.mcp.fuzz/mcp";
pub const SVC_B: &str = "https://b.mcp.fuzz/mcp";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TT_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The clock every target uses.
pub struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        NOW * 1000
    }
}

/// The fixed keys. `kid` = the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K {
    AgentEs256,
    AgentEs384,
    AgentEddsa,
    AgentRs256,
    AgentPs256,
    AgentB,
    /// Registered nowhere.
    Stranger,
    PlatformRs256,
    PlatformEs256,
    Idp,
    /// The broker's token signing key.
    Broker,
}

pub const ALL_KEYS: [K; 11] = [
    K::AgentEs256,
    K::AgentEs384,
    K::AgentEddsa,
    K::AgentRs256,
    K::AgentPs256,
    K::AgentB,
    K::Stranger,
    K::PlatformRs256,
    K::PlatformEs256,
    K::Idp,
    K::Broker,
];

pub struct Key {
    pub k: K,
    pub name: &'static str,
    pub alg: Alg,
    pub signer: SigningKey,
    pub verifier: VerifyingKey,
    pub jwk: Map<String, Value>,
    pub pem: &'static str,
}

impl K {
    pub fn from_byte(b: u8) -> K {
        ALL_KEYS[usize::from(b) % ALL_KEYS.len()]
    }

    pub fn byte(self) -> u8 {
        ALL_KEYS.iter().position(|k| *k == self).unwrap_or(0) as u8
    }

    pub fn key(self) -> &'static Key {
        &keys()[usize::from(self.byte())]
    }

    /// The `iss` this key is trusted for, if any: an agent's id, a trusted issuer, us.
    pub fn trusted_for(self) -> Option<&'static str> {
        match self {
            K::AgentEs256 => Some("agent-es256"),
            K::AgentEs384 => Some("agent-es384"),
            K::AgentEddsa => Some("agent-eddsa"),
            K::AgentRs256 => Some("agent-rs256"),
            K::AgentPs256 => Some("agent-ps256"),
            K::AgentB => Some("agent-b"),
            K::Stranger => None,
            K::PlatformRs256 | K::PlatformEs256 => Some(PLATFORM),
            K::Idp => Some(IDP),
            K::Broker => Some(ISSUER),
        }
    }
}

/// The keys trusted for `iss` (empty for anyone else).
pub fn keys_trusted_for(iss: &str) -> Vec<&'static Key> {
    ALL_KEYS.iter().filter(|k| k.trusted_for() == Some(iss)).map(|k| k.key()).collect()
}

pub fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pems: [(&str, Alg, &str); 11] = [
            ("agent-es256", Alg::ES256, include_str!("../keys/agent-es256.pem")),
            ("agent-es384", Alg::ES384, include_str!("../keys/agent-es384.pem")),
            ("agent-eddsa", Alg::EdDSA, include_str!("../keys/agent-eddsa.pem")),
            ("agent-rs256", Alg::RS256, include_str!("../keys/agent-rs256.pem")),
            ("agent-ps256", Alg::PS256, include_str!("../keys/agent-ps256.pem")),
            ("agent-b", Alg::ES256, include_str!("../keys/agent-b.pem")),
            ("stranger", Alg::ES256, include_str!("../keys/stranger.pem")),
            ("platform-rs256", Alg::RS256, include_str!("../keys/platform-rs256.pem")),
            ("platform-es256", Alg::ES256, include_str!("../keys/platform-es256.pem")),
            ("idp-es256", Alg::ES256, include_str!("../keys/idp-es256.pem")),
            ("broker", Alg::ES256, include_str!("../keys/broker.pem")),
        ];
        pems.iter()
            .zip(ALL_KEYS)
            .map(|(&(name, alg, pem), k)| {
                let signer = SigningKey::from_pem(alg, pem.as_bytes(), Some(name)).expect("fixed key loads");
                let jwk = signer.public_jwk().clone();
                let verifier = VerifyingKey::from_jwk(&jwk).expect("public JWK loads");
                Key { k, name, alg, signer, verifier, jwk, pem }
            })
            .collect()
    })
}

fn jwk_toml(jwk: &Map<String, Value>) -> String {
    let members: Vec<String> = jwk
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| format!("{k} = {}", Value::String(s.to_string()))))
        .collect();
    format!("{{ {} }}", members.join(", "))
}

/// The policy of the targets: five agents (one per algorithm) and agent-b, which operates
/// server svc-b; a CI platform mapped to agent-es256 by a GitHub-style rule; an identity
/// provider whose staff users agent-es256 may act for, and which issues ID-JAGs.
pub fn policy_toml() -> String {
    let k = |k: K| jwk_toml(&k.key().jwk);
    let docs_read = "[[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\"]\ndefault_scopes = [\"read\"]\n";
    format!(
        r#"[[server]]
id = "docs"
resource = "{DOCS}"
scopes = ["read", "write"]
max_token_lifetime_secs = 900

[[server]]
id = "tickets"
resource = "{TICKETS}"
scopes = ["read", "write", "admin"]

[[server]]
id = "svc-b"
resource = "{SVC_B}"
scopes = ["ask", "read"]
operator = "agent-b"

[[agent]]
id = "agent-es256"
keys = [{es256}]
[[agent.allow]]
server = "docs"
scopes = ["read", "write"]
default_scopes = ["read"]
[[agent.allow]]
server = "tickets"
scopes = ["read", "write"]
default_scopes = ["read"]
[[agent.allow]]
server = "svc-b"
scopes = ["ask", "read"]
default_scopes = ["ask"]

[[agent]]
id = "agent-es384"
keys = [{es384}]
{docs_read}
[[agent]]
id = "agent-eddsa"
keys = [{eddsa}]
{docs_read}
[[agent]]
id = "agent-rs256"
keys = [{rs256}]
{docs_read}
[[agent]]
id = "agent-ps256"
keys = [{ps256}]
{docs_read}
[[agent]]
id = "agent-b"
keys = [{b}]
[[agent.allow]]
server = "docs"
scopes = ["read"]
default_scopes = ["read"]

[[issuer]]
id = "platform"
issuer = "{PLATFORM}"
keys = [{platform_rs}, {platform_es}]
algorithms = ["RS256", "ES256"]
max_token_age_secs = 600

[[federation]]
id = "deploy"
issuer = "platform"
agent = "agent-es256"
[federation.claims]
repository_owner_id = "1234567"
repository_id = "89012345"
ref = "refs/heads/main"
job_workflow_ref = {{ glob = "acme/infra/.github/workflows/deploy.yml@*" }}

[[issuer]]
id = "idp"
issuer = "{IDP}"
keys = [{idp}]
algorithms = ["ES256"]
single_use = false
id_jag = true

[[delegation]]
id = "assistant-for-staff"
issuer = "idp"
actor = "agent-es256"
limit_to_subject_scopes = true
[delegation.subject]
groups = {{ contains = "staff" }}
  [[delegation.allow]]
  server = "docs"
  scopes = ["read", "write"]
  [[delegation.allow]]
  server = "svc-b"
  scopes = ["ask", "read"]
"#,
        es256 = k(K::AgentEs256),
        es384 = k(K::AgentEs384),
        eddsa = k(K::AgentEddsa),
        rs256 = k(K::AgentRs256),
        ps256 = k(K::AgentPs256),
        b = k(K::AgentB),
        platform_rs = k(K::PlatformRs256),
        platform_es = k(K::PlatformEs256),
        idp = k(K::Idp),
    )
}

/// What every target shares, built once per process.
pub struct Fixture {
    pub policy: Arc<Policy>,
    pub issuers: Arc<Issuers>,
    pub rules: AssertionRules,
    pub clock: SharedClock,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let policy = Policy::from_sources(&[("fuzz.toml".into(), policy_toml())]).expect("fuzz policy loads");
        let clock: SharedClock = Arc::new(FixedClock);
        // Inline keys only and never started: nothing is fetched, ever.
        let issuers =
            Issuers::new(&Default::default(), clock.clone(), &policy.issuers).expect("trusted issuers");
        Fixture {
            rules: agent_sts::startup::assertion_rules(ISSUER, &agent_sts::config::TokenSettings::default()),
            policy: Arc::new(policy),
            issuers: Arc::new(issuers),
            clock,
        }
    })
}

/// An empty replay store on the fixed clock: one per input, so every run of an input is
/// the same.
pub fn fresh_store() -> MemoryStore {
    MemoryStore::new(1024, Arc::new(FixedClock))
}

/// A broker with a fresh replay store (one per input).
pub fn broker() -> Broker {
    let f = fixture();
    let key = SigningKey::from_pem(Alg::ES256, K::Broker.key().pem.as_bytes(), Some("broker")).expect("key");
    let replay = Arc::new(AnyReplayStore::Memory(fresh_store()));
    Broker {
        policy: f.policy.clone(),
        tokens: TokenIssuer::new(ISSUER.into(), key, vec![]).expect("token issuer"),
        shared: Arc::new(agent_sts::broker::Shared::new(false, replay.clone(), f.clock.clone())),
        replay,
        issuers: f.issuers.clone(),
        clock: f.clock.clone(),
        rules: f.rules.clone(),
        lifetimes: Lifetimes { default_secs: 300, max_secs: 3600 },
    }
}

/// Run a future to completion (the memory store and inline issuers never wait on I/O).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

// ---- The input of targets that sign what they get --------------------------------------------

/// A JWT the target builds from its input: either `raw` text as it came, or a header and a
/// payload (any bytes) signed with one of the fixed keys, then optionally damaged at one byte.
///
/// Encoding: `[mode]` then, for mode `0` (even), the raw token; for odd modes,
/// `[key][pos lo][pos hi][xor][header len lo][header len hi][header][payload]`.
#[derive(Debug, Clone)]
pub enum JwtInput<'a> {
    Raw(&'a [u8]),
    Signed { key: K, damage: Option<(usize, u8)>, header: &'a [u8], payload: &'a [u8] },
}

impl<'a> JwtInput<'a> {
    /// Decode from the front of `data`.
    pub fn decode(data: &'a [u8]) -> Option<JwtInput<'a>> {
        let (&mode, rest) = data.split_first()?;
        if mode % 2 == 0 {
            return Some(JwtInput::Raw(rest));
        }
        if rest.len() < 6 {
            return None;
        }
        let key = K::from_byte(rest[0]);
        let pos = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let xor = rest[3];
        let hlen = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
        let body = &rest[6..];
        let hlen = hlen.min(body.len());
        let (header, payload) = body.split_at(hlen);
        Some(JwtInput::Signed { key, damage: (xor != 0).then_some((pos, xor)), header, payload })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            JwtInput::Raw(t) => [&[0u8][..], t].concat(),
            JwtInput::Signed { key, damage, header, payload } => {
                let (pos, xor) = damage.map_or((0u16, 0u8), |(p, x)| (p as u16, x));
                let mut out = vec![1u8, key.byte()];
                out.extend_from_slice(&pos.to_le_bytes());
                out.push(xor);
                out.extend_from_slice(&(header.len() as u16).to_le_bytes());
                out.extend_from_slice(header);
                out.extend_from_slice(payload);
                out
            }
        }
    }

    /// The token text, and the key that signed it if the harness signed it.
    pub fn token(&self) -> (String, Option<K>) {
        match self {
            JwtInput::Raw(t) => (String::from_utf8_lossy(t).into_owned(), None),
            JwtInput::Signed { key, damage, header, payload } => {
                let mut t = sign(*key, header, payload).into_bytes();
                if let Some((pos, xor)) = damage {
                    let i = pos % t.len();
                    t[i] ^= xor;
                }
                (String::from_utf8_lossy(&t).into_owned(), Some(*key))
            }
        }
    }
}

/// `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)` with a fixed key.
pub fn sign(key: K, header: &[u8], payload: &[u8]) -> String {
    key.key().signer.sign_compact(&b64url_encode(header), payload).expect("signs")
}

/// A JSON header and claims, signed: the usual way seeds are built.
pub fn sign_json(key: K, header: &Value, claims: &Value) -> String {
    sign(key, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

// ---- Independent checks -------------------------------------------------------------------------

/// The same public key for jsonwebtoken.
pub fn decoding_key(key: &Key) -> jsonwebtoken::DecodingKey {
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(Value::Object(key.jwk.clone())).expect("jsonwebtoken reads our JWK");
    jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("jsonwebtoken key")
}

pub fn jwt_alg(alg: Alg) -> jsonwebtoken::Algorithm {
    match alg {
        Alg::ES256 => jsonwebtoken::Algorithm::ES256,
        Alg::ES384 => jsonwebtoken::Algorithm::ES384,
        Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Alg::RS256 => jsonwebtoken::Algorithm::RS256,
        Alg::PS256 => jsonwebtoken::Algorithm::PS256,
    }
}

/// Whether jsonwebtoken (RustCrypto) finds `token`'s signature valid under `key`: the
/// signature over everything before the last dot, nothing else.
pub fn signature_verifies(token: &str, key: &Key) -> bool {
    let Some((message, signature)) = token.rsplit_once('.') else { return false };
    thread_local! {
        static DK: Vec<jsonwebtoken::DecodingKey> = keys().iter().map(decoding_key).collect();
    }
    DK.with(|dk| {
        jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &dk[usize::from(key.k.byte())],
            jwt_alg(key.alg),
        )
        .unwrap_or(false)
    })
}

/// Header and payload as JSON, read leniently (serde_json: the last of duplicate members
/// wins), with no check of ours involved.
pub fn lenient_parts(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let h = b64url_decode(parts.next()?).ok()?;
    let p = b64url_decode(parts.next()?).ok()?;
    Some((serde_json::from_slice(&h).ok()?, serde_json::from_slice(&p).ok()?))
}

/// A NumericDate claim, floored (what the broker reads), leniently.
pub fn numeric(v: &Value, name: &str) -> Option<i64> {
    v.get(name)?.as_f64().map(|f| f.floor() as i64)
}

/// `aud` names exactly `expected` (a string, or an array of exactly that one string).
pub fn aud_is_exactly(claims: &Value, expected: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => a == expected,
        Some(Value::Array(a)) => a.len() == 1 && a[0].as_str() == Some(expected),
        _ => false,
    }
}

/// RFC 6749 section 5.2: every `error_description` stays within `%x20-21 / %x23-5B / %x5D-7E`.
pub fn assert_description_charset(e: &agent_sts::protocol::OAuthError) {
    assert!(
        e.description.chars().all(is_description_char),
        "error_description outside the RFC 6749 section 5.2 set: {:?}",
        e.description
    );
}

/// With `AGENT_STS_FUZZ_TRACE=1`, print what a target decided (to check what the seeds reach:
/// `AGENT_STS_FUZZ_TRACE=1 cargo +nightly fuzz run -s none exchange corpus/exchange -- -runs=0`).
pub fn trace(what: std::fmt::Arguments<'_>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("AGENT_STS_FUZZ_TRACE").is_some()) {
        eprintln!("trace: {what}");
    }
}
