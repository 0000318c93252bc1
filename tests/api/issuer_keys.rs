//! Trusted issuers' keys (issue 7): loading from inline keys, a `jwks_uri` and OIDC
//! discovery, the unknown-kid refetch, refresh and back-off, the fetch bounds, and the
//! registry, all against the local IdP of `idp.rs` (real HTTP on a free loopback port).

use crate::idp::{wait_until, Behaviour, Idp, DISCOVERY_PATH, JWKS_PATH};
use agent_sts::clock::{SharedClock, SystemClock};
use agent_sts::crypto::{b64url_decode, Alg, VerifyingKey};
use agent_sts::issuers::{FetchSettings, IssuerConfig, IssuerKeys, IssuerToml, Issuers, LookupError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// Short bounds, so the suite stays fast; no scheduled refresh unless a test asks for one.
/// Short bounds, except the fetch timeout: a first fetch on a loaded machine (a debug build,
/// the TLS stack initialising) can take longer than a tight bound, and a test that meant to
/// see another error would see a timeout. The timeout tests set their own.
fn settings() -> FetchSettings {
    FetchSettings {
        timeout: Duration::from_secs(3),
        max_bytes: 256 * 1024,
        min_refresh: Duration::from_millis(100),
        max_refresh: Duration::from_secs(2),
        default_refresh: Duration::from_secs(60),
        unknown_kid_refetch: Duration::from_secs(30),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ca_pem: None,
    }
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn config(toml_text: &str) -> IssuerConfig {
    let t: IssuerToml = toml::from_str(toml_text).expect("issuer table");
    IssuerConfig::from_toml("test.toml", &t).expect("valid issuer")
}

fn jwks_uri_issuer(id: &str, idp: &Idp) -> IssuerConfig {
    config(&format!("id = \"{id}\"\nissuer = \"{}\"\njwks_uri = \"{}\"", idp.issuer(), idp.jwks_uri()))
}

fn started(configs: &[IssuerConfig], s: FetchSettings) -> Issuers {
    let issuers = Issuers::with_settings(s, clock(), configs).expect("registry");
    issuers.start().expect("start");
    issuers
}

async fn loaded(issuers: &Issuers, iss: &str) -> Arc<IssuerKeys> {
    let keys = issuers.get(iss).expect("listed issuer");
    assert!(wait_until(WAIT, || keys.is_loaded()).await, "keys of {iss} not loaded: {:?}", keys.status());
    keys
}

fn verifies(key: &VerifyingKey, token: &str) -> bool {
    let (input, sig) = token.rsplit_once('.').expect("compact JWS");
    key.verify(input.as_bytes(), &b64url_decode(sig).expect("base64url"))
}

fn claims(idp: &Idp) -> serde_json::Value {
    json!({"iss": idp.issuer(), "sub": "repo:acme/app:ref:refs/heads/main", "aud": "https://sts.test"})
}

#[tokio::test]
async fn inline_keys_are_there_without_any_fetch() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let jwk: toml::Value = serde_json::from_value(json!(idp.public_jwk("ec-1"))).expect("toml");
    let c = config(&format!(
        "id = \"k8s\"\nissuer = \"{}\"\nkeys = [{jwk}]\nalgorithms = [\"ES256\"]",
        idp.issuer()
    ));
    let issuers = Issuers::with_settings(settings(), clock(), &[c]).expect("registry");
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(keys.is_loaded(), "inline keys are loaded at validation");
    let key = keys.lookup(Some("ec-1"), Alg::ES256).expect("key");
    assert!(verifies(&key, &idp.sign(&claims(&idp), "ec-1")));
    issuers.start().expect("start");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.total_requests(), 0, "inline keys are never fetched");
    assert_eq!(keys.status().source, "inline");
}

