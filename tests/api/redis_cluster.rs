//! A local Redis Cluster for the tests: three masters with one replica each, every node a
//! `redis-server` child on free ports (client and bus), killed on drop.

use crate::helpers::*;
use crate::replay_support::redis_cmd;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Each node's arguments (its own directory, with its nodes.conf, and bus port).
    args: Vec<Vec<String>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    /// Start six nodes, join them with `redis-cli --cluster create --cluster-replicas 1`, and
    /// wait until every slot is served and every replica is in sync (at most 30 s).
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        let mut all_args = Vec::new();
        for _ in 0..6 {
            let dir = tempfile::tempdir().expect("tmp");
            let (port, bus) = (free_port(), free_port());
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-node-timeout",
                "1000",
                "--dir",
                &dir.path().display().to_string(),
                "--repl-diskless-sync-delay",
                "0",
                "--repl-diskless-load",
                "on-empty-db",
            ]
            .map(String::from);
            let node = RedisServer::spawn_with(port, &args.iter().map(String::as_str).collect::<Vec<_>>());
            node.wait_ready();
            nodes.push(node);
            dirs.push(dir);
            all_args.push(args.to_vec());
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be on PATH (it comes with redis-server)");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes, args: all_args, _dirs: dirs };
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Until every live node says `cluster_state:ok` and three replicas are in sync.
    async fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let ok = async {
                for n in &self.nodes {
                    let info = info_text(&n.url(), &["CLUSTER", "INFO"]).await;
                    if !info.contains("cluster_state:ok") {
                        return false;
                    }
                }
                let mut online = 0;
                for n in &self.nodes {
                    let info = info_text(&n.url(), &["INFO", "replication"]).await;
                    online += info.matches("state=online").count();
                }
                online == 3
            }
            .await;
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster did not become healthy within {limit:?}");
    }

    /// The port of the master serving `slot`, asked of any node that answers.
    pub async fn master_of(&self, slot: u16) -> u16 {
        for n in &self.nodes {
            let Ok(redis::Value::Array(ranges)) = redis_cmd(&n.url(), &["CLUSTER", "SLOTS"]).await else {
                continue;
            };
            for r in ranges {
                let redis::Value::Array(r) = r else { continue };
                if let [redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(master), ..] =
                    r.as_slice()
                {
                    if (*lo..=*hi).contains(&i64::from(slot)) {
                        if let Some(redis::Value::Int(port)) = master.get(1) {
                            return u16::try_from(*port).expect("port");
                        }
                    }
                }
            }
        }
        panic!("no node answered CLUSTER SLOTS");
    }

    /// Kill the node on `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        self.nodes.iter_mut().filter(|n| n.port == port).for_each(RedisServer::stop);
    }

    /// Start the killed node on `port` again, empty, with its nodes.conf: it rejoins the
    /// cluster (as a replica, when its master role was taken over meanwhile).
    pub fn restart(&mut self, port: u16) {
        let i = self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster");
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        self.nodes[i] = RedisServer::spawn_with(port, &args);
        self.nodes[i].wait_ready();
    }
}

async fn info_text(url: &str, args: &[&str]) -> String {
    match redis_cmd(url, args).await {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        _ => String::new(),
    }
}
