//! The agent-sts load generator: a real broker process, a real token endpoint, loopback HTTP.
//!
//! ```text
//! cargo build --release                                   # the broker binary it drives
//! cargo bench --bench loadgen -- --replay redis           # client_credentials, Redis replay
//! cargo bench --bench loadgen -- --replay redis --half-peak
//! cargo bench --bench loadgen -- --replay redis-cluster     # a local 3-master Redis Cluster
//! cargo bench --bench loadgen -- --mode token-exchange --replay memory
//! cargo bench --bench loadgen -- --mode healthz                # the HTTP floor, no exchange
//! cargo bench --bench loadgen -- --help
//! ```
//!
//! Figures measured with it, and what they mean for issue 3: `benches/README.md`.
//!
//! What it does, in order:
//! 1. writes a temporary policy (fresh agent keys), broker signing key and config TOML;
//!    with `--replay redis` starts its own `redis-server` on a free loopback port, with
//!    `--replay redis-cluster` three cluster masters (no replicas) joined by `redis-cli`;
//!    either way the replay markers are created "long ago" first, as on a store that has
//!    served for a while (a new marker is a loss, and the broker would refuse at first);
//! 2. spawns `agent-sts serve --config …` (issuer `http://127.0.0.1:<port>`, `RUST_LOG=warn`
//!    unless `--broker-log`) and times the cold start: spawn ▶ first 200 from `GET /readyz`;
//! 3. times the cryptographic floor on this run's keys (ES256 verify + sign, through josekit
//!    and through OpenSSL's ECDSA primitives, thread CPU, fastest of 9 rounds) while the
//!    broker is idle, so every window's CPU per exchange is compared with a floor measured in
//!    the same run;
//! 4. per phase, pre-generates every request before the clock starts: one fresh assertion
//!    each (unique `jti`, `exp = iat + 60`), signed with the library, framed as HTTP/1.1 bytes;
//! 5. drives `POST /token` with `--connections` keep-alive connections for `--warmup-secs` (not
//!    counted) then `--duration-secs`, unlimited or paced at `--rate` req/s; every response
//!    must be 200 with an `access_token`; anything else is counted by status and `error`;
//! 6. reports requests/s, latency percentiles, the broker's CPU seconds per successful
//!    exchange (utime + stime from `/proc/<pid>/stat`, sampled at the window's edges), its
//!    peak RSS (`VmHWM`), and the cold start.
//!
//! The client is a minimal HTTP/1.1 client on one tokio thread so that it takes as little
//! of the shared CPU as possible; its own CPU time is reported too. By default its threads
//! are `SCHED_BATCH` so that they never preempt the broker when a response wakes them
//! (`--client-sched normal` to compare); the broker and Redis run under the normal policy.
//! Everything listens on 127.0.0.1; every child process is killed when this process exits,
//! fails or panics.

mod common;
mod soak;

