//! `dtlsd serve --metrics`: the built binary on loopback, one `openssl s_client -dtls1_2`
//! session through it to a UDP echo backend, then `/metrics`, `/healthz` and an unknown
//! path over plain HTTP/1.1; and the endpoint answering other clients while one trickles a
//! request byte by byte and others hold idle connections.
//!
//! Every wait has a deadline; the daemon and client processes are killed on drop.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{
    Daemon, EchoBackend, IO_TIMEOUT, Peer, START_TIMEOUT, TempDir, certs, collect, free_udp_addr,
    spawn_daemon, wait_for,
};

// ---------- HTTP and exposition parsing ----------

struct Response {
    status: u16,
    content_type: String,
    body: String,
}

/// One `GET path` over a fresh connection (the server closes after each answer).
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("response has a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.split(' ').next())
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("content-length");
    assert_eq!(length, body.len(), "content-length matches the body");
    Response {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// Parses every sample line as `name{labels} value` (labels optional) into a map from the
/// series (name with labels) to its value; panics naming the first line that does not parse.
fn parse_samples(text: &str) -> HashMap<String, u64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        // Counts are integers; CPU seconds and a histogram's sum are not (kept whole here).
        let value: u64 = value
            .parse()
            .or_else(|_| value.parse::<f64>().map(|v| v as u64))
            .unwrap_or_else(|_| panic!("value is not a number in {line:?}"));
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in labels.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(is_name(k), "bad label name in {line:?}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value in {line:?}"
                    );
                }
                name
            }
        };
        assert!(
            is_name(name) && (name.starts_with("dtlsd_") || name.starts_with("process_")),
            "bad metric name in {line:?}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sum of every series of `name` (all label sets).
fn total(samples: &HashMap<String, u64>, name: &str) -> u64 {
    samples
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

// ---------- tests ----------

#[test]
fn metrics_count_an_openssl_session_and_answer_healthz() {
    let pki = TempDir::new("session");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_with_metrics(backend.addr, &pki);

    let mut peer = Peer::openssl(daemon.listen, &pki);
    let line = "hello metrics through dtlsd";
    peer.write_line(line);
    assert!(
        wait_for(&peer.stdout, line, IO_TIMEOUT),
        "echo not received\n{}\ndtlsd:\n{}",
        peer.transcript(),
        daemon.log()
    );

    // The shards publish their counters once per loop turn: poll until they show the session.
    let deadline = Instant::now() + IO_TIMEOUT;
    let (response, samples) = loop {
        let response = get(daemon.metrics(), "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        let samples = parse_samples(&response.body);
        let done = total(&samples, "dtlsd_records_opened_total") >= 1
            && total(&samples, "dtlsd_sessions_active") == 1;
        if done || Instant::now() > deadline {
            break (response, samples);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        response.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);
    let body = &response.body;
    assert!(
        total(&samples, "dtlsd_handshakes_completed_total") >= 1,
        "{body}"
    );
    assert!(
        total(&samples, "dtlsd_handshakes_started_total") >= 1,
        "{body}"
    );
    assert!(total(&samples, "dtlsd_records_opened_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_records_sealed_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_cookies_sent_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_datagrams_in_total") >= 1, "{body}");
    assert!(
        total(&samples, "dtlsd_upstream_datagrams_out_total") >= 1,
        "{body}"
    );
    assert_eq!(total(&samples, "dtlsd_sessions_active"), 1, "{body}");
    assert_eq!(
        total(&samples, "dtlsd_handshakes_failed_total"),
        0,
        "{body}"
    );
    // Both shards report, and drops carry the reason label.
    assert!(
        samples.contains_key("dtlsd_records_opened_total{shard=\"1\"}"),
        "{body}"
    );
    assert!(
        samples.contains_key("dtlsd_drops_total{shard=\"0\",reason=\"bad_tag\"}"),
        "{body}"
    );
    // The handshake's duration, the session's suite, the build and the certificate.
    assert_eq!(
        total(&samples, "dtlsd_handshake_duration_seconds_count"),
        total(&samples, "dtlsd_handshakes_completed_total"),
        "{body}"
    );
    assert_eq!(total(&samples, "dtlsd_sessions"), 1, "{body}");
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("dtlsd_build_info{version=")),
        "{body}"
    );
    let expiry = samples
        .iter()
        .find(|(k, _)| {
            k.starts_with("dtlsd_certificate_expiry_timestamp_seconds{key=\"cert\"")
                && k.contains("server.pem")
        })
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no expiry of server.pem\n{body}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        expiry > now,
        "the test certificate is valid: {expiry} vs {now}"
    );
    assert!(
        total(&samples, "process_resident_memory_bytes") > 1 << 20,
        "{body}"
    );
    assert!(total(&samples, "process_open_fds") > 3, "{body}");
    // Every family has HELP and TYPE (OpenMetrics: a counter family without `_total`).
    for name in ["dtlsd_sessions_active", "dtlsd_drops", "dtlsd_cookies_sent"] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }

    assert_healthy(&get(daemon.metrics(), "/healthz"), 2);
    let missing = get(daemon.metrics(), "/nothing-here");
    assert_eq!(missing.status, 404);
}

