//! Connections to the three topologies: one Redis (or a managed endpoint) by URL, the master
//! that Redis Sentinel names, and Redis Cluster. TLS (`rediss://`) with an optional CA file
//! that replaces the system trust store.
//!
//! Each HTTP worker thread gets a connection of its own, created lazily on that thread, so the
//! connection's driver task runs where the requests run. With one shared connection every
//! replay check from the other workers crossed threads twice: the load generator measured
//! 117 µs of broker CPU per exchange with one connection and ~111 µs with one per worker
//! (benches/README.md). Cluster and Sentinel connections follow the same rule.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisResult, TlsCertificates, Value,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Connections per store; worker threads beyond this share them round-robin.
const SLOTS: usize = 8;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's connection slot, assigned round-robin on first use.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

fn this_slot() -> usize {
    SLOT.with(|s| *s)
}

/// Where the replay store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis, or a managed endpoint that fails over behind one address.
    Single { url: String },
    /// The master that the Sentinels name `master_name`. `master_url` gives the scheme,
    /// credentials and database for the master; its host and port come from Sentinel.
    Sentinel { sentinels: Vec<String>, master_name: String, master_url: String },
    /// Redis Cluster, found from these seed nodes; the topology is followed as it changes.
    Cluster { nodes: Vec<String> },
}

fn bad_config(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what))
}

fn info(url: &str) -> RedisResult<ConnectionInfo> {
    let info = url.into_connection_info()?;
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err(bad_config(
            "#insecure turns off certificate checks; give the CA with replay.tls_ca_file",
        ));
    }
    Ok(info)
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// A client for `info`; a TLS one checks the server against `ca` when given.
fn client(info: ConnectionInfo, ca: Option<&[u8]>) -> RedisResult<Client> {
    match ca {
        Some(pem) if is_tls(&info) => {
            Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) })
        }
        _ => Client::open(info),
    }
}

pub(super) enum Link {
    Single(Single),
    Sentinel(Box<Sentinel>),
    Cluster(Cluster),
}

impl Link {
    /// Set up the connections; nothing connects until first use, so the broker starts (and
    /// reports not-ready) while Redis is down.
    pub fn new(topology: &Topology, ca: Option<&[u8]>, timeout: Duration) -> RedisResult<Link> {
        Ok(match topology {
            Topology::Single { url } => {
                let info = info(url)?;
                if ca.is_some() && !is_tls(&info) {
                    return Err(bad_config("replay.tls_ca_file needs a rediss:// URL"));
                }
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(200));
                let client = client(info, ca)?;
                // Validates the configuration once; the per-thread connections are made on use.
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
                Link::Single(Single { client, config, slots: (0..SLOTS).map(|_| OnceLock::new()).collect() })
            }
            Topology::Sentinel { sentinels, master_name, master_url } => {
                if sentinels.is_empty() {
                    return Err(bad_config("Sentinel needs at least one Sentinel address"));
                }
                let sentinels =
                    sentinels.iter().map(|u| client(info(u)?, ca)).collect::<RedisResult<Vec<_>>>()?;
                let master = info(master_url)?;
                Link::Sentinel(Box::new(Sentinel {
                    sentinels,
                    master_name: master_name.clone(),
                    master,
                    ca: ca.map(<[u8]>::to_vec),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout)),
                    slots: (0..SLOTS).map(|_| Default::default()).collect(),
                }))
            }
            Topology::Cluster { nodes } => {
                if ca.is_some() {
                    // The redis crate takes a cluster CA only with rustls; the broker uses
                    // OpenSSL (native-tls). Refused rather than silently trusting the system store.
                    return Err(bad_config(
                        "replay.tls_ca_file is not supported with Redis Cluster; add the CA to the system trust store",
                    ));
                }
                let nodes = nodes.iter().map(|u| info(u)).collect::<RedisResult<Vec<_>>>()?;
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    // Give up on a dead node after a few attempts: the slots it served are
                    // then looked up again, which finds the replica promoted in its place.
                    .max_connection_attempts(std::num::NonZeroUsize::MIN.saturating_add(2))
                    .build()?;
                Link::Cluster(Cluster { client, slots: (0..SLOTS).map(|_| Default::default()).collect() })
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Link::Single(_) => "redis",
            Link::Sentinel(_) => "redis-sentinel",
            Link::Cluster(_) => "redis-cluster",
        }
    }

    /// Run `pipe` (`count` replies) on the master that owns `slot`, in order, on one
    /// connection. Server errors come back as [`Value::ServerError`] (the pipeline ignores
    /// errors) so the caller can tell `NOSCRIPT` from the rest.
    pub async fn run(&self, slot: u16, pipe: Pipeline, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Link::Single(s) => pipe.query_async(&mut s.conn()?).await,
            Link::Sentinel(s) => {
                let result = match s.conn().await {
                    Ok(mut c) => pipe.query_async::<Vec<Value>>(&mut c).await,
                    Err(e) => Err(e),
                };
                // Anything but a missing script may mean the master moved: ask Sentinel again.
                let moved = match &result {
                    Err(_) => true,
                    Ok(values) => {
                        values.iter().any(|v| matches!(v, Value::ServerError(e) if e.code() != "NOSCRIPT"))
                    }
                };
                if moved {
                    s.forget().await;
                }
                result
            }
            Link::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.conn().await?.route_pipeline(pipe, 0, count, route).await
            }
        }
    }

    /// `CONFIG GET name` on every master: the values seen.
    pub async fn config_get(&self, name: &str) -> RedisResult<Vec<String>> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let reply: Value = match self {
            Link::Single(s) => cmd.query_async(&mut s.conn()?).await?,
            Link::Sentinel(s) => cmd.query_async(&mut s.conn().await?).await?,
            Link::Cluster(c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                c.conn().await?.route_command(cmd, all).await?
            }
        };
        // Single: [name, value] (RESP2) or {name: value} (RESP3), names and values as bulk
        // strings; cluster: one such reply per master, keyed by address.
        let mut strings = Vec::new();
        flatten(&reply, &mut strings);
        Ok(strings.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect())
    }
}