use agent_sts::crypto::{self, Alg};
use clap::{Parser, ValueEnum};
use common::{AgentKey, DOCS, TICKETS};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Assertions live at most this long (issue 3: `exp` ≤ 60 s).
const ASSERTION_LIFETIME_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GrantMode {
    /// `client_credentials` with a client assertion (RFC 7523 §2.2).
    ClientCredentials,
    /// The assertion is the grant (RFC 7523 §2.1).
    JwtBearer,
    /// Re-scope an access token of ours for the other server (RFC 8693), with a fresh client
    /// assertion; subject tokens are obtained before the timed window.
    TokenExchange,
    /// No exchange: `GET /healthz`, the cheapest route. Its CPU per request is the HTTP
    /// floor (actix, loopback TCP, scheduling) that every exchange pays on top of the crypto.
    Healthz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientSched {
    /// `SCHED_BATCH` for the load generator's threads: the kernel never lets them preempt
    /// the broker when they wake up (a response arrived); they run when a core is free or
    /// the broker's time slice ends. The broker and Redis keep the normal policy.
    Batch,
    /// The normal policy: every response wakes the client, which may preempt a broker
    /// worker on the shared cores (about 0.75 involuntary context switches per exchange).
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Replay {
    Memory,
    Redis,
    /// Three Redis Cluster masters (no replicas) on free loopback ports.
    RedisCluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Drive a real agent-sts broker over loopback and measure it (issue 3).")]
struct Args {
    #[arg(long, value_enum, default_value = "client-credentials")]
    mode: GrantMode,
    /// Replay store of the broker; `redis` starts a private redis-server.
    #[arg(long, value_enum, default_value = "memory")]
    replay: Replay,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Traffic before the measured window, not counted (connections, caches, allocator).
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Pace requests at this many per second (all connections together); default: as fast
    /// as the broker answers.
    #[arg(long)]
    rate: Option<f64>,
    /// After the first (peak) window, run a second one paced at half the measured peak
    /// (the issue's latency target is p99 at half of peak throughput).
    #[arg(long)]
    half_peak: bool,
    /// After the first (peak) window, paced windows at 25, 50, 75 and 90 % of the measured
    /// peak: "no errors at any load below peak" checked at more than one load.
    #[arg(long)]
    sweep: bool,
    /// Requests to pre-generate for an unpaced window (default: 20000 per second of warm-up
    /// plus window). A window that runs out ends early and says so.
    #[arg(long)]
    assertions: Option<usize>,
    /// Number of agents in the policy; requests rotate over them.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Agents' key algorithm.
    #[arg(long, default_value = "ES256")]
    alg: Alg,
    /// RUST_LOG of the broker. `warn` (default) leaves out the per-request audit line;
    /// `info` measures with audit logging on (written to a file in the temp directory).
    #[arg(long, default_value = "warn")]
    broker_log: String,
    /// server.workers of the broker (default: its own default, one per CPU).
    #[arg(long)]
    broker_workers: Option<usize>,
    /// Pin the broker to these CPUs (a `taskset -c` list, e.g. `0`); with `--client-cpus`
    /// this keeps the load generator (and Redis) off the broker's cores.
    #[arg(long)]
    broker_cpus: Option<String>,
    /// Pin the load generator and the Redis it starts to these CPUs (e.g. `1`).
    #[arg(long)]
    client_cpus: Option<String>,
    /// Scheduling policy of the load generator's own threads (it shares the broker's cores).
    #[arg(long, value_enum, default_value = "batch")]
    client_sched: ClientSched,
    /// `metrics.enabled` of the broker: `on` (its default) counts every request for
    /// `/metrics`; `off` is the plain figure.
    #[arg(long, value_enum, default_value = "on")]
    metrics: OnOff,
    /// Export traces over OTLP/HTTP to a sink in this process (every request sampled); the
    /// sink counts what it receives and answers 200.
    #[arg(long)]
    otlp: bool,
    /// Soak mode (issue 14): run this long, paced at `--soak-fraction` of the peak (or at
    /// `--rate`), sampling the broker's RSS and open fds every 10 s (benches/soak/mod.rs).
    #[arg(long)]
    soak_secs: Option<u64>,
    /// The soak's share of the measured peak.
    #[arg(long, default_value_t = 0.7)]
    soak_fraction: f64,
    /// Exit with status 1 if any request failed in any window (CI's smoke run uses it).
    #[arg(long)]
    fail_on_error: bool,
    /// Print the results as one JSON object too.
    #[arg(long)]
    json: bool,
    /// Pad the policy with this many generated agents (one ES256 key each, issue 12) that
    /// send nothing: per-request CPU with a large policy against the same run without.
    #[arg(long, default_value_t = 0)]
    pad_agents: usize,
    /// Generated servers of the padding (the padding agents reach `--pad-allow` of them).
    #[arg(long, default_value_t = 1000)]
    pad_servers: usize,
    #[arg(long, default_value_t = 5)]
    pad_allow: usize,
    /// Split the padding over this many files (the policy is then a directory).
    #[arg(long, default_value_t = 1)]
    pad_files: usize,
    /// How long the broker may take to answer /readyz (a large policy loads first; a broker
    /// under valgrind, through an `AGENT_STS_BIN` wrapper script, starts slowly too).
    #[arg(long, default_value_t = 15)]
    ready_timeout_secs: u64,
    /// `cargo bench` passes `--bench`; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type Error = Box<dyn std::error::Error>;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        // Children are killed by their guards, which have been dropped by now.
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

/// A child process that is killed (and reaped) when the guard goes out of scope: on
/// success, on error and on panic.
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            if let Err(e) = self.child.kill() {
                eprintln!("loadgen: could not stop {} (pid {}): {e}", self.name, self.child.id());
            }
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn broker_binary() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("AGENT_STS_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("AGENT_STS_BIN={} is not a file", p.display()).into())
        };
    }
    // This binary is target/release/deps/loadgen-<hash>; the broker is target/release/agent-sts.
    let exe = std::env::current_exe()?;
    let candidate = exe.parent().and_then(Path::parent).map(|d| d.join("agent-sts"));
    match candidate {
        Some(p) if p.is_file() => Ok(p),
        _ => {
            Err("the broker binary is missing: run `cargo build --release` first (or set AGENT_STS_BIN)"
                .into())
        }
    }
}

/// Children (the broker, Redis) run under the normal policy whatever `--client-sched` set
/// for this process.
fn normal_sched(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only sched_setscheduler(2) runs, which is
    // async-signal-safe and touches no memory but the parameter on this stack.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// Put this thread (and threads and children created after, unless they reset it) under
/// `SCHED_BATCH`.
fn batch_self() -> Result<(), Error> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the parameter struct only.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(format!("--client-sched batch: {}", std::io::Error::last_os_error()).into())
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Thread CPU (µs) per call of each of `ops`: 9 rounds, each running every op 200 times in
/// turn (so that a noisy moment hits all of them alike), after 50 unmeasured calls each;
/// the fastest round per op. The floor is what the cryptography costs when nothing else
/// interferes, so the minimum, not the median: it makes the ratio stricter, not kinder.
fn measure_floor<const N: usize>(ops: [&dyn Fn(); N]) -> [f64; N] {
    for op in ops {
        for _ in 0..50 {
            op();
        }
    }
    let mut best = [f64::INFINITY; N];
    for _ in 0..9 {
        for (i, op) in ops.iter().enumerate() {
            let t = thread_cpu();
            for _ in 0..200 {
                op();
            }
            best[i] = best[i].min((thread_cpu() - t).as_secs_f64() * 1e6 / 200.0);
        }
    }
    best
}

/// The cryptographic floor (µs of CPU) measured in this run, through josekit and through
/// OpenSSL's ECDSA primitives (benches/common/mod.rs, `Floor`).
#[derive(Debug, Clone, Copy)]
struct Floors {
    josekit_verify: f64,
    josekit_sign: f64,
    openssl_verify: f64,
    openssl_sign: f64,
}

impl Floors {
    fn measure(floor: &common::Floor) -> Floors {
        let [josekit_verify, josekit_sign, openssl_verify, openssl_sign] = measure_floor([
            &|| floor.josekit_verify(),
            &|| drop(std::hint::black_box(floor.josekit_sign())),
            &|| floor.openssl_verify(),
            &|| drop(std::hint::black_box(floor.openssl_sign())),
        ]);
        Floors { josekit_verify, josekit_sign, openssl_verify, openssl_sign }
    }

    /// (josekit, OpenSSL) floors of one exchange in `mode`: the signatures it must verify
    /// (assertion; token exchange also its subject token) plus the one it makes.
    fn of(self, mode: GrantMode) -> Option<(f64, f64)> {
        let verifies = match mode {
            GrantMode::ClientCredentials | GrantMode::JwtBearer => 1.0,
            GrantMode::TokenExchange => 2.0,
            GrantMode::Healthz => return None,
        };
        Some((
            verifies * self.josekit_verify + self.josekit_sign,
            verifies * self.openssl_verify + self.openssl_sign,
        ))
    }
}

fn start_redis(port: u16) -> Result<ChildGuard, Error> {
    let child = normal_sched(&mut Command::new("redis-server"))
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "--replay redis needs `redis-server` on PATH (apt-get install redis-server)".to_string()
            }
            _ => format!("cannot start redis-server: {e}"),
        })?;
    let mut guard = ChildGuard { name: "redis-server", child };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = guard.exited() {
            return Err(format!("redis-server exited at start ({status})").into());
        }
        if redis_ping(port).is_ok() {
            return Ok(guard);
        }
        if Instant::now() > deadline {
            return Err("redis-server did not answer PING within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A local Redis Cluster: three masters, no replicas (the broker's work per spend is the
/// same; replicas would only add Redis CPU), each in a directory of its own.
struct RedisClusterGuard {
    nodes: Vec<ChildGuard>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn start_redis_cluster() -> Result<RedisClusterGuard, Error> {
    let dir = tempfile::Builder::new().prefix("agent-sts-loadgen-cluster-").tempdir()?;
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let (port, bus) = (free_port()?, free_port()?);
        let node_dir = dir.path().join(format!("node{i}"));
        std::fs::create_dir(&node_dir)?;
        let child = normal_sched(&mut Command::new("redis-server"))
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
            .arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        nodes.push(ChildGuard { name: "redis-server (cluster)", child });
        ports.push(port);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|p| redis_ping(*p).is_ok()) {
        if Instant::now() > deadline {
            return Err("cluster nodes did not answer PING within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|e| format!("--replay redis-cluster needs redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!("redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout)).into());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = ports.iter().all(|p| {
            let info = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
            info.is_ok_and(|i| i.contains("cluster_state:ok"))
        });
        if ok {
            return Ok(RedisClusterGuard { nodes, ports, _dir: dir });
        }
        if Instant::now() > deadline {
            return Err("the cluster did not reach cluster_state:ok within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Create the broker's replay markers as if the store had served for long: a missing marker
/// is a loss, after which the broker refuses for the clock skew (tokens.clock_skew_secs).
fn seed_replay_markers(urls: &[String], cluster: bool) -> Result<(), Error> {
    use agent_sts::clock::Clock;
    let long_ago = agent_sts::clock::SystemClock.now_ms() - 86_400_000;
    let markers = agent_sts::replay::marker_key_names("agent-sts:");
    let set = |m: &String| redis::cmd("SET").arg(m).arg(long_ago).arg("NX").clone();
    if cluster {
        let mut c = redis::cluster::ClusterClient::new(urls.to_vec())?.get_connection()?;
        for m in &markers {
            let _: Option<String> = set(m).query(&mut c)?;
        }
    } else {
        let mut c = redis::Client::open(urls[0].as_str())?.get_connection()?;
        for m in &markers {
            let _: Option<String> = set(m).query(&mut c)?;
        }
    }
    Ok(())
}

fn redis_ping(port: u16) -> Result<(), Error> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err("no PONG".into())
    }
}

/// The status code of `GET path` (blocking, one connection, `Connection: close`).
fn http_get_status(port: u16, path: &str) -> Result<u16, Error> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_nodelay(true)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = std::str::from_utf8(&buf[..got]).unwrap_or("");
    line.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| "not an HTTP response".into())
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').ok_or("malformed /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).ok_or("no utime")?.parse::<u64>()? + f.get(12).ok_or("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

/// Context switches (voluntary and involuntary) summed over every thread of a process.
fn context_switches(pid: &str) -> Result<u64, Error> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches") || line.starts_with("nonvoluntary_ctxt_switches") {
                total += line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Busy CPU seconds of the whole machine (all CPUs), from the first line of `/proc/stat`.
fn machine_busy_secs() -> Result<f64, Error> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = f.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    Ok(busy as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A line of `/proc/<pid>/status` in KiB (e.g. `VmHWM`, `VmRSS`).
fn status_kib(pid: &str, field: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or_else(|| format!("no {field}"))?;
    let v = line.split_whitespace().nth(1).ok_or("malformed status line")?;
    Ok(v.parse()?)
}

/// Everything the run needs on disk, in a directory removed at exit.
struct Setup {
    dir: tempfile::TempDir,
    /// The broker's ES256 signing key, for the floor measured in this run.
    signing_pem: String,
    agents: Vec<AgentKey>,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    issuer: String,
    ready_timeout_secs: u64,
}

/// What the in-process OTLP sink received.
#[derive(Default)]
struct SinkCounts {
    requests: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

/// An OTLP/HTTP sink on a free loopback port: reads each request (keep-alive, Content-Length
/// framing), counts it, answers 200 with an empty body. Threads end with the process.
fn start_otlp_sink() -> Result<(u16, std::sync::Arc<SinkCounts>), Error> {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering::Relaxed;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let counts = std::sync::Arc::new(SinkCounts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else { return };
                let mut reader = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    c.requests.fetch_add(1, Relaxed);
                    c.bytes.fetch_add(len as u64, Relaxed);
                    if out
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, counts))
}

fn write_setup(args: &Args, redis_urls: &[String], otlp_port: Option<u16>) -> Result<Setup, Error> {
    let dir = tempfile::Builder::new().prefix("agent-sts-loadgen-").tempdir()?;
    let agents: Vec<AgentKey> = (0..args.agents.max(1))
        .map(|i| AgentKey::generate(&format!("https://agents.example.com/loadgen-agent-{i}"), args.alg))
        .collect();
    let own_policy = common::policy_toml(&agents.iter().collect::<Vec<_>>());
    let policy = if args.pad_agents == 0 {
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, own_policy)?;
        policy
    } else {
        // A directory: this run's agents in one file, the padding beside them.
        let policy = dir.path().join("policy");
        std::fs::create_dir_all(&policy)?;
        std::fs::write(policy.join("loadgen.toml"), own_policy)?;
        let spec = common::generated::Spec {
            servers: args.pad_servers,
            agents: args.pad_agents,
            allow: args.pad_allow,
            alg: Alg::ES256,
            seed: 1,
            prefix: "pad-".into(),
        };
        let out = if args.pad_files <= 1 { policy.join("pad.toml") } else { policy.clone() };
        common::generated::write_policy(&spec, &out, args.pad_files)?;
        policy
    };
    let signing = dir.path().join("signing.pem");
    let pair = crypto::generate_key_pair(Alg::ES256, None)?;
    std::fs::write(&signing, pair.private_pem.0.as_bytes())?;
    let port = free_port()?;
    let issuer = format!("http://127.0.0.1:{port}");
    let replay = match args.replay {
        Replay::Redis => format!("backend = \"redis\"\nredis_url = {:?}\n", redis_urls[0]),
        Replay::RedisCluster => {
            format!("backend = \"redis\"\ntopology = \"cluster\"\nnodes = {redis_urls:?}\n")
        }
        Replay::Memory => "backend = \"memory\"\nmemory_capacity = 2000000\n".to_string(),
    };
    let workers = args.broker_workers.map_or(String::new(), |w| format!("workers = {w}\n"));
    let mut ops = format!("\n[metrics]\nenabled = {}\n", args.metrics == OnOff::On);
    if let Some(p) = otlp_port {
        ops.push_str(&format!("\n[otel]\nendpoint = \"http://127.0.0.1:{p}\"\n"));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nissuer = \"{issuer}\"\n{workers}\n\
             [policy]\npath = {policy:?}\n\n[signing]\nkey_file = {signing:?}\nalg = \"ES256\"\n\n\
             [replay]\n{replay}{ops}"
        ),
    )?;
    let log = dir.path().join("broker.log");
    Ok(Setup {
        dir,
        signing_pem: pair.private_pem.0,
        agents,
        config,
        log,
        port,
        issuer,
        ready_timeout_secs: args.ready_timeout_secs,
    })
}

fn spawn_broker(
    bin: &Path,
    setup: &Setup,
    log_filter: &str,
    cpus: Option<&str>,
) -> Result<(ChildGuard, Instant), Error> {
    let log = std::fs::File::create(&setup.log)?;
    // taskset execs the broker, so the child's pid is the broker's.
    let mut cmd = match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    normal_sched(&mut cmd).arg("serve").arg("--config").arg(&setup.config);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AGENT_STS__") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", log_filter).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok((ChildGuard { name: "agent-sts", child }, started))
}

/// Pin this process (the client thread, and children spawned after) to a CPU list such as
/// `1`, `0,1` or `0-1`.
fn pin_self(list: &str) -> Result<(), Error> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        cpus.extend(a..=b);
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("--client-cpus {list}: {}", std::io::Error::last_os_error()).into())
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Spawn ▶ the first 200 from `/readyz`.
fn wait_ready(broker: &mut ChildGuard, setup: &Setup, started: Instant) -> Result<Duration, Error> {
    let deadline = started + Duration::from_secs(setup.ready_timeout_secs);
    loop {
        if let Some(status) = broker.exited() {
            return Err(format!("the broker exited at start ({status}):\n{}", log_tail(&setup.log)).into());
        }
        if let Ok(200) = http_get_status(setup.port, "/readyz") {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "/readyz did not answer 200 within {} s (--ready-timeout-secs):\n{}",
                setup.ready_timeout_secs,
                log_tail(&setup.log)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A complete HTTP/1.1 `POST /token` request.
fn frame(port: u16, body: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// Pre-generate `n` requests (each with a fresh assertion), on every core, before any clock
/// starts.
fn generate(args: &Args, setup: &Setup, subjects: &[String], n: usize) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()).min(n.max(1));
    let chunk = n.div_ceil(threads.max(1));
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let now = agent_sts::clock::Clock::now_secs(&agent_sts::clock::SystemClock);
                    let range = (t * chunk)..((t + 1) * chunk).min(n);
                    range
                        .map(|i| {
                            if args.mode == GrantMode::Healthz {
                                return format!(
                                    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                                    setup.port
                                )
                                .into_bytes();
                            }
                            let agent_idx = i % setup.agents.len();
                            let a = setup.agents[agent_idx].assertion(
                                &setup.issuer,
                                now,
                                ASSERTION_LIFETIME_SECS,
                            );
                            let body = match args.mode {
                                GrantMode::ClientCredentials => common::client_credentials_body(&a, DOCS),
                                GrantMode::JwtBearer => common::jwt_bearer_body(&a, DOCS),
                                GrantMode::TokenExchange => {
                                    // Subject tokens are per agent: only its owner may exchange one.
                                    let per_agent = subjects.len() / setup.agents.len();
                                    let k = agent_idx
                                        + setup.agents.len() * ((i / setup.agents.len()) % per_agent);
                                    common::token_exchange_body(&subjects[k], &a, TICKETS)
                                }
                                GrantMode::Healthz => unreachable!("handled above"),
                            };
                            frame(setup.port, &body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("generator thread"));
        }
    });
    out
}

/// One HTTP response: status, and the body (borrowed from the connection's buffer).
struct Response<'a> {
    status: u16,
    body: &'a [u8],
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive HTTP/1.1 connection with just enough parsing for our responses.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }

    async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<Response<'_>> {
        use std::io::{Error as IoError, ErrorKind};
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.read_more().await? == 0 {
                return Err(IoError::new(ErrorKind::UnexpectedEof, "connection closed"));
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| IoError::new(ErrorKind::InvalidData, "non-UTF-8 head"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| IoError::new(ErrorKind::InvalidData, "bad status line"))?;
        let mut length = None;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else { continue };
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let length = length.ok_or_else(|| IoError::new(ErrorKind::InvalidData, "no Content-Length"))?;
        while self.buf.len() < head_end + length {
            if self.read_more().await? == 0 {
                return Err(IoError::new(ErrorKind::UnexpectedEof, "connection closed mid-body"));
            }
        }
        Ok(Response { status, body: &self.buf[head_end..head_end + length], close })
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(4096);
        self.stream.read_buf(&mut self.buf).await
    }
}

/// What one connection saw inside the measured window.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
    /// From the moment the request was written (paced windows only differ): without the
    /// pacing timer's slack (tokio's timer ticks in whole milliseconds, so a request leaves
    /// up to 1 ms after it was due) and without waiting for a busy connection.
    service_us: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        for (k, v) in o.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.latencies_us.extend(o.latencies_us);
        self.service_us.extend(o.service_us);
    }
}

