//! `dtls-bench flood` (B5): a ClientHello flood from many loopback source addresses at the
//! in-process `dtlsd`, with legitimate handshakes running meanwhile.
//!
//! The flood thread (`flood-0`) binds `--sources` sockets on distinct addresses of
//! 127.0.0.0/8 (127.1.x.y: Linux routes all of 127/8 to the loopback device without
//! configuration; nothing leaves the machine) and sends, round robin at `--rate` per second,
//! a genuine cookie-less ClientHello written by our client engine. The server's stateless
//! acceptor must answer each with a HelloVerifyRequest no larger than the hello (RFC 6347
//! §4.2.1) and keep no state. Measured: HelloVerifyRequests/s received, bytes out / bytes in
//! (server replies over flood bytes sent), the process's RSS growth over the flood
//! (in-process: server, flooder and legitimate clients share the process, so this is an
//! upper bound on the server's growth), and the success rate of `--parallel` legitimate
//! handshakes run on `loadgen-0` for the same duration.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use control::Connection;
use control::crypto::SystemRng;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::loadgen::client::{
    HANDSHAKE_TIMEOUT, HandshakePlan, HandshakeStats, TICKET_WAIT, client_config, run_handshakes,
};
use crate::loadgen::cpu::{self, CpuSnapshot};
use crate::loadgen::run;
use crate::loadgen::server::{LOOPBACK, ServerSetup, TestServer};
use crate::loadgen::{CipherChoice, IoChoice};

/// Settings of one `flood` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// ClientHellos per second.
    pub rate: f64,
    /// Seconds of flood.
    pub duration: Duration,
    /// Distinct source addresses.
    pub sources: usize,
    /// Legitimate handshakes in flight during the flood (0: none, the flood alone).
    pub parallel: usize,
}

/// What the flooder saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodCounts {
    /// ClientHellos sent.
    pub hellos: u64,
    /// Bytes of those.
    pub bytes_out: u64,
    /// Datagrams received back (HelloVerifyRequests).
    pub replies: u64,
    /// Bytes received back.
    pub bytes_in: u64,
    /// Largest reply.
    pub max_reply: usize,
    /// Flood time.
    pub elapsed: Duration,
}

/// The outcome.
#[derive(Debug)]
pub struct Outcome {
    /// Result document.
    pub doc: Value,
    /// Text report.
    pub text: String,
    /// Flood counters.
    pub flood: FloodCounts,
    /// Legitimate handshakes completed and failed during the flood.
    pub legit: (u64, u64),
}

/// VmRSS of this process, bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A cookie-less ClientHello for `server`, written by our client engine.
fn client_hello(config: &Arc<control::Config>, server: SocketAddr) -> Result<Vec<u8>> {
    let mut conn = Connection::client(
        Arc::clone(config),
        Box::new(SystemRng::new()),
        Instant::now(),
        server,
        None,
    )
    .context("client engine")?;
    let mut buf = vec![0u8; 4096];
    let t = conn
        .poll_transmit(Instant::now(), &mut buf)
        .ok_or_else(|| anyhow!("the client engine wrote no ClientHello"))?;
    buf.truncate(t.len);
    Ok(buf)
}

fn source_addr(i: usize) -> IpAddr {
    // 127.1.0.1, 127.1.0.2, ... (skipping .0 and .255 host bytes).
    let n = i as u32;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (n / 64_516) as u8,
        ((n / 254) % 254) as u8,
        (n % 254 + 1) as u8,
    ))
}

fn flood(server: SocketAddr, hello: &[u8], cfg: &Config) -> Result<FloodCounts> {
    let mut poll = Poll::new().context("epoll")?;
    let mut events = Events::with_capacity(1024);
    let mut socks = Vec::with_capacity(cfg.sources);
    for i in 0..cfg.sources.max(1) {
        let s = UdpSocket::bind(SocketAddr::new(source_addr(i), 0))
            .with_context(|| format!("bind {}", source_addr(i)))?;
        s.set_nonblocking(true).context("O_NONBLOCK")?;
        poll.registry()
            .register(&mut SourceFd(&s.as_raw_fd()), Token(i), Interest::READABLE)
            .context("epoll register")?;
        socks.push(s);
    }
    let mut c = FloodCounts::default();
    let mut buf = vec![0u8; 4096];
    let gap = 1.0 / cfg.rate;
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut k = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now.duration_since(start).as_secs_f64();
        while (k as f64) * gap <= elapsed {
            let s = &socks[(k % socks.len() as u64) as usize];
            if s.send_to(hello, server).is_ok() {
                c.hellos += 1;
                c.bytes_out += hello.len() as u64;
            }
            k += 1;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("epoll wait"),
        }
        for ev in events.iter() {
            let Some(s) = socks.get(ev.token().0) else {
                continue;
            };
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if from == server {
                    c.replies += 1;
                    c.bytes_in += n as u64;
                    c.max_reply = c.max_reply.max(n);
                }
            }
        }
    }
    c.elapsed = start.elapsed();
    // Late replies (not counted in the rate, counted in the byte ratio).
    let settle = Instant::now() + Duration::from_millis(100);
    while Instant::now() < settle {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
        for ev in events.iter() {
            let Some(s) = socks.get(ev.token().0) else {
                continue;
            };
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if from == server {
                    c.bytes_in += n as u64;
                    c.max_reply = c.max_reply.max(n);
                }
            }
        }
    }
    Ok(c)
}

