//! The replay store over TLS with a private CA, and through Redis Sentinel. Fail closed: a
//! Redis whose certificate the configured CA did not sign gets no spend, so no token.

use crate::helpers::*;
use crate::replay_support::*;
use agent_sts::config::RedisTopology;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate signed by `issuer` (self-signed when `None`): a CA, or a server certificate
/// for 127.0.0.1.
fn certificate(cn: &str, ca: bool, issuer: Option<(&X509, &PKey<Private>)>) -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(rand_serial()).and_then(|n| n.to_asn1_integer()).expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name())).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("now")).expect("nbf");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("tomorrow")).expect("exp");
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("bc");
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("ku"))
            .expect("ku");
    } else {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .expect("san");
        b.append_extension(san).expect("san");
    }
    b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256()).expect("sign");
    (b.build(), key)
}

fn rand_serial() -> u32 {
    agent_sts::crypto::random_id().bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        >> 1
}

/// A CA, a server certificate for 127.0.0.1 that it signed, and a second CA that signed
/// nothing, written as PEM files. Returns (the CA file, the other CA file).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf) {
    let (ca, ca_key) = certificate("agent-sts test CA", true, None);
    let (other, _) = certificate("agent-sts other CA", true, None);
    let (server, server_key) = certificate("127.0.0.1", false, Some((&ca, &ca_key)));
    let write = |f: &str, pem: Vec<u8>| std::fs::write(dir.join(f), pem).expect("write pem");
    write("ca.crt", ca.to_pem().expect("pem"));
    write("other-ca.crt", other.to_pem().expect("pem"));
    write("server.crt", server.to_pem().expect("pem"));
    write("server.key", server_key.private_key_to_pem_pkcs8().expect("pem"));
    (dir.join("ca.crt"), dir.join("other-ca.crt"))
}

fn over_tls(port: u16, ca: PathBuf) -> AppOptions {
    AppOptions {
        redis_url: Some(format!("rediss://127.0.0.1:{port}")),
        tweak: Some(Arc::new(move |s| {
            s.replay.tls_ca_file = Some(ca.clone());
            s.tokens.future_skew_secs = 0;
        })),
        ..AppOptions::default()
    }
}

/// The replay store behind the Sentinel at `sentinel` (a `redis://` URL), for the master it
/// calls `mymaster`; `master_url` gives the scheme (its address is Sentinel's answer).
fn via_sentinel(s: &mut agent_sts::config::Settings, sentinel: String, master_url: &str) {
    s.replay.topology = RedisTopology::Sentinel;
    s.replay.nodes = vec![sentinel];
    s.replay.sentinel_master = Some("mymaster".into());
    s.replay.redis_url = master_url.into();
}

/// `rediss://` to a redis-server with a certificate from a private CA: the broker that
/// trusts that CA spends there; one that trusts another CA refuses the server (503, not
/// ready), so no token is issued against an unauthenticated store.
#[tokio::test]
async fn tls_redis_with_a_private_ca_and_a_server_the_ca_did_not_sign() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, other_ca) = test_pki(dir.path());
    let port = free_port();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let (crt, key, ca_arg, port_arg) = (d("server.crt"), d("server.key"), d("ca.crt"), port.to_string());
    let _redis = RedisServer::spawn_with(
        free_port(),
        &[
            "--port",
            "0",
            "--tls-port",
            &port_arg,
            "--tls-cert-file",
            &crt,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_arg,
            "--tls-auth-clients",
            "no",
        ],
    );
    let up = within(Duration::from_secs(10), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .await;
    assert!(up.is_some(), "TLS redis-server listens");

    let trusted = TestApp::spawn_with(over_tls(port, ca)).await;
    // A new store: its markers are created at the first spend, so assertions signed in that
    // second are refused (future skew 0). Each try is signed a second of the broker's clock
    // later (the wait bounds only the TLS connection's set-up, not a figure).
    let token = within(Duration::from_secs(10), || async {
        trusted.clock.advance_secs(1);
        let r = trusted.client_credentials(&trusted.assertion("bot").sign(), DOCS, None).await;
        (r.status == 200).then_some(r)
    })
    .await;
    token.expect("a token over TLS").assert_ok();
    let a = trusted.assertion("bot").sign();
    trusted.client_credentials(&a, DOCS, None).await.assert_ok();
    trusted.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");

    let untrusting = TestApp::spawn_with(over_tls(port, other_ca)).await;
    for _ in 0..2 {
        let r = untrusting.client_credentials(&untrusting.assertion("bot").sign(), DOCS, None).await;
        r.assert_error(503, "temporarily_unavailable");
    }
    assert_eq!(untrusting.get("/readyz").await.status, 503);
}

