//! The soak mode of the load generator (issue 14): `--soak-secs N`.
//!
//! ```text
//! cargo build --release
//! cargo bench --bench loadgen -- --replay redis --soak-secs 600      # 10 min at 70 % of peak
//! cargo bench --bench loadgen -- --replay redis --soak-secs 600 --rate 9000
//! ```
//!
//! 1. The broker and its own Redis start as for every loadgen run.
//! 2. Requests are made while the run goes (a soak is too long to pre-sign): one generator
//!    thread signs a fresh SDK-shaped assertion per request (`exp = iat + 60`, unique `jti`)
//!    and frames it, a few seconds ahead of use, into a bounded queue.
//! 3. The peak is measured with that same pipeline (an unpaced window, `--duration-secs`
//!    after `--warmup-secs`), unless `--rate` is given; the soak then runs paced at
//!    `--soak-fraction` (0.7) of it, latency counted from each request's due time.
//! 4. Every 10 s it samples the broker's RSS (`VmRSS`) and open file descriptors
//!    (`/proc/<pid>/fd`), and Redis's key count (`DBSIZE`: spent `jti`s expire, so it levels
//!    off); every minute it prints requests, errors, latency percentiles and those samples.
//! 5. At the end: RSS growth after the first minute (target < 10 %), file descriptor growth
//!    (target none), errors (target 0). `--fail-on-error` exits 1 on any failed request.
//!
//! A request the generator could not make in time is counted as `generator behind`, apart
//! from the broker's errors (the client shares the broker's cores).

use super::{
    cpu_secs, frame, judge, percentile, redis_ping, spawn_broker, start_redis, status_kib, wait_ready,
    write_setup, Args, Conn, Error, Replay,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Requests queued ahead of use: a few seconds at the rates this machine reaches.
const QUEUE: usize = 30_000;

/// One minute (or one window) of results.
#[derive(Default, Clone)]
struct Minute {
    ok: u64,
    failed: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

#[derive(Clone, Copy)]
struct Sample {
    at_secs: f64,
    rss_kib: u64,
    fds: usize,
    redis_keys: Option<u64>,
    broker_cpu: f64,
}

fn open_fds(pid: &str) -> Result<usize, Error> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn redis_dbsize(port: u16) -> Result<u64, Error> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"DBSIZE\r\n")?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf)?;
    let text = std::str::from_utf8(&buf[..n])?;
    Ok(text.trim().trim_start_matches(':').parse()?)
}

/// The request generator: a thread that signs and frames requests until the queue's
/// receiver is dropped.
/// The consumers' end of the generator's queue, shared by the connections.
type Queue = Arc<Mutex<Receiver<Vec<u8>>>>;