#[tokio::test]
async fn jwks_uri_keys_load_at_start_and_verify_tokens() {
    let idp = Idp::start();
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    for (kid, alg) in [("rsa-1", Alg::RS256), ("ec-1", Alg::ES256)] {
        let key = keys.lookup(Some(kid), alg).expect("key by kid");
        assert!(verifies(&key, &idp.sign(&claims(&idp), kid)), "{kid} verifies its token");
        // Without kid: the only key for the header's alg.
        let header = json!({"alg": alg.as_str(), "typ": "JWT"});
        let token = idp.sign_with_header(&header, &claims(&idp), kid);
        assert!(verifies(&keys.lookup(None, alg).expect("only key for the alg"), &token));
    }
    assert_eq!(
        keys.lookup(Some("ec-1"), Alg::RS256).unwrap_err(),
        LookupError::AlgMismatch { registered: Alg::ES256, header: Alg::RS256 }
    );
    let status = keys.status();
    assert_eq!((status.loaded, status.keys, status.source), (true, 2, "jwks_uri"));
    assert!(status.fetched_at.is_some() && status.last_error.is_none());
    assert_eq!((idp.jwks_requests(), idp.requests(DISCOVERY_PATH)), (1, 0));
}

/// OpenID Connect Discovery 1.0 section 4: the configuration names the jwks_uri.
#[tokio::test]
async fn discovery_finds_the_jwks() {
    let idp = Idp::start();
    idp.set_jwks_path("/oauth/keys");
    let c = config(&format!("id = \"gh\"\nissuer = \"{}\"\ndiscovery = true", idp.issuer()));
    let issuers = started(&[c], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    assert!(keys.lookup(Some("rsa-1"), Alg::RS256).is_ok());
    assert_eq!((idp.requests(DISCOVERY_PATH), idp.requests("/oauth/keys")), (1, 1));
    assert_eq!(keys.status().source, "discovery");
}

/// OpenID Connect Discovery 1.0 section 4.3: the configuration's issuer must equal the
/// configured one exactly; otherwise nothing it names is fetched.
#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let idp = Idp::start();
    idp.set_discovery_issuer(Some(&format!("{}/", idp.issuer())));
    let c = config(&format!("id = \"gh\"\nissuer = \"{}\"\ndiscovery = true", idp.issuer()));
    let issuers = started(&[c], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("section 4.3"), "{error}");
    assert_eq!(keys.lookup(Some("rsa-1"), Alg::RS256).unwrap_err(), LookupError::NotLoaded);
    assert_eq!(idp.jwks_requests(), 0, "the JWKS of a mismatched configuration is never fetched");
}