/// Whether a response is a success (200 with a non-empty `access_token`), else the
/// failure key: status and `error` code. Successes are checked without a JSON parse, to
/// keep the client cheap.
fn judge(r: &Response<'_>) -> Result<(), String> {
    judge_expecting(r, true)
}

fn judge_expecting(r: &Response<'_>, token: bool) -> Result<(), String> {
    const MARK: &[u8] = b"\"access_token\":\"";
    if r.status == 200 && !token {
        Ok(())
    } else if r.status == 200 {
        match find(r.body, MARK) {
            Some(p) if r.body.get(p + MARK.len()).is_some_and(|b| *b != b'"') => Ok(()),
            _ => Err("200 without access_token".into()),
        }
    } else {
        let v: Option<serde_json::Value> = serde_json::from_slice(r.body).ok();
        let code = v.as_ref().and_then(|v| v["error"].as_str()).unwrap_or("-").to_string();
        Err(format!("{} {code}", r.status))
    }
}

/// The access token of a successful response.
fn access_token(r: &Response<'_>) -> Result<String, String> {
    judge(r)?;
    let v: serde_json::Value = serde_json::from_slice(r.body).map_err(|e| e.to_string())?;
    v["access_token"].as_str().map(str::to_string).ok_or_else(|| "no access_token".into())
}

