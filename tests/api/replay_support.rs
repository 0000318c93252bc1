//! Helpers for the replay-store tests: raw Redis commands, marker seeding, waiting.

use agent_sts::clock::{Clock, SystemClock};
use agent_sts::config::{RedisTopology, ReplayBackend, Settings};
use agent_sts::replay::marker_key_names;
use std::time::{Duration, Instant};

/// One command on a plain connection to `url`, bounded by 2 s.
pub async fn redis_cmd(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = client.get_multiplexed_async_connection_with_config(&cfg).await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

/// Create every replay marker of the settings' prefix as if the store had served for long
/// (older than any loss window), unless it exists. Best effort: a Redis that is not up yet
/// gets its markers from the broker later (and that counts as a loss).
pub async fn seed_markers(settings: &Settings) {
    if settings.replay.backend != Some(ReplayBackend::Redis) {
        return;
    }
    let long_ago = (SystemClock.now_ms() - 86_400_000).to_string();
    let prefix = &settings.replay.key_prefix;
    let seeded = async {
        match settings.replay.topology {
            RedisTopology::Single => seed_single(&settings.replay.redis_url, prefix).await,
            RedisTopology::Cluster => {
                let client = redis::cluster::ClusterClient::new(settings.replay.nodes.clone())?;
                let mut conn = client.get_async_connection().await?;
                for marker in marker_key_names(prefix) {
                    let _: () = redis::cmd("SET")
                        .arg(marker)
                        .arg(&long_ago)
                        .arg("NX")
                        .query_async(&mut conn)
                        .await
                        .or_else(|e| {
                            if e.kind() == redis::ErrorKind::UnexpectedReturnType {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })?;
                }
                Ok(())
            }
            RedisTopology::Sentinel => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), seeded).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("seeding replay markers failed: {e}"),
        Err(_) => eprintln!("seeding replay markers timed out"),
    }
}

/// As [`seed_markers`], on one plain Redis.
pub async fn seed_single(url: &str, prefix: &str) -> redis::RedisResult<()> {
    if url.starts_with("rediss://") {
        return Ok(());
    }
    let long_ago = (SystemClock.now_ms() - 86_400_000).to_string();
    let mut cmds = redis::pipe();
    for marker in marker_key_names(prefix) {
        cmds.cmd("SET").arg(marker).arg(&long_ago).arg("NX").ignore();
    }
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmds.exec_async(&mut conn).await
}

/// Poll `f` until it returns `Some`, for at most `limit`.
pub async fn within<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
