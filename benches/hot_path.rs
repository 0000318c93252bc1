//! Criterion benchmarks of every piece on the token endpoint's hot path, on realistic inputs
//! built once outside the timed loop, plus the cryptographic floor they are compared with.
//!
//! ```text
//! cargo bench --bench hot_path                 # everything, about 2 minutes
//! cargo bench --bench hot_path -- exchange     # a filter, as usual with criterion
//! ```
//!
//! Groups:
//! * `assertion_check/{es256,eddsa,rs256}`: `client_auth::check_assertion` (steps 1–6, no replay).
//! * `mint/es256`: `TokenIssuer::mint` (claims, serialize, sign).
//! * `policy/decide`: the policy decision for one resource and a requested scope.
//! * `form/parse_client_credentials`: `TokenRequest::parse` on an MCP SDK body.
//! * `exchange/*`: form bytes ▶ `TokenRequest::parse` ▶ `Broker::exchange` ▶ JSON, in process,
//!   in-memory replay store, a fresh assertion (unique `jti`) per iteration, signed outside
//!   the timed part.
//! * `floor/*`: ES256 verify and sign alone, on the same keys, through josekit
//!   (`es256_*`) and through OpenSSL's ECDSA primitives (`openssl_ecdsa_*`, what the broker
//!   calls): what one client_credentials exchange cannot go below.
//!
//! At the end a summary prints our exchange beside the floor and their ratio (target ≤ 1.4×,
//! issue 3), read back from criterion's `estimates.json`.

// The exchange future (spans, rate limit, revocation check) nests deeper than the default
// limit allows when its type is checked here.
#![recursion_limit = "256"]

mod common;

use agent_sts::broker::Broker;
use agent_sts::client_auth;
use agent_sts::clock::{SharedClock, SystemClock};
use agent_sts::crypto::{Alg, SigningKey};
use agent_sts::mint::{MintSpec, TokenIssuer};
use agent_sts::policy::{decide, Decision, Lifetimes, Policy};
use agent_sts::protocol::{ScopeSet, TokenRequest};
use agent_sts::replay::{AnyReplayStore, MemoryStore};
use common::{AgentKey, DOCS, SCOPE, TICKETS};
use criterion::{BatchSize, Criterion};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const ISSUER: &str = "https://sts.example.com";
/// The trusted issuer of the federation benches (its keys are inline: nothing is fetched).
const PLATFORM: &str = "https://token.actions.githubusercontent.com";
/// The user identity provider of the on-behalf-of bench.
const IDP: &str = "https://login.acme.example/realms/corp";

/// Everything the benches share, built once.
struct Fixture {
    es256: AgentKey,
    eddsa: AgentKey,
    rs256: AgentKey,
    /// A trusted issuer's RS256 and ES256 keys (federation, issue 7).
    platform_rs256: AgentKey,
    platform_es256: AgentKey,
    /// A user identity provider's key (on-behalf-of, issue 8).
    idp: AgentKey,
    broker: Broker,
    /// The broker's signing key as PEM, for the floor benches.
    broker_pem: String,
    now: i64,
}

fn fixture() -> Fixture {
    let es256 = AgentKey::generate("https://agents.example.com/billing-reconciler-es256", Alg::ES256);
    let eddsa = AgentKey::generate("https://agents.example.com/billing-reconciler-eddsa", Alg::EdDSA);
    let rs256 = AgentKey::generate("https://agents.example.com/billing-reconciler-rs256", Alg::RS256);
    let platform_rs256 = AgentKey::generate("platform-rs256", Alg::RS256);
    let platform_es256 = AgentKey::generate("platform-es256", Alg::ES256);
    let idp = AgentKey::generate("idp", Alg::ES256);
    let toml = format!(
        "{}\n{}\n{}",
        common::policy_toml(&[&es256, &eddsa, &rs256]),
        common::federation_toml(PLATFORM, &[&platform_rs256, &platform_es256], &es256.id),
        common::delegation_toml(IDP, &idp, &es256.id)
    );
    let mut sources = vec![("bench.toml".to_string(), toml)];
    // HOT_PATH_PAD_AGENTS=100000: the same benches with a policy of that many more agents
    // (issue 12: per-request cost must not depend on the policy's size).
    let pad: usize = std::env::var("HOT_PATH_PAD_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    if pad > 0 {
        let spec = common::generated::Spec {
            servers: (pad / 20).max(1),
            agents: pad,
            allow: 5,
            alg: Alg::ES256,
            seed: 1,
            prefix: "pad-".into(),
        };
        sources.push(("pad.toml".to_string(), common::generated::policy_text(&spec)));
        eprintln!("hot_path: policy padded with {pad} generated agents (HOT_PATH_PAD_AGENTS)");
    }
    let policy = Policy::from_sources(&sources).expect("bench policy loads");
    let pair = agent_sts::crypto::generate_key_pair(Alg::ES256, None).expect("broker key");
    let key = SigningKey::from_pem(Alg::ES256, pair.private_pem.0.as_bytes(), None).expect("load broker key");
    let tokens = TokenIssuer::new(ISSUER.into(), key, vec![]).expect("token issuer");
    let clock: SharedClock = Arc::new(SystemClock);
    let issuers = agent_sts::issuers::Issuers::new(&Default::default(), clock.clone(), &policy.issuers)
        .expect("trusted issuers");
    // Capacity well above what a run spends: a full store would refuse (503).
    let replay = Arc::new(AnyReplayStore::Memory(MemoryStore::new(4_000_000, clock.clone())));
    let shared = Arc::new(agent_sts::broker::Shared::new(true, replay.clone(), clock.clone()));
    let broker = Broker {
        issuers: Arc::new(issuers),
        policy: Arc::new(policy),
        tokens,
        replay,
        rules: agent_sts::startup::assertion_rules(ISSUER, &agent_sts::config::TokenSettings::default()),
        lifetimes: Lifetimes { default_secs: 300, max_secs: 3600 },
        clock,
        shared,
    };
    let now = broker.clock.now_secs();
    Fixture {
        es256,
        eddsa,
        rs256,
        platform_rs256,
        platform_es256,
        idp,
        broker,
        broker_pem: pair.private_pem.0,
        now,
    }
}

