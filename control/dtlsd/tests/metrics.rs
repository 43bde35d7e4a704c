//! `dtlsd serve --metrics`: the built binary on loopback, one `openssl s_client -dtls1_2`
//! session through it to a UDP echo backend, then `/metrics`, `/healthz` and an unknown
//! path over plain HTTP/1.1.
//!
//! Every wait has a deadline; the daemon and client processes are killed on drop.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not an integer in {line:?}"));
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
            is_name(name) && name.starts_with("dtlsd_"),
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
    assert!(
        response
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "content type {:?}",
        response.content_type
    );
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
    // Every family has HELP and TYPE.
    for name in [
        "dtlsd_sessions_active",
        "dtlsd_drops_total",
        "dtlsd_cookies_sent_total",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }

    let health = get(daemon.metrics(), "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
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