/// Sentinel: the broker asks a real `redis-server --sentinel` for the master and spends
/// there; after `SENTINEL FAILOVER` it finds the new master by itself, and what was spent
/// before (acknowledged by the replica, min_replica_acks = 1) is still a replay.
#[tokio::test]
async fn sentinel_names_the_master_and_the_broker_follows_a_failover() {
    let dir = tempfile::tempdir().expect("tmp");
    let dir_arg = dir.path().display().to_string();
    let master =
        RedisServer::spawn_with(free_port(), &["--repl-diskless-sync-delay", "0", "--dir", &dir_arg]);
    master.wait_ready();
    let replica = RedisServer::spawn_with(
        free_port(),
        &[
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
            "--repl-diskless-load",
            "on-empty-db",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            &dir_arg,
        ],
    );
    replica.wait_ready();
    let sentinel_port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {dir_arg}\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n",
            master.port
        ),
    )
    .expect("write sentinel.conf");
    let sentinel = RedisServer::spawn_raw(sentinel_port, &[conf.to_str().expect("utf8"), "--sentinel"]);
    sentinel.wait_ready();
    let sentinel_url = sentinel.url();
    let knows_replica = within(Duration::from_secs(20), || async {
        let r = redis_cmd(&sentinel_url, &["SENTINEL", "REPLICAS", "mymaster"]).await.ok()?;
        matches!(r, redis::Value::Array(ref v) if !v.is_empty()).then_some(())
    })
    .await;
    assert!(knows_replica.is_some(), "Sentinel found the replica");

    let prefix = unique_prefix();
    seed_single(&master.url(), &prefix).await.expect("seed markers");
    let app = TestApp::spawn_with(AppOptions {
        key_prefix: Some(prefix),
        tweak: Some(Arc::new(move |s| {
            // Only the scheme (and credentials) of the master URL count.
            via_sentinel(s, sentinel_url.clone(), "redis://sentinel-names-the-host:1");
            s.replay.min_replica_acks = 1;
            s.replay.replica_ack_timeout_ms = 1500;
            s.replay.command_timeout_ms = 3000;
        })),
        ..AppOptions::default()
    })
    .await;
    let a = app.assertion("bot").sign();
    app.client_credentials(&a, DOCS, None).await.assert_ok();
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");

    redis_cmd(&sentinel.url(), &["SENTINEL", "FAILOVER", "mymaster"]).await.expect("SENTINEL FAILOVER");
    let moved = within(Duration::from_secs(20), || async {
        let r = redis_cmd(&replica.url(), &["ROLE"]).await.ok()?;
        let redis::Value::Array(role) = r else { return None };
        matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master").then_some(())
    })
    .await;
    assert!(moved.is_some(), "the replica was promoted");
    let served = within(Duration::from_secs(20), || async {
        let r = app.client_credentials(&app.assertion("bot").sign(), DOCS, None).await;
        (r.status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "the broker spends on the new master");
    app.client_credentials(&a, DOCS, None).await.assert_error(401, "invalid_client");
}

/// Sentinels reached over plain `redis://` beside a master reached over `rediss://` with a
/// private CA (`replay.tls_ca_file`): the CA is for the TLS connections only, so the broker
/// starts (a TLS client cannot be built for a plain URL). Nothing answers at those addresses:
/// it is up and not ready.
#[tokio::test]
async fn plain_sentinels_beside_a_tls_master_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, _) = test_pki(dir.path());
    let (sentinel, master) = (free_port(), free_port());
    let app = TestApp::spawn_with(AppOptions {
        tweak: Some(Arc::new(move |s| {
            via_sentinel(s, format!("redis://127.0.0.1:{sentinel}"), &format!("rediss://127.0.0.1:{master}"));
            s.replay.tls_ca_file = Some(ca.clone());
        })),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.get("/readyz").await.status, 503);
}

/// A stand-in for a Sentinel that names `addr_port` as the master of any name: a minimal
/// RESP server on a free port (`+OK` to everything else). For what a real Sentinel only
/// does briefly during a failover: naming a server that is not a master.
fn fake_sentinel(addr_port: u16) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = conn.try_clone().expect("clone");
                let mut lines = BufReader::new(conn);
                let mut line = String::new();
                // One command: *N, then N times $len and the argument.
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..2 * n {
                        line.clear();
                        if lines.read_line(&mut line).is_err() {
                            return;
                        }
                        args.push(line.trim().to_ascii_lowercase());
                    }
                    let reply = if args.iter().any(|a| a == "get-master-addr-by-name") {
                        format!(
                            "*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{addr_port}\r\n",
                            addr_port.to_string().len()
                        )
                    } else {
                        "+OK\r\n".to_string()
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

/// Sentinel naming a replica (as it can for a moment during a failover): the broker checks
/// `ROLE` and refuses to spend there (503, fail closed), even on a replica that would take
/// the write (`replica-read-only no`): a resync would drop the spent key, and the
/// assertion could be replayed.
#[tokio::test]
async fn sentinel_naming_a_replica_is_not_used_as_the_master() {
    let master = RedisServer::start();
    let replica = RedisServer::spawn_with(
        free_port(),
        &["--replicaof", "127.0.0.1", &master.port.to_string(), "--replica-read-only", "no"],
    );
    replica.wait_ready();
    let sentinel = fake_sentinel(replica.port);
    let app = TestApp::spawn_with(AppOptions {
        tweak: Some(Arc::new(move |s| {
            via_sentinel(s, format!("redis://127.0.0.1:{sentinel}"), "redis://sentinel-names-the-host:1");
        })),
        ..AppOptions::default()
    })
    .await;
    app.assert_replay_store_unavailable().await;
}