struct Plan {
    port: u16,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
    broker_pid: String,
    redis_pid: Option<String>,
    /// Responses must carry an `access_token` (all modes but healthz).
    expect_token: bool,
}

struct PhaseResult {
    tally: Tally,
    window_secs: f64,
    broker_cpu_secs: f64,
    client_cpu_secs: f64,
    redis_cpu_secs: f64,
    /// Context switches of all broker threads (voluntary and not) in the window.
    broker_switches: f64,
    /// Every other process on the machine (a build, say): a busy machine skews the figures.
    others_cpu_secs: f64,
    ran_out: bool,
}

async fn connection(
    plan: Arc<Plan>,
    next: Arc<AtomicUsize>,
    start: Instant,
    window_start: Instant,
    deadline: Instant,
) -> (Tally, bool) {
    let mut t = Tally::default();
    let mut conn: Option<Conn> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = plan.requests.get(i) else { return (t, true) };
        // Paced: request i is due at start + i/rate; latency counts from when it was due,
        // so a stalled broker cannot hide its queue (no coordinated omission).
        let due = match plan.rate {
            Some(r) => start + Duration::from_secs_f64(i as f64 / r),
            None => Instant::now(),
        };
        if due >= deadline {
            return (t, false);
        }
        if plan.rate.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(plan.port).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    if Instant::now() >= window_start {
                        *t.failed.entry(format!("connect: {}", e.kind())).or_default() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let result = c.roundtrip(request).await;
        let done = Instant::now();
        let counted = done >= window_start && done <= deadline;
        match result {
            Ok(r) => {
                let close = r.close;
                if counted {
                    match judge_expecting(&r, plan.expect_token) {
                        Ok(()) => {
                            t.ok += 1;
                            let us = |from: Instant| {
                                done.duration_since(from).as_micros().min(u32::MAX as u128) as u32
                            };
                            t.latencies_us.push(us(due));
                            t.service_us.push(us(sent));
                        }
                        Err(k) => *t.failed.entry(k).or_default() += 1,
                    }
                }
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                conn = None;
                if counted {
                    *t.failed.entry(format!("io: {e}")).or_default() += 1;
                }
            }
        }
    }
}