/// A discovered jwks_uri obeys the same rule as a configured one: https, or http on loopback.
#[tokio::test]
async fn discovered_plain_http_jwks_uri_is_refused() {
    let idp = Idp::start();
    idp.set_discovery_jwks_uri(Some("http://keys.example.com/jwks"));
    let c = config(&format!("id = \"gh\"\nissuer = \"{}\"\ndiscovery = true", idp.issuer()));
    let issuers = started(&[c], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("must be https"), "{error}");
    assert!(!keys.is_loaded());
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused_at_validation() {
    for (field, value) in [
        ("jwks_uri", "http://keys.example.com/jwks"),
        ("jwks_uri", "http://192.168.1.10/jwks"),
        ("jwks_uri", "http://127.0.0.1.nip.io/jwks"),
    ] {
        let t: IssuerToml =
            toml::from_str(&format!("id = \"x\"\nissuer = \"https://ci.example\"\n{field} = \"{value}\""))
                .expect("toml");
        let e = IssuerConfig::from_toml("p.toml", &t).expect_err(value);
        assert!(e.contains("must be https"), "{e}");
    }
    let t: IssuerToml =
        toml::from_str("id = \"x\"\nissuer = \"http://ci.example\"\ndiscovery = true").expect("toml");
    assert!(IssuerConfig::from_toml("p.toml", &t).is_err());
}

/// The broker never fetches anything an unverified token names: an iss that no [[issuer]]
/// lists (even one differing by a trailing slash) is not in the registry, and no request
/// reaches the server it names.
#[tokio::test]
async fn an_unlisted_iss_makes_no_request() {
    let listed = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let unlisted = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let issuers = started(&[jwks_uri_issuer("listed", &listed)], settings());
    let keys = loaded(&issuers, &listed.issuer()).await;
    for iss in
        [unlisted.issuer(), format!("{}/", listed.issuer()), format!("{}/.well-known", unlisted.issuer())]
    {
        assert!(issuers.get(&iss).is_none(), "{iss} is not listed");
    }
    // Plain lookups never fetch, whatever the kid.
    assert_eq!(keys.lookup(Some("whatever"), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(unlisted.total_requests(), 0, "no request left the broker for the unlisted issuer");
    assert_eq!(listed.total_requests(), 1);
}

/// The issuer rotates: a token names a new kid; exactly one refetch finds it.
#[tokio::test]
async fn a_new_kid_is_fetched_once() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    idp.add_key(Alg::ES256, "ec-2");
    idp.remove_key("ec-1");
    let token = idp.sign(&claims(&idp), "ec-2");
    assert_eq!(keys.lookup(Some("ec-2"), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
    assert_eq!(idp.jwks_requests(), 1, "a plain lookup does not fetch");
    let key = keys.lookup_or_refetch(Some("ec-2"), Alg::ES256).await.expect("found after one refetch");
    assert!(verifies(&key, &token));
    assert_eq!(idp.jwks_requests(), 2);
    // Found now: no further fetch. The dropped key is gone.
    keys.lookup_or_refetch(Some("ec-2"), Alg::ES256).await.expect("still there");
    assert_eq!(keys.lookup(Some("ec-1"), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
    assert_eq!(idp.jwks_requests(), 2);
}

/// Twenty concurrent tokens with the same new kid wait on one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_kid_lookups_shares_one_fetch() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    idp.add_key(Alg::ES256, "ec-2");
    idp.set_delay(Duration::from_millis(150)); // so the callers overlap the fetch
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let keys = keys.clone();
            tokio::spawn(async move {
                keys.lookup_or_refetch(Some("ec-2"), Alg::ES256).await.map(|k| k.kid().to_string())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("found"), "ec-2");
    }
    assert_eq!(idp.jwks_requests(), 2, "one initial fetch and one shared refetch");
}

/// At most one unknown-kid refetch per issuer per `unknown_kid_refetch`: random kids can't
/// make the broker hammer the issuer.
#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    assert_eq!(
        keys.lookup_or_refetch(Some("nope-1"), Alg::ES256).await.unwrap_err(),
        LookupError::UnknownKid
    );
    assert_eq!(idp.jwks_requests(), 2, "the first unknown kid refetches");
    idp.add_key(Alg::ES256, "ec-2");
    for kid in ["nope-2", "ec-2", "nope-3"] {
        assert_eq!(keys.lookup_or_refetch(Some(kid), Alg::ES256).await.unwrap_err(), LookupError::UnknownKid);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.jwks_requests(), 2, "no new fetch within the window");
}

/// An issuer that is down at start: NotLoaded (the broker answers 503), retries with
/// back-off, and its keys load without a restart once it is up.
#[tokio::test]
async fn an_issuer_down_at_start_loads_once_it_is_up() {
    let mut idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.go_down();
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().consecutive_failures >= 3).await, "retries");
    let status = keys.status();
    assert!(!status.loaded && status.fetched_at.is_none());
    assert!(status.last_error.is_some());
    assert_eq!(keys.lookup(Some("ec-1"), Alg::ES256).unwrap_err(), LookupError::NotLoaded);
    assert_eq!(keys.lookup_or_refetch(Some("ec-1"), Alg::ES256).await.unwrap_err(), LookupError::NotLoaded);
    idp.resume();
    let keys = loaded(&issuers, &idp.issuer()).await;
    assert!(verifies(&keys.lookup(Some("ec-1"), Alg::ES256).expect("key"), &idp.sign(&claims(&idp), "ec-1")));
    assert_eq!(keys.status().consecutive_failures, 0);
}

/// Refreshes that fail (500, then connection refused) keep the last good keys.
#[tokio::test]
async fn last_good_keys_are_kept_when_refreshes_fail() {
    let mut idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_cache_control(Some("max-age=0")); // refresh at the lower bound (100 ms)
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = loaded(&issuers, &idp.issuer()).await;
    idp.set_behaviour(Behaviour::Status(500));
    assert!(wait_until(WAIT, || keys.status().consecutive_failures >= 2).await);
    assert!(keys.status().last_error.expect("error").contains("500"));
    idp.go_down();
    let failures = keys.status().consecutive_failures;
    assert!(wait_until(WAIT, || keys.status().consecutive_failures > failures).await);
    let token = idp.sign(&claims(&idp), "ec-1");
    assert!(verifies(&keys.lookup(Some("ec-1"), Alg::ES256).expect("last good key"), &token));
    // An unknown kid while the issuer is down: the refetch fails, the answer comes in bounded time.
    let answer =
        tokio::time::timeout(Duration::from_secs(3), keys.lookup_or_refetch(Some("ec-9"), Alg::ES256)).await;
    assert_eq!(answer.expect("bounded").unwrap_err(), LookupError::UnknownKid);
    assert!(keys.lookup(Some("ec-1"), Alg::ES256).is_ok());
    idp.set_behaviour(Behaviour::Normal);
    idp.resume();
    assert!(wait_until(WAIT, || keys.status().consecutive_failures == 0).await, "recovers");
}

/// A JWKS larger than the cap is refused from its Content-Length, before the body is read.
#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_behaviour(Behaviour::Oversized { bytes: 10 * 1024 * 1024, content_length: true });
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("larger than 262144 bytes"), "{error}");
    assert_eq!(keys.lookup(Some("ec-1"), Alg::ES256).unwrap_err(), LookupError::NotLoaded);
}

