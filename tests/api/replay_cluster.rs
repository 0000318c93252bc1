//! Replay protection on Redis Cluster (RFC 7523 section 3 item 7): the spend stays atomic
//! (every key it touches is in one slot), a wiped master closes only its share of the key
//! groups, and a failover to a replica that acknowledged the spends (WAIT) forgets nothing.

use crate::helpers::*;
use crate::redis_cluster::RedisCluster;
use crate::replay_support::*;
use agent_sts::config::RedisTopology;
use agent_sts::replay::{group_of, key_slot, marker_key_names, GROUPS};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn on_cluster(cluster: &RedisCluster, prefix: &str, min_replica_acks: u32) -> AppOptions {
    let nodes = cluster.urls();
    AppOptions {
        key_prefix: Some(prefix.to_string()),
        tweak: Some(Arc::new(move |s| {
            s.replay.topology = RedisTopology::Cluster;
            s.replay.nodes = nodes.clone();
            s.replay.min_replica_acks = min_replica_acks;
            // Generous: a busy CI machine may take a while to schedule a replica.
            s.replay.replica_ack_timeout_ms = 1500;
            s.replay.command_timeout_ms = 3000;
        })),
        ..AppOptions::default()
    }
}

/// Which master serves each key group of `prefix`, by port.
async fn groups_by_master(cluster: &RedisCluster, prefix: &str) -> HashMap<u16, Vec<usize>> {
    let markers = marker_key_names(prefix);
    let mut by_master: HashMap<u16, Vec<usize>> = HashMap::new();
    for (g, marker) in markers.iter().enumerate() {
        by_master.entry(cluster.master_of(key_slot(marker)).await).or_default().push(g);
    }
    by_master
}

/// An assertion of `bot` whose key falls into one of `groups`.
fn assertion_in(app: &TestApp, groups: &[usize]) -> String {
    loop {
        let jti = agent_sts::crypto::random_id();
        if groups.contains(&group_of("bot", &jti)) {
            return app.assertion("bot").claim("jti", json!(jti)).sign();
        }
    }
}

/// Three broker instances on one cluster race 1000 copies of one assertion: one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7523_3_three_brokers_race_one_assertion_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let prefix = unique_prefix();
    // Instances behind one load balancer share the issuer identifier (the assertion's one aud).
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let mut brokers = Vec::new();
    for _ in 0..3 {
        let opts = AppOptions { issuer: Some(issuer.clone()), ..on_cluster(&cluster, &prefix, 0) };
        brokers.push(Arc::new(TestApp::spawn_with(opts).await));
    }
    // The groups spread over all three masters.
    let spread = groups_by_master(&cluster, &prefix).await;
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.values().all(|g| g.len() >= GROUPS / 4), "{spread:?}");

    let a = Arc::new(brokers[0].assertion("bot").sign());
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (b, a, limit) = (brokers[i % 3].clone(), a.clone(), limit.clone());
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                b.client_credentials(&a, DOCS, None).await
            })
        })
        .collect();
    let mut tokens = 0;
    for t in tasks {
        let r = t.await.expect("join");
        if r.status == 200 {
            tokens += 1;
        } else {
            r.assert_error(401, "invalid_client");
        }
    }
    assert_eq!(tokens, 1, "exactly one of 1000 copies gets a token");
}

/// A master wiped (FLUSHALL, replicated to its replica): its groups' markers are gone, so
/// what was spent there is refused (503, record lost) and its groups refuse even fresh
/// assertions for the future tolerance, while the other masters' groups serve on. Then
/// another master is killed: its replica, which acknowledged every spend (WAIT), takes
/// over; the broker follows without a restart, and nothing spent before is accepted.
#[tokio::test]
async fn rfc7523_3_cluster_master_wiped_or_failed_over_accepts_no_replay() {
    let mut cluster = RedisCluster::start().await;
    let prefix = unique_prefix();
    let app = TestApp::spawn_with(on_cluster(&cluster, &prefix, 1)).await;
    let by_master = groups_by_master(&cluster, &prefix).await;
    let mut masters: Vec<u16> = by_master.keys().copied().collect();
    masters.sort_unstable();
    let (wiped, killed, kept) = (masters[0], masters[1], masters[2]);
    let mut spent: HashMap<u16, Vec<String>> = HashMap::new();
    for m in &masters {
        for _ in 0..3 {
            let a = assertion_in(&app, &by_master[m]);
            app.client_credentials(&a, DOCS, None).await.assert_ok();
            spent.entry(*m).or_default().push(a);
        }
    }

    // 1. Wipe one master.
    redis_cmd(&format!("redis://127.0.0.1:{wiped}"), &["FLUSHALL"]).await.expect("FLUSHALL");
    for a in &spent[&wiped] {
        let r = app.client_credentials(a, DOCS, None).await;
        r.assert_error(503, "temporarily_unavailable");
        assert!(r.text.contains("replay record was lost"), "{}", r.text);
    }
    let fresh_there = app.client_credentials(&assertion_in(&app, &by_master[&wiped]), DOCS, None).await;
    fresh_there.assert_error(503, "temporarily_unavailable");
    for m in [killed, kept] {
        app.client_credentials(&assertion_in(&app, &by_master[&m]), DOCS, None).await.assert_ok();
        for a in &spent[&m] {
            app.client_credentials(a, DOCS, None).await.assert_error(401, "invalid_client");
        }
    }
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.body["replay_record_lost"]["groups_affected"],
        json!(by_master[&wiped].len()),
        "{}",
        ready.text
    );

    // 2. Kill another master. Its replica is promoted and the broker finds it without a
    // restart: what was spent there is a replay (the replica acknowledged every spend), and
    // until the new master has a replica of its own, nothing new is confirmed (503).
    cluster.kill(killed);
    let promoted = within(Duration::from_secs(30), || async {
        let r = app.client_credentials(&spent[&killed][0], DOCS, None).await;
        match r.status {
            401 => Some(r),
            _ => {
                r.assert_error(503, "temporarily_unavailable");
                None
            }
        }
    })
    .await;
    promoted
        .expect("the promoted replica serves the failed master's groups")
        .assert_error(401, "invalid_client");
    for a in &spent[&killed] {
        app.client_credentials(a, DOCS, None).await.assert_error(401, "invalid_client");
    }
    let unconfirmed = app.client_credentials(&assertion_in(&app, &by_master[&killed]), DOCS, None).await;
    unconfirmed.assert_error(503, "temporarily_unavailable");
    assert!(unconfirmed.text.contains("replicas"), "{}", unconfirmed.text);
    app.client_credentials(&assertion_in(&app, &by_master[&kept]), DOCS, None).await.assert_ok();

    // 3. The old master comes back (empty) and rejoins as the new master's replica: its
    // groups issue tokens again, and still no replay passes.
    cluster.restart(killed);
    let served = within(Duration::from_secs(30), || async {
        let r = app.client_credentials(&assertion_in(&app, &by_master[&killed]), DOCS, None).await;
        (r.status == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "tokens again once the new master has a replica");
    for a in spent.values().flatten() {
        let r = app.client_credentials(a, DOCS, None).await;
        assert_ne!(r.status, 200, "{}", r.text);
    }
}