fn bench_check(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("assertion_check");
    for (name, agent) in [("es256", &f.es256), ("eddsa", &f.eddsa), ("rs256", &f.rs256)] {
        // The SDKs' lifetime: exp = iat + 300. `check` does not spend the jti, so one
        // assertion serves every iteration.
        let raw = agent.assertion(ISSUER, f.now, 300);
        client_auth::check_assertion(&raw, None, &f.broker.policy, &f.broker.rules, f.now)
            .expect("assertion passes");
        g.bench_function(name, |b| {
            b.iter(|| {
                client_auth::check_assertion(black_box(&raw), None, &f.broker.policy, &f.broker.rules, f.now)
                    .expect("assertion passes")
            })
        });
    }
    g.finish();
}

fn bench_mint(c: &mut Criterion, f: &Fixture) {
    let scopes = ScopeSet::parse(SCOPE).expect("scope");
    let spec = MintSpec {
        sub: &f.es256.id,
        aud: DOCS,
        client_id: &f.es256.id,
        scopes: &scopes,
        iat: f.now,
        exp: f.now + 300,
        act: None,
        entitlement: None,
    };
    c.bench_function("mint/es256", |b| b.iter(|| f.broker.tokens.mint(black_box(&spec)).expect("mint")));
}

fn bench_decide(c: &mut Criterion, f: &Fixture) {
    let agent = f.broker.policy.agent(&f.es256.id).expect("agent");
    let resources = vec![DOCS.to_string()];
    let requested = ScopeSet::parse(SCOPE).expect("scope");
    let d = Decision {
        agent,
        resources: &resources,
        audiences: &[],
        requested: Some(&requested),
        ceiling: None,
        subject: None,
    };
    decide(&f.broker.policy, &d, f.broker.lifetimes).expect("permit");
    c.bench_function("policy/decide", |b| {
        b.iter(|| decide(&f.broker.policy, black_box(&d), f.broker.lifetimes).expect("permit"))
    });
}

fn bench_parse(c: &mut Criterion, f: &Fixture) {
    let body = common::client_credentials_body(&f.es256.assertion(ISSUER, f.now, 300), DOCS);
    eprintln!("form/parse_client_credentials: body is {} bytes", body.len());
    c.bench_function("form/parse_client_credentials", |b| {
        b.iter(|| TokenRequest::parse(black_box(body.as_bytes()), false).expect("parses"))
    });
}

/// Form bytes ▶ parse ▶ exchange ▶ JSON body: what the HTTP handler does, minus HTTP.
async fn exchange_once(broker: &Broker, body: &[u8]) -> Vec<u8> {
    let req = TokenRequest::parse(body, false).expect("parses");
    let issued = broker.exchange(&req).await.expect("token issued");
    serde_json::to_vec(&issued.response).expect("JSON")
}