fn run_phase(rt: &tokio::runtime::Runtime, plan: Plan) -> Result<PhaseResult, Error> {
    let plan = Arc::new(plan);
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let window_start = start + plan.warmup;
        let deadline = window_start + plan.duration;
        // CPU samples at the window's edges, from tasks of their own.
        let sample = {
            let pid = plan.broker_pid.clone();
            let redis = plan.redis_pid.clone();
            move || -> Result<([f64; 5], Instant), String> {
                let e = |e: Error| format!("sampling /proc: {e}");
                let mut redis_cpu = 0.0;
                for r in redis.iter().flat_map(|r| r.split(',')) {
                    redis_cpu += cpu_secs(r).map_err(e)?;
                }
                Ok((
                    [
                        cpu_secs(&pid).map_err(e)?,
                        cpu_secs("self").map_err(e)?,
                        redis_cpu,
                        machine_busy_secs().map_err(e)?,
                        context_switches(&pid).map_err(e)? as f64,
                    ],
                    Instant::now(),
                ))
            }
        };
        let (s0, s1) = (sample.clone(), sample.clone());
        let first = tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            s0()
        });
        let last = tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            s1()
        });
        let tasks: Vec<_> = (0..plan.connections)
            .map(|_| tokio::spawn(connection(plan.clone(), next.clone(), start, window_start, deadline)))
            .collect();
        let mut tally = Tally::default();
        let mut ran_out = false;
        for task in tasks {
            let (t, out) = task.await?;
            tally.merge(t);
            ran_out |= out;
        }
        if Instant::now() < window_start {
            return Err::<PhaseResult, Error>(
                "ran out of pre-generated requests during the warm-up; pass a larger --assertions".into(),
            );
        }
        let (before, _) = first.await??;
        let (after, at) = if Instant::now() < deadline {
            // The window was cut short (out of requests): sample now, count the shorter window.
            last.abort();
            sample()?
        } else {
            last.await??
        };
        let [broker_cpu_secs, client_cpu_secs, redis_cpu_secs, machine, broker_switches] =
            [0, 1, 2, 3, 4].map(|i| after[i] - before[i]);
        let others_cpu_secs = (machine - broker_cpu_secs - client_cpu_secs - redis_cpu_secs).max(0.0);
        let window_secs = at.min(deadline).duration_since(window_start).as_secs_f64();
        Ok(PhaseResult {
            tally,
            window_secs,
            broker_cpu_secs,
            client_cpu_secs,
            redis_cpu_secs,
            others_cpu_secs,
            broker_switches,
            ran_out,
        })
    })
}

