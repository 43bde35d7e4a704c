//! `dtlsd serve --control-threads 2`: clients from many loopback source addresses complete
//! their handshakes on both handshake workers (each source on one), every session echoes,
//! and the metrics count the work per worker. A connect → serve pair with two workers on
//! each side carries sessions end to end. The workers run below the shards' priority.
//!
//! Every wait has a deadline; the daemon processes are killed on drop.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Daemon, EchoBackend, IO_TIMEOUT, TempDir, certs};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn two_workers_share_the_sources_and_every_session_echoes() {
    let pki = TempDir::new("workers");
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--shards", "1", "--control-threads", "2"],
    );
    assert_eq!(serve.metric("dtlsd_control_threads"), Some(2));
    let worker = |w: &str| {
        serve
            .metric(&format!(
                "dtlsd_control_worker_handshakes_completed_total{{worker=\"{w}\"}}"
            ))
            .unwrap_or(0)
    };
    let config = Client::config(&pki);
    let mut clients = Vec::new();
    // Sources hash to a worker under the daemon's random key: add sources until both
    // workers completed handshakes (with 8 at least; 60 sources all on one worker would
    // be a 2^-59 chance).
    for last in 2..62u8 {
        let c = Client::connect_from(Arc::clone(&config), serve.listen, ip(last), IO_TIMEOUT);
        clients.push(c);
        if clients.len() >= 8 && worker("0") > 0 && worker("1") > 0 {
            break;
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.echo(format!("through worker {i}").as_bytes());
    }
    let (w0, w1) = (worker("0"), worker("1"));
    assert!(w0 > 0 && w1 > 0, "both workers worked: {w0} and {w1}");
    assert_eq!(w0 + w1, clients.len() as u64);
    assert_eq!(
        serve.metric("dtlsd_handshakes_completed_total"),
        Some(clients.len() as u64)
    );
    let sessions = |w: &str| {
        serve
            .metric(&format!("dtlsd_control_worker_sessions{{worker=\"{w}\"}}"))
            .unwrap_or(0)
    };
    assert_eq!(sessions("0") + sessions("1"), clients.len() as u64);
    assert_eq!(serve.metric("dtlsd_handshakes_shed_total"), Some(0));
}

#[test]
fn connect_to_serve_with_two_workers_each_carries_every_source() {
    let pki = TempDir::new("workers-connect");
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(
        backend.addr,
        &pki,
        &["--shards", "1", "--control-threads", "2"],
    );
    let connect = Daemon::start_connect_with_metrics(
        serve.listen,
        &pki,
        &["--shards", "1", "--control-threads", "2"],
    );
    // Local sources of one address: connect spreads them by port.
    let sockets: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind a local source");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("read timeout");
            s
        })
        .collect();
    let mut buf = [0u8; 2048];
    for (i, s) in sockets.iter().enumerate() {
        let payload = format!("source {i}");
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no echo for source {i}"
            );
            s.send_to(payload.as_bytes(), connect.listen)
                .expect("send to connect");
            if let Ok(n) = s.recv(&mut buf)
                && &buf[..n] == payload.as_bytes()
            {
                break;
            }
        }
    }
    let worker = |w: &str| {
        connect
            .metric(&format!(
                "dtlsd_control_worker_handshakes_completed_total{{worker=\"{w}\"}}"
            ))
            .unwrap_or(0)
    };
    assert_eq!(worker("0") + worker("1"), 8);
}

/// The nice value of each of `pid`'s threads whose name starts with `prefix`
/// (`/proc/PID/task/TID/stat`, field 19).
fn nice_of_threads(pid: u32, prefix: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task list") {
        let dir = task.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).expect("task stat");
        // After the command name in parentheses: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').expect("comm in the stat line") + 2..];
        let nice = rest
            .split(' ')
            .nth(16)
            .and_then(|f| f.parse().ok())
            .expect("a nice field");
        nices.push(nice);
    }
    nices
}

/// Established sessions first: both handshake workers run 10 nice levels below the
/// shards (whatever nice value the daemon starts at, at most 19), so a handshake flood on a
/// core a shard shares slows handshakes, not the shard (`dtls-bench overload` shows the
/// throughput kept).
#[test]
fn handshake_workers_run_below_the_shards_priority() {
    let pki = TempDir::new("workers-nice");
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--shards", "2", "--control-threads", "2"],
    );
    let shards = nice_of_threads(serve.pid(), "dtlsd-shard");
    assert_eq!(shards.len(), 2, "{}", serve.log());
    assert_eq!(shards[0], shards[1]);
    let expected = (shards[0] + 10).min(19);
    // The workers may still be starting when the daemon says it listens.
    common::wait_until(
        "both handshake workers 10 nice levels below the shards",
        || serve.log(),
        || nice_of_threads(serve.pid(), "dtlsd-control") == [expected, expected],
    );
    // They still do their work.
    let mut c = Client::connect(Client::config(&pki), serve.listen);
    c.echo(b"after a handshake below the shards' priority");
}