fn bench_exchange(c: &mut Criterion, f: &Fixture) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let broker = &f.broker;
    // A subject token of ours, for token exchange (nothing spends it; the assertion is fresh).
    let scopes = ScopeSet::parse(SCOPE).expect("scope");
    let subject = broker
        .tokens
        .mint(&MintSpec {
            sub: &f.es256.id,
            aud: DOCS,
            client_id: &f.es256.id,
            scopes: &scopes,
            iat: f.now,
            exp: f.now + 3600,
            act: None,
            entitlement: None,
        })
        .expect("subject token")
        .token;

    let mut g = c.benchmark_group("exchange");
    type Body<'a> = Box<dyn Fn() -> String + 'a>;
    let cases: [(&str, Body); 8] = [
        (
            "client_credentials_es256",
            Box::new(|| common::client_credentials_body(&f.es256.assertion(ISSUER, f.now, 300), DOCS)),
        ),
        (
            "client_credentials_eddsa",
            Box::new(|| common::client_credentials_body(&f.eddsa.assertion(ISSUER, f.now, 300), DOCS)),
        ),
        (
            "client_credentials_rs256",
            Box::new(|| common::client_credentials_body(&f.rs256.assertion(ISSUER, f.now, 300), DOCS)),
        ),
        (
            "jwt_bearer_es256",
            Box::new(|| common::jwt_bearer_body(&f.es256.assertion(ISSUER, f.now, 300), DOCS)),
        ),
        (
            "jwt_bearer_federated_rs256",
            Box::new(|| {
                common::jwt_bearer_body(&f.platform_rs256.platform_token(PLATFORM, ISSUER, f.now), DOCS)
            }),
        ),
        (
            "jwt_bearer_federated_es256",
            Box::new(|| {
                common::jwt_bearer_body(&f.platform_es256.platform_token(PLATFORM, ISSUER, f.now), DOCS)
            }),
        ),
        (
            "token_exchange_on_behalf_of_es256",
            Box::new(|| {
                let user = f.idp.user_token(IDP, ISSUER, f.now);
                common::on_behalf_of_body(&user, &f.es256.assertion(ISSUER, f.now, 300), DOCS)
            }),
        ),
        (
            "token_exchange_es256",
            Box::new(|| {
                common::token_exchange_body(&subject, &f.es256.assertion(ISSUER, f.now, 300), TICKETS)
            }),
        ),
    ];
    for (name, make) in &cases {
        rt.block_on(exchange_once(broker, make().as_bytes()));
        g.bench_function(*name, |b| {
            // Setup (signing a fresh assertion with a unique jti) is not timed.
            b.to_async(&rt).iter_batched(
                make,
                |body| async move { exchange_once(broker, body.as_bytes()).await },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_floor(c: &mut Criterion, f: &Fixture) {
    // The same inputs the broker handles: an SDK assertion in, a token-sized payload out.
    let token = f.broker.tokens.mint(&example_spec(f)).expect("mint").token;
    let (to_sign, _) = token.rsplit_once('.').expect("three parts");
    let floor = common::Floor::new(&f.es256, &f.broker_pem, ISSUER, to_sign.as_bytes());

    let mut g = c.benchmark_group("floor");
    g.bench_function("es256_verify", |b| b.iter(|| floor.josekit_verify()));
    g.bench_function("es256_sign", |b| b.iter(|| black_box(floor.josekit_sign())));
    g.bench_function("es256_verify_plus_sign", |b| b.iter(|| black_box(floor.josekit_pair())));
    g.bench_function("openssl_ecdsa_verify", |b| b.iter(|| floor.openssl_verify()));
    g.bench_function("openssl_ecdsa_sign", |b| b.iter(|| black_box(floor.openssl_sign())));
    g.bench_function("openssl_ecdsa_verify_plus_sign", |b| b.iter(|| black_box(floor.openssl_pair())));
    // Federation: the platform token's signature (RS256 or ES256) through josekit, plus the
    // broker's ES256 token signature: the crypto a federated jwt-bearer exchange cannot avoid.
    for (name, key) in [
        ("federated_rs256_verify_plus_sign", &f.platform_rs256),
        ("federated_es256_verify_plus_sign", &f.platform_es256),
    ] {
        let token = key.platform_token(PLATFORM, ISSUER, f.now);
        let (input, sig) = token.rsplit_once('.').expect("three parts");
        let sig = agent_sts::crypto::b64url_decode(sig).expect("b64");
        let jwk = josekit::jwk::Jwk::from_map(key.public_jwk.clone()).expect("jwk");
        let verifier: Box<dyn josekit::jws::JwsVerifier> = match key.alg {
            Alg::RS256 => Box::new(josekit::jws::RS256.verifier_from_jwk(&jwk).expect("verifier")),
            _ => Box::new(josekit::jws::ES256.verifier_from_jwk(&jwk).expect("verifier")),
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                verifier.verify(input.as_bytes(), &sig).expect("floor verifies");
                black_box(floor.josekit_sign())
            })
        });
    }
    // On-behalf-of: two ES256 verifies (the user's token, the agent's assertion) + one sign.
    let user = f.idp.user_token(IDP, ISSUER, f.now);
    let (user_input, user_sig) = user.rsplit_once('.').expect("three parts");
    let user_sig = agent_sts::crypto::b64url_decode(user_sig).expect("b64");
    let idp_jwk = josekit::jwk::Jwk::from_map(f.idp.public_jwk.clone()).expect("jwk");
    let idp_verifier = josekit::jws::ES256.verifier_from_jwk(&idp_jwk).expect("verifier");
    g.bench_function("delegated_two_verifies_plus_sign", |b| {
        b.iter(|| {
            josekit::jws::JwsVerifier::verify(&idp_verifier, user_input.as_bytes(), &user_sig)
                .expect("verifies");
            black_box(floor.josekit_pair())
        })
    });
    g.finish();
}

fn example_spec(f: &Fixture) -> MintSpec<'_> {
    static SCOPES: std::sync::OnceLock<ScopeSet> = std::sync::OnceLock::new();
    MintSpec {
        sub: &f.es256.id,
        aud: DOCS,
        client_id: &f.es256.id,
        scopes: SCOPES.get_or_init(|| ScopeSet::parse(SCOPE).expect("scope")),
        iat: f.now,
        exp: f.now + 300,
        act: None,
        entitlement: None,
    }
}