#[test]
fn metrics_address_in_use_fails_naming_the_address() {
    let pki = TempDir::new("inuse");
    certs(&pki);
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let metrics = holder.local_addr().expect("address");
    let mut child = spawn_daemon(
        free_udp_addr(),
        metrics,
        "127.0.0.1:9".parse().expect("address"),
        &pki,
    );
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("dtlsd exits when the metrics port is in use");
    assert!(
        !status.success(),
        "dtlsd succeeded on a metrics port in use"
    );
    assert!(
        wait_for(
            &stderr,
            &format!("metrics on {metrics}"),
            Duration::from_secs(2)
        ),
        "the error does not name {metrics}:\n{}",
        stderr.lock().expect("lock")
    );
    drop(holder);
}

/// A `/healthz` answer that is 200 with JSON listing `shards` shards and the control thread,
/// every one ok.
fn assert_healthy(health: &Response, shards: usize) {
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("healthz JSON");
    assert_eq!(json["status"], "ok", "{}", health.body);
    let listed = json["shards"].as_array().expect("a shards array");
    assert_eq!(listed.len(), shards, "{}", health.body);
    for (index, shard) in listed.iter().enumerate() {
        assert_eq!(shard["shard"], index, "{}", health.body);
        assert!(shard["last_progress_ms"].is_u64(), "{}", health.body);
        assert_eq!(shard["ok"], true, "{}", health.body);
    }
    assert!(
        json["control"]["last_progress_ms"].is_u64(),
        "{}",
        health.body
    );
    assert_eq!(json["control"]["ok"], true, "{}", health.body);
}

/// Sends a request head one byte every 1.5 s, reconnecting whenever the server closes the
/// connection, until `stop`; counts in `closed` how many times the server closed it.
fn trickle(addr: SocketAddr, stop: &AtomicBool, closed: &AtomicUsize) {
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
        "z".repeat(64)
    );
    while !stop.load(Relaxed) {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        for byte in head.bytes() {
            if stream.write_all(&[byte]).is_err() {
                closed.fetch_add(1, Relaxed);
                break;
            }
            // Wait 1.5 s between bytes, looking at the stop flag.
            let next = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < next && !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if stop.load(Relaxed) {
                return;
            }
        }
    }
}

#[test]
fn a_trickling_client_and_idle_connections_do_not_hold_up_other_scrapes() {
    let pki = TempDir::new("slow");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_with_metrics(backend.addr, &pki);
    let addr = daemon.metrics();

    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let trickler = {
        let (stop, closed) = (Arc::clone(&stop), Arc::clone(&closed));
        std::thread::spawn(move || trickle(addr, &stop, &closed))
    };
    // Idle connections that never send a byte.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("idle connection"))
        .collect();
    // Let the server accept the trickler and the idle ones before the scrapes start.
    std::thread::sleep(Duration::from_millis(300));

    for round in 0..5 {
        let metrics = get(addr, "/metrics");
        assert_eq!(metrics.status, 200, "round {round}: {}", metrics.body);
        let samples = parse_samples(&metrics.body);
        assert_eq!(samples.get("dtlsd_shards"), Some(&2), "{}", metrics.body);
        assert_healthy(&get(addr, "/healthz"), 2);
    }

    // The idle connections are closed by the server (header deadline), not held forever.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let mut buf = [0u8; 256];
        let closed = match stream.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "an idle connection was not closed by the server");
    }
    // So is the trickling one (its head is not complete by then).
    let deadline = Instant::now() + Duration::from_secs(60);
    while closed.load(Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    trickler.join().expect("trickler thread");
    assert!(
        closed.load(Relaxed) >= 1,
        "the trickling connection was never closed by the server"
    );
    // Still answering after all that.
    assert_eq!(get(addr, "/metrics").status, 200);
}