fn start_generator(setup: &mut super::Setup) -> (Queue, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
    let agents = std::mem::take(&mut setup.agents);
    let (issuer, port) = (setup.issuer.clone(), setup.port);
    let handle = std::thread::spawn(move || {
        let clock = agent_sts::clock::SystemClock;
        let mut i = 0usize;
        loop {
            let now = agent_sts::clock::Clock::now_secs(&clock);
            let a = agents[i % agents.len()].assertion(&issuer, now, super::ASSERTION_LIFETIME_SECS);
            let request = frame(port, &super::common::client_credentials_body(&a, super::DOCS));
            i += 1;
            let mut request = Some(request);
            while let Some(r) = request.take() {
                match tx.try_send(r) {
                    Ok(()) => {}
                    Err(TrySendError::Full(r)) => {
                        request = Some(r);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        }
    });
    (Arc::new(Mutex::new(rx)), handle)
}

struct Window {
    port: u16,
    rate: Option<f64>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    /// Results per bucket of this many seconds (60 for the soak; the whole window otherwise).
    bucket_secs: u64,
}

struct WindowResult {
    buckets: Vec<Minute>,
    behind: u64,
    secs: f64,
}

/// Drive `Window` from the generator's queue; `on_tick` runs every 10 s of the window.
fn drive(
    rt: &tokio::runtime::Runtime,
    rx: &Queue,
    w: &Window,
    mut on_tick: impl FnMut(f64, &[Minute]),
) -> Result<WindowResult, Error> {
    let n_buckets = (w.duration.as_secs().div_ceil(w.bucket_secs)).max(1) as usize;
    let buckets = Arc::new(Mutex::new(vec![Minute::default(); n_buckets]));
    let behind = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let window_start = start + w.warmup;
    let deadline = window_start + w.duration;
    rt.block_on(async {
        let tasks: Vec<_> = (0..w.connections)
            .map(|_| {
                let (rx, buckets, behind, next, stop) =
                    (rx.clone(), buckets.clone(), behind.clone(), next.clone(), stop.clone());
                let (port, rate, bucket_secs) = (w.port, w.rate, w.bucket_secs);
                tokio::spawn(async move {
                    let mut conn: Option<Conn> = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let due = match rate {
                            Some(r) => start + Duration::from_secs_f64(i as f64 / r),
                            None => Instant::now(),
                        };
                        if due >= deadline || stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if rate.is_some() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let request = loop {
                            let got = rx.lock().map_err(|_| ()).and_then(|r| r.try_recv().map_err(|_| ()));
                            match got {
                                Ok(r) => break Some(r),
                                Err(()) if Instant::now() >= deadline => break None,
                                Err(()) => {
                                    if Instant::now() >= window_start {
                                        behind.fetch_add(1, Ordering::Relaxed);
                                    }
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                        };
                        let Some(request) = request else { return };
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => match Conn::open(port).await {
                                Ok(c) => conn.insert(c),
                                Err(e) => {
                                    record(
                                        &buckets,
                                        window_start,
                                        bucket_secs,
                                        Err(format!("connect: {}", e.kind())),
                                        0,
                                    );
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            },
                        };
                        let result = c.roundtrip(&request).await;
                        let done = Instant::now();
                        let us = done.duration_since(due).as_micros().min(u32::MAX as u128) as u32;
                        if done < window_start || done > deadline {
                            if result.as_ref().is_ok_and(|r| r.close) || result.is_err() {
                                conn = None;
                            }
                            continue;
                        }
                        match result {
                            Ok(r) => {
                                let close = r.close;
                                record(&buckets, window_start, bucket_secs, judge(&r), us);
                                if close {
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                conn = None;
                                record(&buckets, window_start, bucket_secs, Err(format!("io: {e}")), us);
                            }
                        }
                    }
                })
            })
            .collect();
        // Ticks every 10 s of the window (the samples), on this thread between requests.
        let ticker = {
            let buckets = buckets.clone();
            async move {
                let mut tick = window_start + SAMPLE_EVERY;
                while tick <= deadline {
                    tokio::time::sleep_until(tick.into()).await;
                    let snapshot = buckets.lock().map(|b| b.clone()).unwrap_or_default();
                    on_tick(tick.duration_since(window_start).as_secs_f64(), &snapshot);
                    tick += SAMPLE_EVERY;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        ticker.await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        Ok::<(), Error>(())
    })?;
    let buckets = buckets.lock().map_err(|_| "a poisoned lock")?.clone();
    Ok(WindowResult { buckets, behind: behind.load(Ordering::Relaxed), secs: w.duration.as_secs_f64() })
}

fn record(
    buckets: &Mutex<Vec<Minute>>,
    window_start: Instant,
    bucket_secs: u64,
    r: Result<(), String>,
    us: u32,
) {
    let i = (Instant::now().saturating_duration_since(window_start).as_secs() / bucket_secs) as usize;
    let Ok(mut b) = buckets.lock() else { return };
    let last = b.len().saturating_sub(1);
    let Some(m) = b.get_mut(i.min(last)) else { return };
    match r {
        Ok(()) => {
            m.ok += 1;
            m.latencies_us.push(us);
        }
        Err(k) => *m.failed.entry(k).or_default() += 1,
    }
}

fn latency_line(m: &Minute) -> String {
    let mut l = m.latencies_us.clone();
    l.sort_unstable();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&l, 50.0),
        percentile(&l, 99.0),
        l.last().map_or(f64::NAN, |v| *v as f64 / 1000.0)
    )
}

pub(super) fn run(args: &Args, soak_secs: u64) -> Result<(), Error> {
    if soak_secs < 120 {
        return Err("--soak-secs must be at least 120 (the first minute is the baseline)".into());
    }
    if args.mode != super::GrantMode::ClientCredentials {
        return Err("--soak-secs runs client_credentials only".into());
    }
    let bin = super::broker_binary()?;
    if args.client_sched == super::ClientSched::Batch {
        super::batch_self()?;
    }
    let redis_port = match args.replay {
        Replay::Redis => Some(super::free_port()?),
        Replay::Memory => None,
        Replay::RedisCluster => return Err("--soak-secs runs with --replay redis or memory".into()),
    };
    let redis = redis_port.map(start_redis).transpose()?;
    let redis_urls: Vec<String> = redis_port.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    if !redis_urls.is_empty() {
        // As for every loadgen run: a fresh Redis looks like one that lost its data.
        super::seed_replay_markers(&redis_urls, false)?;
    }
    let mut setup = write_setup(args, &redis_urls, None)?;
    let (mut broker, started) = spawn_broker(&bin, &setup, &args.broker_log, args.broker_cpus.as_deref())?;
    wait_ready(&mut broker, &setup, started)?;
    let pid = broker.pid().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let agents = setup.agents.len();
    let (rx, generator) = start_generator(&mut setup);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "agent-sts loadgen soak (issue 14): client_credentials, replay {:?}, {} agents ({}), {} connections",
        args.replay, agents, args.alg, args.connections
    );
    println!("  broker:      {} (pid {pid}), RUST_LOG={}", bin.display(), args.broker_log);
    println!(
        "  machine:     load average at start {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    let rate = match args.rate {
        Some(r) => {
            println!("  rate:        {r:.0} req/s (--rate)");
            r
        }
        None => {
            let peak = drive(
                &rt,
                &rx,
                &Window {
                    port: setup.port,
                    rate: None,
                    connections: args.connections,
                    warmup: Duration::from_secs(args.warmup_secs.max(2)),
                    duration: Duration::from_secs(args.duration_secs),
                    bucket_secs: args.duration_secs.max(1),
                },
                |_, _| {},
            )?;
            let ok: u64 = peak.buckets.iter().map(|m| m.ok).sum();
            let rps = ok as f64 / peak.secs;
            let rate = rps * args.soak_fraction;
            let failed: u64 = peak.buckets.iter().flat_map(|m| m.failed.values()).sum();
            if ok == 0 {
                return Err(format!("no exchange succeeded in the peak window ({failed} failed)").into());
            }
            println!(
                "  peak:        {rps:.0} exchanges/s over {:.0} s (this pipeline: signing while it runs); soak at {:.0} % = {rate:.0} req/s",
                peak.secs,
                args.soak_fraction * 100.0
            );
            rate
        }
    };

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let take_sample = |at_secs: f64| -> Option<Sample> {
        Some(Sample {
            at_secs,
            rss_kib: status_kib(&pid, "VmRSS").ok()?,
            fds: open_fds(&pid).ok()?,
            redis_keys: redis_port.and_then(|p| redis_dbsize(p).ok()),
            broker_cpu: cpu_secs(&pid).ok()?,
        })
    };
    let first = take_sample(0.0).ok_or("cannot sample the broker")?;
    samples.lock().map_err(|_| "lock")?.push(first);
    println!(
        "\n  soak: {soak_secs} s at {rate:.0} req/s; samples every {} s (RSS, open fds, Redis keys), a line per minute\n",
        SAMPLE_EVERY.as_secs()
    );
    println!(
        "  {:>6} {:>8} {:>7} {:>44} {:>9} {:>5} {:>10} {:>6}",
        "minute", "ok", "errors", "latency (from due time)", "RSS MiB", "fds", "redis keys", "cores"
    );
    let mut printed = 0usize;
    let mut last_cpu = (0.0f64, first.broker_cpu);
    let result = drive(
        &rt,
        &rx,
        &Window {
            port: setup.port,
            rate: Some(rate),
            connections: args.connections,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(soak_secs),
            bucket_secs: 60,
        },
        |at, buckets| {
            let Some(s) = take_sample(at) else { return };
            if let Ok(mut v) = samples.lock() {
                v.push(s);
            }
            let minute = (at / 60.0).round() as usize;
            if (at as u64) % 60 == 0 && minute > printed && minute <= buckets.len() {
                printed = minute;
                let m = &buckets[minute - 1];
                let errors: u64 = m.failed.values().sum();
                let cores = (s.broker_cpu - last_cpu.1) / (at - last_cpu.0);
                last_cpu = (at, s.broker_cpu);
                println!(
                    "  {:>6} {:>8} {:>7} {:>44} {:>9.1} {:>5} {:>10} {:>6.2}",
                    minute,
                    m.ok,
                    errors,
                    latency_line(m),
                    s.rss_kib as f64 / 1024.0,
                    s.fds,
                    s.redis_keys.map_or("-".into(), |k| k.to_string()),
                    cores
                );
            }
        },
    )?;
    drop(rx);
    let _ = generator.join();

    let samples = samples.lock().map_err(|_| "lock")?.clone();
    let total_ok: u64 = result.buckets.iter().map(|m| m.ok).sum();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for m in &result.buckets {
        for (k, v) in &m.failed {
            *failed.entry(k.clone()).or_default() += v;
        }
    }
    let errors: u64 = failed.values().sum();
    let after_first = samples.iter().find(|s| s.at_secs >= 60.0).copied().unwrap_or(first);
    let last = samples.last().copied().unwrap_or(first);
    let max_rss =
        samples.iter().filter(|s| s.at_secs >= 60.0).map(|s| s.rss_kib).max().unwrap_or(last.rss_kib);
    let growth = |to: u64| (to as f64 / after_first.rss_kib as f64 - 1.0) * 100.0;
    let fd_max = samples.iter().filter(|s| s.at_secs >= 60.0).map(|s| s.fds).max().unwrap_or(last.fds);
    println!("\n  summary ({} s at {rate:.0} req/s):", soak_secs);
    println!(
        "  exchanges:   {total_ok} ok ({:.0}/s), {errors} failed (target 0)",
        total_ok as f64 / result.secs
    );
    for (k, v) in &failed {
        println!("  failed:      {v} x {k}");
    }
    println!(
        "  RSS:         {:.1} MiB at start, {:.1} MiB after the first minute, {:.1} MiB at the end, {:.1} MiB at most: growth after the first minute {:+.1} % at the end, {:+.1} % at most (target < 10 %)",
        first.rss_kib as f64 / 1024.0,
        after_first.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        growth(last.rss_kib),
        growth(max_rss)
    );
    println!(
        "  open fds:    {} at start, {} after the first minute, {} at the end, {} at most (target: no growth)",
        first.fds, after_first.fds, last.fds, fd_max
    );
    if let (Some(a), Some(b)) = (after_first.redis_keys, last.redis_keys) {
        println!(
            "  redis keys:  {a} after the first minute, {b} at the end (spent jtis expire: it levels off)"
        );
    }
    if result.behind > 0 {
        println!(
            "  client:      the generator was behind {} times (requests sent late, not broker errors)",
            result.behind
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  machine:     load average at the end {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    if broker.exited().is_some() {
        return Err(format!("the broker died during the soak:\n{}", super::log_tail(&setup.log)).into());
    }
    if let Some(p) = redis_port {
        redis_ping(p).map_err(|e| format!("redis stopped answering: {e}"))?;
    }
    drop(redis);
    if args.fail_on_error && errors > 0 {
        return Err(format!("{errors} requests failed (--fail-on-error)").into());
    }
    Ok(())
}