/// Criterion's point estimate (ns) of one bench, from its `new/estimates.json`.
fn estimate_ns(group: &str, name: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| "target".into());
        target.join("criterion")
    });
    let text =
        std::fs::read_to_string(home.join(group).join(name).join("new").join("estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn summary() {
    let est = |name: &str| estimate_ns("floor", name);
    let josekit = est("es256_verify_plus_sign");
    let openssl = est("openssl_ecdsa_verify_plus_sign");
    let ours = estimate_ns("exchange", "client_credentials_es256");
    println!("\n== issue 3: one client_credentials exchange against the crypto floor (medians) ==");
    let us = |v: Option<f64>| v.map_or("n/a (not run)".to_string(), |ns| format!("{:.1} µs", ns / 1000.0));
    println!(
        "  floor: josekit ES256 verify / sign          {} / {}",
        us(est("es256_verify")),
        us(est("es256_sign"))
    );
    println!("  floor: josekit verify + sign                {}", us(josekit));
    println!(
        "  floor: OpenSSL ECDSA verify / sign          {} / {}",
        us(est("openssl_ecdsa_verify")),
        us(est("openssl_ecdsa_sign"))
    );
    println!("  floor: OpenSSL ECDSA verify + sign          {}", us(openssl));
    println!("  ours:  parse + exchange (memory)            {}", us(ours));
    if let Some(o) = ours {
        for (name, floor) in [("josekit", josekit), ("OpenSSL ECDSA", openssl)] {
            if let Some(fl) = floor {
                let ratio = o / fl;
                let verdict = if ratio <= 1.4 { "within" } else { "OVER" };
                println!(
                    "  ratio: {ratio:.2}× the {name} floor ({verdict} 1.4×; in process, no HTTP, no Redis)"
                );
            }
        }
    }
    println!("\n== issue 8: an on-behalf-of token exchange against its floor (medians) ==");
    let floor = est("delegated_two_verifies_plus_sign");
    let ours = estimate_ns("exchange", "token_exchange_on_behalf_of_es256");
    println!("  floor (two josekit ES256 verifies + one sign) {}, ours {}", us(floor), us(ours));
    if let (Some(fl), Some(o)) = (floor, ours) {
        let ratio = o / fl;
        let verdict = if ratio <= 1.4 { "within" } else { "OVER" };
        println!("  ratio: {ratio:.2}× ({verdict} 1.4×; in process, memory replay, inline issuer keys)");
    }
    println!("\n== issue 7: a federated jwt-bearer exchange against its floor (medians) ==");
    for alg in ["rs256", "es256"] {
        let floor = est(&format!("federated_{alg}_verify_plus_sign"));
        let ours = estimate_ns("exchange", &format!("jwt_bearer_federated_{alg}"));
        println!("  {alg}: floor (josekit verify + ES256 sign) {}, ours {}", us(floor), us(ours));
        if let (Some(fl), Some(o)) = (floor, ours) {
            let ratio = o / fl;
            let verdict = if ratio <= 1.4 { "within" } else { "OVER" };
            println!("  ratio: {ratio:.2}× ({verdict} 1.4×; in process, memory replay, inline issuer keys)");
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .configure_from_args();
    let f = fixture();
    bench_floor(&mut c, &f);
    bench_exchange(&mut c, &f);
    bench_check(&mut c, &f);
    bench_mint(&mut c, &f);
    bench_decide(&mut c, &f);
    bench_parse(&mut c, &f);
    c.final_summary();
    summary();
}