/// Without a Content-Length the cap is enforced while the body streams in: the broker hangs
/// up after about the cap, and the server could not write most of its 64 MiB.
#[tokio::test]
async fn an_oversized_jwks_without_length_is_cut_off_while_streaming() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let total = 64 * 1024 * 1024;
    idp.set_behaviour(Behaviour::Oversized { bytes: total, content_length: false });
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("larger than 262144 bytes"), "{error}");
    drop(issuers);
    // The writer notices the closed connection; what it wrote is the cap plus socket buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = idp.oversized_written();
    eprintln!("oversized body: the server wrote {written} of {total} bytes");
    assert!(written < total as u64 / 2, "the server wrote {written} bytes: the body was not cut off");
}

/// A JWKS server that never answers costs one fetch timeout, then counts as a failure.
#[tokio::test]
async fn a_jwks_that_never_answers_is_refused_within_the_timeout() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_behaviour(Behaviour::Hang);
    let s = FetchSettings { timeout: Duration::from_millis(400), ..settings() };
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], s);
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(Duration::from_secs(3), || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("timed out") || error.contains("within 400 ms"), "{error}");
    assert!(!keys.is_loaded());
}

/// Loaded, then the server hangs: an unknown kid costs the caller a bounded wait, no more.
#[tokio::test]
async fn an_unknown_kid_refetch_against_a_hanging_issuer_is_bounded() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let s = FetchSettings { timeout: Duration::from_millis(400), ..settings() };
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], s);
    let keys = loaded(&issuers, &idp.issuer()).await;
    idp.set_behaviour(Behaviour::Hang);
    let answer =
        tokio::time::timeout(Duration::from_secs(3), keys.lookup_or_refetch(Some("new"), Alg::ES256)).await;
    assert_eq!(answer.expect("bounded").unwrap_err(), LookupError::UnknownKid);
    assert!(keys.lookup(Some("ec-1"), Alg::ES256).is_ok(), "last good keys kept");
}

