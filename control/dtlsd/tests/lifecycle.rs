//! The daemon's life as a service: systemd's notify protocol (READY, RELOADING, STOPPING,
//! WATCHDOG) on a notify socket of the test's own, and the drain window at SIGTERM
//! (`--drain-timeout`): live sessions run on, new handshakes are refused with an alert and
//! counted, the daemon exits once the last session ends, and a second signal ends the
//! drain at once with close_notify.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, IO_TIMEOUT, TempDir, certs, wait_until};

/// Every notification the daemon sends until `until` is among them (or the time is up).
fn notifications_until(sock: &UnixDatagram, until: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == until);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {until} within {timeout:?}; got {seen:?}");
}

#[test]
fn serve_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog() {
    let pki = TempDir::new("lifecycle-notify");
    certs(&pki);
    let path = pki.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let backend = EchoBackend::start();
    let notify = path.to_str().expect("utf-8 path");
    // A 200 ms watchdog: the daemon pings every 100 ms.
    let mut serve = Daemon::start_serve_env(
        backend.addr,
        &pki,
        &["--shards", "1"],
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "200000")],
    );
    let ready = notifications_until(&sock, "READY=1", IO_TIMEOUT);
    let last = ready.last().expect("one message");
    assert!(
        last.contains(&format!("STATUS=serving on {}", serve.listen)),
        "{ready:?}"
    );
    // Pings keep coming while the daemon is healthy.
    for _ in 0..3 {
        notifications_until(&sock, "WATCHDOG=1", IO_TIMEOUT);
    }
    // SIGHUP: RELOADING=1 with the monotonic clock in the same message, then READY=1.
    serve.signal("HUP");
    let reload = notifications_until(&sock, "RELOADING=1", IO_TIMEOUT);
    let msg = reload.last().expect("one message");
    assert!(
        msg.lines().any(|l| l.starts_with("MONOTONIC_USEC=")
            && l["MONOTONIC_USEC=".len()..].parse::<u64>().is_ok()),
        "{msg:?}"
    );
    notifications_until(&sock, "READY=1", IO_TIMEOUT);
    // SIGTERM: STOPPING=1, then a clean exit.
    serve.signal("TERM");
    notifications_until(&sock, "STOPPING=1", IO_TIMEOUT);
    let status = serve.wait_exit(IO_TIMEOUT).expect("exits after SIGTERM");
    assert!(status.success(), "{}", serve.log());
}

#[test]
fn sigterm_drains_live_sessions_refuses_new_ones_and_exits_when_the_last_ends() {
    let pki = TempDir::new("lifecycle-drain");
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--shards", "2", "--drain-timeout", "600"],
    );
    let config = Client::config(&pki);
    let mut live = Client::connect(config.clone(), serve.listen);
    live.echo(b"before the signal");

    serve.signal("TERM");
    wait_until(
        "drain starts",
        || serve.log(),
        || serve.log().contains("draining"),
    );
    // The live session runs on.
    live.echo(b"during the drain");
    // A newcomer is refused with a fatal alert once its cookie checks out, and counted.
    let refused = Client::try_connect(config, serve.listen, None, IO_TIMEOUT)
        .err()
        .expect("a new handshake is refused while draining");
    assert!(refused.contains("InternalError"), "{refused}");
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"draining\"}"),
        Some(1)
    );
    let log = serve.log();
    assert!(
        log.lines()
            .any(|l| l.contains("handshake refused") && l.contains("reason=draining")),
        "{log}"
    );
    // The last session ends: the daemon exits well before its 600 s window, cleanly.
    live.send_close_notify();
    let mut serve = serve;
    let status = serve.wait_exit(IO_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "still running after the last session ended\n{}",
            serve.log()
        )
    });
    assert!(status.success(), "{}", serve.log());
    assert!(
        serve.log().contains("drained: no live session left"),
        "{}",
        serve.log()
    );
}

#[test]
fn a_second_signal_ends_the_drain_at_once_with_close_notify() {
    let pki = TempDir::new("lifecycle-drain2");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve(
        backend.addr,
        &pki,
        &["--shards", "1", "--drain-timeout", "600"],
    );
    let mut live = Client::connect(Client::config(&pki), serve.listen);
    live.echo(b"hello");
    serve.signal("TERM");
    wait_until(
        "drain starts",
        || serve.log(),
        || serve.log().contains("draining"),
    );
    serve.signal("INT");
    let status = serve
        .wait_exit(IO_TIMEOUT)
        .unwrap_or_else(|| panic!("the second signal did not end the drain\n{}", serve.log()));
    assert!(status.success(), "{}", serve.log());
    assert!(serve.log().contains("drain cut short"), "{}", serve.log());
    // The session was closed with close_notify (alert level 1, description 0).
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut alerts = Vec::new();
    while Instant::now() < deadline && alerts.is_empty() {
        alerts = live.turn(Duration::from_millis(100)).alerts;
    }
    assert_eq!(alerts, vec![vec![1, 0]], "close_notify expected");
}