fn flatten(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        _ => {}
    }
}

pub(super) struct Single {
    client: Client,
    config: ConnectionManagerConfig,
    slots: Box<[OnceLock<ConnectionManager>]>,
}

impl Single {
    /// This thread's connection, created on first use from this thread (no I/O here: the
    /// connection itself is made lazily by the first command, and remade when it drops).
    fn conn(&self) -> RedisResult<ConnectionManager> {
        let slot = &self.slots[this_slot()];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let fresh = ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        Ok(slot.get_or_init(|| fresh).clone())
    }
}

pub(super) struct Sentinel {
    sentinels: Vec<Client>,
    master_name: String,
    master: ConnectionInfo,
    ca: Option<Vec<u8>>,
    config: AsyncConnectionConfig,
    slots: Box<[tokio::sync::Mutex<Option<MultiplexedConnection>>]>,
}

impl Sentinel {
    async fn conn(&self) -> RedisResult<MultiplexedConnection> {
        let mut slot = self.slots[this_slot()].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect_master().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.slots[this_slot()].lock().await = None;
    }

    /// Ask the Sentinels in turn for the master's address, connect, and check with `ROLE`
    /// that it is a master (a Sentinel may be behind during a failover).
    async fn connect_master(&self) -> RedisResult<MultiplexedConnection> {
        let mut last = bad_config("no Sentinel answered");
        for sentinel in &self.sentinels {
            match self.try_sentinel(sentinel).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn try_sentinel(&self, sentinel: &Client) -> RedisResult<MultiplexedConnection> {
        let mut s = sentinel.get_multiplexed_async_connection_with_config(&self.config).await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut s)
            .await?;
        let (host, port) = addr.ok_or_else(|| {
            RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "Sentinel does not know this master"))
        })?;
        let addr = if is_tls(&self.master) {
            ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let master = client(self.master.clone().set_addr(addr), self.ca.as_deref())?;
        let mut c = master.get_multiplexed_async_connection_with_config(&self.config).await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r == b"master" => Ok(c),
            _ => Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the address Sentinel gave is not a master (failover in progress?)",
            ))),
        }
    }
}

pub(super) struct Cluster {
    client: ClusterClient,
    slots: Box<[tokio::sync::OnceCell<ClusterConnection>]>,
}

impl Cluster {
    /// This thread's cluster connection; it follows topology changes (MOVED, failover) by
    /// itself once made.
    async fn conn(&self) -> RedisResult<ClusterConnection> {
        self.slots[this_slot()].get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_settings_that_would_trust_anything() {
        let t = Duration::from_millis(100);
        let single = |url: &str| Topology::Single { url: url.into() };
        assert!(Link::new(&single("rediss://127.0.0.1:6380/#insecure"), None, t).is_err());
        assert!(Link::new(&single("redis://127.0.0.1:6379"), Some(b"pem"), t).is_err());
        assert!(Link::new(
            &Topology::Cluster { nodes: vec!["rediss://127.0.0.1:7000".into()] },
            Some(b"pem"),
            t
        )
        .is_err());
        assert!(Link::new(&single("rediss://127.0.0.1:6380"), None, t).is_ok());
    }
}