/// Cache-Control max-age sets the refresh interval within [min_refresh, max_refresh];
/// without it the default applies.
#[tokio::test]
async fn cache_control_max_age_is_honoured_within_bounds() {
    let s = FetchSettings {
        min_refresh: Duration::from_millis(300),
        max_refresh: Duration::from_millis(1500),
        default_refresh: Duration::from_secs(60),
        ..settings()
    };
    // (Cache-Control, the interval it must give: max-age clamped to [300 ms, 1.5 s])
    let cases = [("max-age=0", 300), ("public, max-age=1", 1000), ("max-age=86400", 1500)];
    let idps: Vec<Idp> = cases
        .iter()
        .map(|(cc, _)| {
            let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
            idp.set_cache_control(Some(cc));
            idp
        })
        .collect();
    let plain = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let mut configs: Vec<IssuerConfig> =
        idps.iter().enumerate().map(|(n, idp)| jwks_uri_issuer(&format!("i{n}"), idp)).collect();
    configs.push(jwks_uri_issuer("plain", &plain));
    let _issuers = started(&configs, s);
    for ((cc, min_gap_ms), idp) in cases.iter().zip(&idps) {
        assert!(wait_until(Duration::from_secs(8), || idp.jwks_requests() >= 2).await, "{cc}: refreshes");
        let times = idp.request_times(JWKS_PATH);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(*min_gap_ms), "{cc}: refetched after {gap:?}");
        }
    }
    assert_eq!(plain.jwks_requests(), 1, "no max-age: the 60 s default");
}