/// Subject tokens for token exchange: `per_agent` client_credentials tokens for DOCS per
/// agent, obtained before any window (index k belongs to agent k % agents).
fn subject_tokens(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    per_agent: usize,
) -> Result<Vec<String>, Error> {
    let now = agent_sts::clock::Clock::now_secs(&agent_sts::clock::SystemClock);
    let mut out = Vec::new();
    rt.block_on(async {
        let mut c = Conn::open(setup.port).await?;
        for _ in 0..per_agent {
            for a in &setup.agents {
                let body = common::client_credentials_body(&a.assertion(&setup.issuer, now, 60), DOCS);
                let r = c.roundtrip(&frame(setup.port, &body)).await?;
                let close = r.close;
                out.push(access_token(&r).map_err(|k| format!("obtaining a subject token: {k}"))?);
                if close {
                    c = Conn::open(setup.port).await?;
                }
            }
        }
        Ok::<(), Error>(())
    })?;
    Ok(out)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn run(args: &Args) -> Result<(), Error> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if let Some(secs) = args.soak_secs {
        return soak::run(args, secs);
    }
    if args.warmup_secs + args.duration_secs > 50 {
        return Err(format!(
            "--warmup-secs + --duration-secs must be at most 50: assertions live {ASSERTION_LIFETIME_SECS} s and are all signed before the window"
        )
        .into());
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    let bin = broker_binary()?;
    if let Some(list) = &args.client_cpus {
        pin_self(list)?;
    }
    if args.client_sched == ClientSched::Batch {
        batch_self()?;
    }
    let (redis, redis_cluster) = match args.replay {
        Replay::Redis => {
            let port = free_port()?;
            (Some((start_redis(port)?, port)), None)
        }
        Replay::RedisCluster => (None, Some(start_redis_cluster()?)),
        Replay::Memory => (None, None),
    };
    let redis_urls: Vec<String> = match (&redis, &redis_cluster) {
        (Some((_, port)), _) => vec![format!("redis://127.0.0.1:{port}")],
        (_, Some(c)) => c.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect(),
        _ => Vec::new(),
    };
    if !redis_urls.is_empty() {
        seed_replay_markers(&redis_urls, redis_cluster.is_some())?;
    }
    // Every Redis process, for the CPU accounting.
    let redis_pids: Option<String> = match (&redis, &redis_cluster) {
        (Some((r, _)), _) => Some(r.pid().to_string()),
        (_, Some(c)) => Some(c.nodes.iter().map(|n| n.pid().to_string()).collect::<Vec<_>>().join(",")),
        _ => None,
    };
    let sink = if args.otlp { Some(start_otlp_sink()?) } else { None };
    let setup = write_setup(args, &redis_urls, sink.as_ref().map(|(p, _)| *p))?;
    let (mut broker, started) = spawn_broker(&bin, &setup, &args.broker_log, args.broker_cpus.as_deref())?;
    let cold = wait_ready(&mut broker, &setup, started)?;
    let pid = broker.pid().to_string();
    let rss_idle = status_kib(&pid, "VmRSS")?;
    // CPU the broker spent to get ready (all threads): on a busy machine a steadier figure
    // than the wall-clock cold start.
    let cpu_to_ready = cpu_secs(&pid)?;

    println!("agent-sts loadgen (issue 3); load generator on the same machine as the broker");
    println!(
        "  broker:      {} (pid {pid}), RUST_LOG={}, workers {}, replay {:?}, {} agents ({})",
        bin.display(),
        args.broker_log,
        args.broker_workers.map_or("default".to_string(), |w| w.to_string()),
        args.replay,
        setup.agents.len(),
        args.alg
    );
    println!(
        "  client:      {:?}, {} keep-alive connections, 1 tokio thread, {} s warm-up + {} s window",
        args.mode, args.connections, args.warmup_secs, args.duration_secs
    );
    if args.broker_cpus.is_some() || args.client_cpus.is_some() {
        println!(
            "  pinned:      broker on CPUs {}, client and Redis on CPUs {}",
            args.broker_cpus.as_deref().unwrap_or("any"),
            args.client_cpus.as_deref().unwrap_or("any")
        );
    }
    println!(
        "  scheduling:  client threads {}, broker and Redis SCHED_OTHER",
        match args.client_sched {
            ClientSched::Batch => "SCHED_BATCH (they never preempt the broker on wake-up)",
            ClientSched::Normal => "SCHED_OTHER",
        }
    );
    if args.pad_agents > 0 {
        println!(
            "  policy:      padded with {} generated agents x {} allowances over {} servers, in {} file(s)",
            args.pad_agents, args.pad_allow, args.pad_servers, args.pad_files
        );
    }
    println!(
        "  cold start:  {:.1} ms (spawn ▶ first 200 from /readyz), {:.2} s of broker CPU; RSS at idle {:.1} MiB",
        ms(cold),
        cpu_to_ready,
        rss_idle as f64 / 1024.0
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The floor, in this run, on this run's keys: one agent's assertion verified, one of
    // the broker's own tokens' signing input signed (ES256 both, whatever --alg).
    let floors = {
        let token = subject_tokens(&rt, &setup, 1)?.swap_remove(0);
        let (token_input, _) = token.rsplit_once('.').ok_or("a token without three parts")?;
        let agent = AgentKey::generate("https://agents.example.com/floor", Alg::ES256);
        let floor = common::Floor::new(&agent, &setup.signing_pem, &setup.issuer, token_input.as_bytes());
        Floors::measure(&floor)
    };
    println!(
        "  floor:       ES256, µs of thread CPU (fastest of 9 rounds × 200, before the windows): \
         josekit verify {:.1} + sign {:.1} = {:.1}; OpenSSL ECDSA verify {:.1} + sign {:.1} = {:.1}",
        floors.josekit_verify,
        floors.josekit_sign,
        floors.josekit_verify + floors.josekit_sign,
        floors.openssl_verify,
        floors.openssl_sign,
        floors.openssl_verify + floors.openssl_sign,
    );
    let subjects = match args.mode {
        GrantMode::TokenExchange => subject_tokens(&rt, &setup, 8)?,
        _ => Vec::new(),
    };

    let mut phases: Vec<(&str, Option<f64>)> = vec![("peak", args.rate)];
    if args.rate.is_some() {
        phases[0].0 = "paced";
    }
    let mut results = Vec::new();
    let mut failures = 0u64;
    let mut idx = 0;
    while idx < phases.len() {
        let (name, rate) = phases[idx];
        let secs = (args.warmup_secs + args.duration_secs) as f64;
        let n = match rate {
            Some(r) => (r * secs * 1.02).ceil() as usize + args.connections,
            None if args.mode == GrantMode::Healthz => args.assertions.unwrap_or((200_000.0 * secs) as usize),
            None => args.assertions.unwrap_or((20000.0 * secs) as usize),
        };
        let t = Instant::now();
        let requests = generate(args, &setup, &subjects, n);
        println!(
            "\n[{name}] pre-generated {n} requests ({} assertions, exp = iat + {ASSERTION_LIFETIME_SECS} s, unique jti) in {:.1} s; rate {}",
            args.alg,
            t.elapsed().as_secs_f64(),
            rate.map_or("unlimited".to_string(), |r| format!("{r:.0} req/s"))
        );
        let r = run_phase(
            &rt,
            Plan {
                port: setup.port,
                requests: Arc::new(requests),
                connections: args.connections,
                rate,
                warmup: Duration::from_secs(args.warmup_secs),
                duration: Duration::from_secs(args.duration_secs),
                broker_pid: pid.clone(),
                redis_pid: redis_pids.clone(),
                expect_token: args.mode != GrantMode::Healthz,
            },
        )?;
        let report = report(name, rate, &r, floors.of(args.mode));
        println!("{}", report.text);
        if idx == 0 && args.rate.is_none() {
            if args.half_peak {
                phases.push(("half-peak", Some(report.rps / 2.0)));
            }
            if args.sweep {
                for (label, f) in
                    [("25% of peak", 0.25), ("50% of peak", 0.5), ("75% of peak", 0.75), ("90% of peak", 0.9)]
                {
                    phases.push((label, Some(report.rps * f)));
                }
            }
        }
        failures += r.tally.failed.values().sum::<u64>();
        results.push(report.json);
        idx += 1;
    }
    let hwm = status_kib(&pid, "VmHWM")?;
    println!("\n  broker peak RSS (VmHWM): {:.1} MiB", hwm as f64 / 1024.0);
    if broker.exited().is_some() {
        return Err(format!("the broker died during the run:\n{}", log_tail(&setup.log)).into());
    }
    let log_bytes = std::fs::metadata(&setup.log).map_or(0, |m| m.len());
    println!("  broker log: {log_bytes} bytes written (RUST_LOG={})", args.broker_log);
    println!("  metrics: {:?}", args.metrics);
    if let Some((port, counts)) = &sink {
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "  OTLP sink (127.0.0.1:{port}): {} export requests, {:.1} MiB of spans received",
            counts.requests.load(Relaxed),
            counts.bytes.load(Relaxed) as f64 / (1024.0 * 1024.0)
        );
    }
    if args.json {
        let j = serde_json::json!({
            "mode": format!("{:?}", args.mode),
            "replay": format!("{:?}", args.replay),
            "connections": args.connections,
            "broker_log": args.broker_log,
            "cold_start_ms": ms(cold),
            "idle_rss_mib": rss_idle as f64 / 1024.0,
            "cpu_to_ready_secs": cpu_to_ready,
            "pad_agents": args.pad_agents,
            "pad_files": args.pad_files,
            "peak_rss_mib": hwm as f64 / 1024.0,
            "phases": results,
        });
        println!("{j}");
    }
    drop(setup.dir);
    if args.fail_on_error && failures > 0 {
        return Err(format!("{failures} requests failed (--fail-on-error)").into());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Report {
    text: String,
    rps: f64,
    json: serde_json::Value,
}

fn report(name: &str, rate: Option<f64>, r: &PhaseResult, floors: Option<(f64, f64)>) -> Report {
    let mut lat = r.tally.latencies_us.clone();
    lat.sort_unstable();
    let ok = r.tally.ok;
    let failed: u64 = r.tally.failed.values().sum();
    let rps = ok as f64 / r.window_secs;
    let cpu_per = if ok > 0 { r.broker_cpu_secs / ok as f64 * 1e6 } else { f64::NAN };
    let (p50, p99, p999) = (percentile(&lat, 50.0), percentile(&lat, 99.0), percentile(&lat, 99.9));
    let max = lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0);
    let mut service = r.tally.service_us.clone();
    service.sort_unstable();
    let (s50, s99, s999) =
        (percentile(&service, 50.0), percentile(&service, 99.0), percentile(&service, 99.9));
    let service_line = match rate {
        Some(_) => format!(
            "\n  from send:   p50 {s50:.2} ms, p99 {s99:.2} ms, p99.9 {s999:.2} ms (without the pacing timer's \
             up-to-1-ms slack and connection waits)"
        ),
        None => String::new(),
    };
    let mut text = format!(
        "  requests:    {ok} ok, {failed} failed in {:.2} s{}\n  throughput:  {rps:.0} successful exchanges/s\n  \
         latency:     p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms{}{service_line}\n  \
         broker CPU:  {:.2} s in the window ({:.2} cores) = {cpu_per:.0} µs per successful exchange, \
         {:.2} context switches per exchange{}\n  \
         client CPU:  {:.2} s ({:.2} cores); redis-server: {:.2} cores; other processes: {:.2} cores{}",
        r.window_secs,
        if r.ran_out { " (ran out of pre-generated requests)" } else { "" },
        if rate.is_some() { " (from each request's due time)" } else { "" },
        r.broker_cpu_secs,
        r.broker_cpu_secs / r.window_secs,
        r.broker_switches / ok.max(1) as f64,
        floors.map_or(String::new(), |(j, o)| format!(
            "\n  vs floor:    {:.2}× the OpenSSL ECDSA floor ({o:.1} µs), {:.2}× the josekit floor ({j:.1} µs); target ≤ 1.4×",
            cpu_per / o,
            cpu_per / j
        )),
        r.client_cpu_secs,
        r.client_cpu_secs / r.window_secs,
        r.redis_cpu_secs / r.window_secs,
        r.others_cpu_secs / r.window_secs,
        if r.others_cpu_secs / r.window_secs > 0.1 { " (BUSY MACHINE: figures skewed)" } else { "" },
    );
    for (k, v) in &r.tally.failed {
        text.push_str(&format!("\n  failed:      {v} × {k}"));
    }
    let json = serde_json::json!({
        "phase": name, "rate": rate, "ok": ok, "failed": r.tally.failed, "window_secs": r.window_secs,
        "rps": rps, "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
        "from_send_p50_ms": s50, "from_send_p99_ms": s99, "from_send_p999_ms": s999,
        "broker_cpu_secs": r.broker_cpu_secs, "broker_cpu_us_per_exchange": cpu_per,
        "broker_context_switches_per_exchange": r.broker_switches / ok.max(1) as f64,
        "floor_josekit_us": floors.map(|f| f.0), "floor_openssl_us": floors.map(|f| f.1),
        "ratio_josekit_floor": floors.map(|f| cpu_per / f.0), "ratio_openssl_floor": floors.map(|f| cpu_per / f.1),
        "client_cpu_secs": r.client_cpu_secs, "redis_cpu_secs": r.redis_cpu_secs, "others_cpu_secs": r.others_cpu_secs,
    });
    Report { text, rps, json }
}