/// Runs the benchmark.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let server = TestServer::start(&ServerSetup {
        shards: 1,
        control_threads: 1,
        io: IoChoice::Auto,
        null_protection: false,
        mtu: 1500,
        data_io: Default::default(),
    })?;
    let addr = server.addr();
    let config = Arc::new(client_config(server.ca(), CipherChoice::Aes128Gcm, 1200)?);
    let hello = client_hello(&config, addr)?;
    // Warm the server (allocator, tables) before the RSS baseline.
    let warm = HandshakePlan {
        server: addr,
        bind_ip: LOOPBACK,
        sources: 1,
        parallel: cfg.parallel.max(1),
        total: Some(cfg.parallel.max(1) as u64 * 2),
        duration: Duration::from_secs(10),
        keep: false,
        collect_tickets: false,
        offer_tickets: false,
        timeout: HANDSHAKE_TIMEOUT,
        ticket_wait: TICKET_WAIT,
    };
    run_handshakes(&config, &warm, &mut Vec::new())?;
    let stats_before = server.stats();
    let rss_before = rss_bytes();
    let cpu_before = CpuSnapshot::take();
    let plan = HandshakePlan {
        server: addr,
        bind_ip: LOOPBACK,
        sources: 1,
        parallel: cfg.parallel.max(1),
        total: None,
        duration: cfg.duration,
        keep: false,
        collect_tickets: false,
        offer_tickets: false,
        timeout: HANDSHAKE_TIMEOUT,
        ticket_wait: TICKET_WAIT,
    };
    let (flood_counts, legit) = std::thread::scope(|scope| -> Result<_> {
        let flooder = std::thread::Builder::new()
            .name("flood-0".into())
            .spawn_scoped(scope, || {
                let r = flood(addr, &hello, cfg);
                (r, CpuSnapshot::take())
            })
            .context("spawn the flood thread")?;
        let legit = std::thread::Builder::new()
            .name("loadgen-0".into())
            .spawn_scoped(scope, || {
                // `--parallel 0`: the flood alone (a clean RSS figure).
                let r = if cfg.parallel == 0 {
                    Ok(HandshakeStats::default())
                } else {
                    run_handshakes(&config, &plan, &mut Vec::new())
                };
                (r, CpuSnapshot::take())
            })
            .context("spawn the generator thread")?;
        let (f, f_cpu) = flooder
            .join()
            .map_err(|_| anyhow!("the flood thread panicked"))?;
        let (l, l_cpu) = legit
            .join()
            .map_err(|_| anyhow!("the generator thread panicked"))?;
        Ok(((f?, f_cpu), (l?, l_cpu)))
    })?;
    let ((flood_counts, flood_cpu), (legit, legit_cpu)) = (flood_counts, legit);
    let cpu_after = CpuSnapshot::take();
    let rss_after = rss_bytes();
    let stats_after = server.stats();
    server.shutdown()?;
    // The flood and generator threads measured themselves before exiting.
    let mut threads = cpu_before.delta(&cpu_after);
    for (snap, name) in [(&flood_cpu, "flood-0"), (&legit_cpu, "loadgen-0")] {
        threads.extend(
            cpu_before
                .delta(snap)
                .into_iter()
                .filter(|t| t.name == name),
        );
    }
    threads.sort_by(|a, b| a.name.cmp(&b.name));
    let cookies = match (&stats_before, &stats_after) {
        (Some(b), Some(a)) => Some(
            a.control
                .cookies_sent
                .saturating_sub(b.control.cookies_sent),
        ),
        _ => None,
    };
    let half_open_refused = match (&stats_before, &stats_after) {
        (Some(b), Some(a)) => Some(
            a.control
                .half_open_refused
                .saturating_sub(b.control.half_open_refused),
        ),
        _ => None,
    };
    let secs = flood_counts.elapsed.as_secs_f64().max(1e-9);
    let hvr_per_s = flood_counts.replies as f64 / secs;
    let ratio = flood_counts.bytes_in as f64 / (flood_counts.bytes_out.max(1)) as f64;
    let per_hello = flood_counts.max_reply as f64 / hello.len() as f64;
    let attempts = legit.completed + legit.failed;
    let success = (attempts > 0).then(|| legit.completed as f64 * 100.0 / attempts as f64);
    let rss_delta = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let mut invalid = Vec::new();
    if (flood_counts.hellos as f64) < 0.95 * cfg.rate * secs {
        invalid.push(format!(
            "flooder sent {} of {:.0} scheduled hellos",
            flood_counts.hellos,
            cfg.rate * secs
        ));
    }
    invalid.extend(run::saturation_reasons(&threads));
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench flood: {:.0} ClientHellos/s from {} loopback sources for {:.1} s, {} legitimate handshakes in flight",
        cfg.rate, cfg.sources, secs, cfg.parallel
    );
    let _ = writeln!(
        text,
        "  HelloVerifyRequests: {hvr_per_s:.0}/s received ({} of {} hellos answered; server counted {} cookies)",
        flood_counts.replies,
        flood_counts.hellos,
        cookies.map_or("?".into(), |c| c.to_string())
    );
    let _ = writeln!(
        text,
        "  bytes out/in: {ratio:.3} (reply {} B / hello {} B = {per_hello:.3} per hello)",
        flood_counts.max_reply,
        hello.len()
    );
    let _ = writeln!(
        text,
        "  RSS delta (whole process, in-process server): {}",
        rss_delta.map_or("unknown".into(), |d| format!(
            "{:+.1} KiB",
            d as f64 / 1024.0
        ))
    );
    match success {
        Some(pct) => {
            let _ = writeln!(
                text,
                "  legitimate handshakes during the flood: {} of {attempts} succeeded ({pct:.1} %), {:.0}/s",
                legit.completed,
                legit.rate()
            );
        }
        None => {
            let _ = writeln!(text, "  no legitimate handshakes (--parallel 0)");
        }
    }
    let _ = writeln!(text, "  cpu: {}", cpu::lines(&threads));
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let mut figures = vec![
        Figure::new(
            "flood.hvr_per_s",
            hvr_per_s,
            "HelloVerifyRequests/s",
            Better::Higher,
        ),
        Figure::new("flood.bytes_out_per_in", ratio, "ratio", Better::Lower),
        Figure::new(
            "flood.rss_delta_bytes",
            rss_delta.unwrap_or(0) as f64,
            "bytes",
            Better::Lower,
        ),
    ];
    if let Some(pct) = success {
        figures.push(Figure::new(
            "flood.legit_success_pct",
            pct,
            "%",
            Better::Higher,
        ));
    }
    let results = json!({
        "hvr_per_s": hvr_per_s,
        "hellos_sent": flood_counts.hellos,
        "replies": flood_counts.replies,
        "bytes_out": flood_counts.bytes_out,
        "bytes_in": flood_counts.bytes_in,
        "hello_bytes": hello.len(),
        "max_reply_bytes": flood_counts.max_reply,
        "server_cookies_sent": cookies,
        "server_half_open_refused": half_open_refused,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_delta_bytes": rss_delta,
        "rss_scope": "whole process (server, flooder and clients in-process)",
        "legit": {
            "completed": legit.completed,
            "failed": legit.failed,
            "success_pct": success,
            "per_s": legit.rate(),
            "first_error": legit.first_error,
        },
        "cpu": cpu::json(&threads),
        "ratios": {"bytes_out_per_in": ratio, "reply_per_hello": per_hello},
    });
    let config_json = json!({
        "benchmark": "B5",
        "rate": cfg.rate,
        "duration_s": cfg.duration.as_secs_f64(),
        "sources": cfg.sources,
        "source_range": "127.1.0.0/16 and up (loopback)",
        "parallel_legit": cfg.parallel,
    });
    Ok(Outcome {
        doc: run::document("dtls-bench flood", config_json, results, &figures, &invalid),
        text,
        flood: flood_counts,
        legit: (legit.completed, legit.failed),
    })
}