/// RFC 7517 section 4.2/4.3 and RFC 8725 section 3.1: keys not for signatures, with private
/// members, or of algorithms the issuer is not trusted with are skipped; an RSA key without
/// alg gets the issuer's one RSA algorithm, and is skipped when there are two.
#[tokio::test]
async fn unusable_published_keys_are_skipped() {
    let idp = Idp::start();
    idp.edit_jwk("rsa-1", |jwk| {
        jwk.remove("alg");
    });
    let mut enc = idp.public_jwk("ec-1");
    enc.insert("use".into(), json!("enc"));
    enc.insert("kid".into(), json!("enc-1"));
    idp.add_raw_jwk(json!(enc));
    let mut private = idp.public_jwk("ec-1");
    private.insert("d".into(), json!("c2VjcmV0"));
    private.insert("kid".into(), json!("priv-1"));
    idp.add_raw_jwk(json!(private));
    let one_rsa = config(&format!(
        "id = \"one\"\nissuer = \"https://one.example\"\njwks_uri = \"{}\"\nalgorithms = [\"RS256\", \"ES256\"]",
        idp.jwks_uri()
    ));
    let two_rsa = config(&format!(
        "id = \"two\"\nissuer = \"https://two.example\"\njwks_uri = \"{}\"\nalgorithms = [\"RS256\", \"PS256\", \"ES256\"]",
        idp.jwks_uri()
    ));
    let issuers = started(&[one_rsa, two_rsa], settings());
    let one = loaded(&issuers, "https://one.example").await;
    let two = loaded(&issuers, "https://two.example").await;
    assert_eq!(one.status().keys, 2);
    let rsa = one.lookup(Some("rsa-1"), Alg::RS256).expect("RSA key pinned to RS256");
    assert!(verifies(&rsa, &idp.sign(&claims(&idp), "rsa-1")));
    assert_eq!(two.status().keys, 1);
    assert_eq!(two.lookup(Some("rsa-1"), Alg::RS256).unwrap_err(), LookupError::UnknownKid);
    for kid in ["enc-1", "priv-1"] {
        assert_eq!(one.lookup(Some(kid), Alg::ES256).unwrap_err(), LookupError::UnknownKid);
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let target = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_behaviour(Behaviour::Redirect(target.jwks_uri()));
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    assert!(keys.status().last_error.expect("error").contains("redirects are not followed"));
    assert_eq!(target.total_requests(), 0);
}

#[tokio::test]
async fn a_jwks_that_is_not_json_is_refused() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_content_type("text/html");
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    let keys = issuers.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    assert!(keys.status().last_error.expect("error").contains("not JSON"));
    idp.set_content_type("application/jwk-set+json");
    idp.set_jwks_body(Some(r#"{"keys": []}"#));
    assert!(wait_until(WAIT, || keys.status().last_error.is_some_and(|e| e.contains("no usable key"))).await);
    assert!(!keys.is_loaded());
}

/// A policy reload keeps the cache of an unchanged issuer (no fetch), refetches a changed
/// one, and stops the refresh task of a removed one.
#[tokio::test]
async fn reconcile_keeps_unchanged_caches_and_stops_removed_issuers() {
    let kept = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    let removed = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    removed.set_cache_control(Some("max-age=0")); // refreshes every 100 ms while listed
    let (a, b) = (jwks_uri_issuer("a", &kept), jwks_uri_issuer("b", &removed));
    let issuers = started(&[a.clone(), b], settings());
    loaded(&issuers, &kept.issuer()).await;
    loaded(&issuers, &removed.issuer()).await;
    assert!(wait_until(WAIT, || removed.jwks_requests() >= 2).await);

    let mut a2 = a.clone();
    a2.audience = Some("https://sts.test".into());
    let report = issuers.reconcile(&[a2]).expect("reconcile");
    assert_eq!((report.kept, report.removed), (vec!["a".to_string()], vec!["b".to_string()]));
    assert!(issuers.get(&removed.issuer()).is_none());
    let keys = issuers.get(&kept.issuer()).expect("kept");
    assert_eq!(keys.config().audience.as_deref(), Some("https://sts.test"), "settings updated");
    assert!(keys.lookup(Some("ec-1"), Alg::ES256).is_ok(), "cache kept");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = removed.jwks_requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(removed.jwks_requests(), after, "a removed issuer is no longer fetched");
    assert_eq!(kept.jwks_requests(), 1, "an unchanged issuer is not fetched again");

    let mut a3 = a.clone();
    a3.algorithms = vec![Alg::ES256];
    let report = issuers.reconcile(&[a3]).expect("reconcile");
    assert_eq!(report.replaced, vec!["a".to_string()]);
    assert!(wait_until(WAIT, || kept.jwks_requests() == 2).await, "changed key rules: fetched anew");
    loaded(&issuers, &kept.issuer()).await;

    let mut dup = a.clone();
    dup.id = "a-again".into();
    assert!(issuers.reconcile(&[a.clone(), dup]).is_err(), "two issuers with one iss");
    assert!(issuers.get(&kept.issuer()).is_some(), "a refused reconcile changes nothing");
}

#[tokio::test]
async fn dropping_the_registry_stops_its_tasks() {
    let idp = Idp::start_with(&[(Alg::ES256, "ec-1")]);
    idp.set_cache_control(Some("max-age=0"));
    let issuers = started(&[jwks_uri_issuer("ci", &idp)], settings());
    assert!(wait_until(WAIT, || idp.jwks_requests() >= 2).await);
    drop(issuers);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = idp.jwks_requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.jwks_requests(), after);
}

/// https to an issuer behind a private CA: trusted through `issuers.ca_file`, refused without it.
#[tokio::test]
async fn https_issuer_behind_a_private_ca() {
    let (idp, cert) = Idp::start_tls(&[(Alg::ES256, "ec-1")]);
    assert!(idp.issuer().starts_with("https://"));
    let c = config(&format!("id = \"corp\"\nissuer = \"{}\"\ndiscovery = true", idp.issuer()));

    let untrusted = started(std::slice::from_ref(&c), settings());
    let keys = untrusted.get(&idp.issuer()).expect("listed");
    assert!(wait_until(WAIT, || keys.status().last_error.is_some()).await);
    let error = keys.status().last_error.expect("error");
    assert!(error.contains("certificate"), "{error}");
    assert!(!keys.is_loaded());
    drop(untrusted);

    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, cert.pem()).expect("write");
    let fetch = agent_sts::config::IssuerFetchSettings {
        ca_file: Some(ca_file),
        ..agent_sts::config::IssuerFetchSettings::default()
    };
    let trusted = Issuers::new(&fetch, clock(), &[c]).expect("registry");
    trusted.start().expect("start");
    let keys = loaded(&trusted, &idp.issuer()).await;
    assert!(verifies(&keys.lookup(Some("ec-1"), Alg::ES256).expect("key"), &idp.sign(&claims(&idp), "ec-1")));
    assert_eq!(idp.requests(DISCOVERY_PATH), 1, "the handshake without the CA failed before any request");
}

#[test]
fn a_ca_file_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").expect("write");
    let fetch = agent_sts::config::IssuerFetchSettings {
        ca_file: Some(ca_file),
        ..agent_sts::config::IssuerFetchSettings::default()
    };
    assert!(Issuers::new(&fetch, clock(), &[]).is_err());
}
