//! `dtlsd status` and `dtlsd kick` against a running `dtlsd serve` over loopback, through
//! the built binary and the admin socket.

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Client, DTLSD, Daemon, EchoBackend, IO_TIMEOUT, TempDir, certs};

/// Runs `dtlsd ARGS`; returns the exit code, stdout and stderr.
fn dtlsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(DTLSD)
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run dtlsd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(socket: &str, filters: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["status", "--json", "--admin-socket", socket]
        .into_iter()
        .chain(filters.iter().copied())
        .collect();
    let (code, out, err) = dtlsd(&args);
    assert_eq!(code, 0, "dtlsd status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn sessions(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["sessions"].as_array().cloned().unwrap_or_default()
}

#[test]
fn status_lists_sessions_with_their_traffic_and_kick_closes_one_with_close_notify() {
    let pki = TempDir::new("admin");
    certs(&pki);
    let backend = EchoBackend::start();
    let socket = pki.file("admin.sock");
    let daemon = Daemon::start_serve(
        backend.addr,
        &pki,
        &["--shards", "2", "--admin-socket", &socket],
    );
    let mode = std::fs::metadata(&socket)
        .expect("the admin socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");

    let config = Client::config(&pki);
    let mut a = Client::connect_from(
        config.clone(),
        daemon.listen,
        Ipv4Addr::new(127, 0, 0, 21).into(),
        IO_TIMEOUT,
    );
    let mut b = Client::connect_from(
        config,
        daemon.listen,
        Ipv4Addr::new(127, 0, 0, 22).into(),
        IO_TIMEOUT,
    );
    a.echo(b"hello from a");
    b.echo(b"b");

    let all = status_json(&socket, &[]);
    let rows = sessions(&all);
    assert_eq!(rows.len(), 2, "{all}");
    let row_a = rows
        .iter()
        .find(|r| {
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.21:"))
        })
        .expect("a's session");
    assert_eq!(row_a["version"], "1.2");
    assert_eq!(row_a["identity"], "none");
    // The echo may have been resent once on a slow machine: at least one each way.
    let t = &row_a["traffic"];
    assert!(t["records_in"].as_u64() >= Some(1), "{row_a}");
    assert!(t["records_out"].as_u64() >= Some(1), "{row_a}");
    assert_eq!(t["bytes_in"].as_u64().map(|n| n % 12), Some(0), "{row_a}");
    assert!(
        row_a["idle_secs"].as_f64().is_some_and(|i| i < 60.0),
        "{row_a}"
    );
    assert_eq!(all["shards_unanswered"], serde_json::json!([]));

    // Filters.
    let only_b = status_json(&socket, &["--peer", "127.0.0.22"]);
    assert_eq!(sessions(&only_b).len(), 1, "{only_b}");
    assert_eq!(
        sessions(&status_json(&socket, &["--identity", "psk:"])).len(),
        0
    );

    // The table names both peers.
    let (code, table, err) = dtlsd(&["status", "--admin-socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(table.starts_with("dtlsd serve on "), "{table}");
    assert!(
        table.contains("upstream source: daemon; proxy protocol: off"),
        "{table}"
    );
    assert!(
        table.contains("\n    ID  PEER                   LISTEN"),
        "{table}"
    );
    assert!(
        table.contains("127.0.0.21:") && table.contains("127.0.0.22:"),
        "{table}"
    );

    // Kick b by address: it gets close_notify, a keeps working.
    let (code, out, err) = dtlsd(&["kick", "--admin-socket", &socket, "127.0.0.22"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("closed session(s) "), "{out}");
    assert!(receives_close_notify(&mut b), "b got no close_notify");
    a.echo(b"a is still here");
    assert_eq!(sessions(&status_json(&socket, &[])).len(), 1);

    // Nothing left to kick there: exit code 1, saying so.
    let (code, _, err) = dtlsd(&["kick", "--admin-socket", &socket, "127.0.0.22"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session matches 127.0.0.22"), "{err}");
    // A target that is neither an id nor an address is refused before asking.
    let (code, _, err) = dtlsd(&["kick", "--admin-socket", &socket, "somebody"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a session id"), "{err}");

    // Kick a by the session id status shows: it gets close_notify, nothing is left.
    let id = sessions(&status_json(&socket, &[]))[0]["id"]
        .as_u64()
        .expect("a session id");
    let (code, out, err) = dtlsd(&["kick", "--admin-socket", &socket, &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("closed session(s) {id}"));
    assert!(receives_close_notify(&mut a), "a got no close_notify");
    // The shard reports the close to control a moment after the alert leaves.
    let deadline = Instant::now() + IO_TIMEOUT;
    while !sessions(&status_json(&socket, &[])).is_empty() {
        assert!(Instant::now() < deadline, "a's session is still listed");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(daemon);
}

/// Whether `client` gets a close_notify alert within the I/O timeout.
fn receives_close_notify(client: &mut Client) -> bool {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        let closed = client
            .turn(Duration::from_millis(100))
            .alerts
            .iter()
            .any(|alert| alert == &[1, 0]);
        if closed {
            return true;
        }
    }
    false
}

#[test]
fn status_answers_while_a_session_is_busy_and_its_traffic_keeps_flowing() {
    // Shards copy their sessions only when asked (one atomic per loop turn otherwise), so
    // status during a stream of echoes answers from every shard and the stream goes on.
    let pki = TempDir::new("admin-busy");
    certs(&pki);
    let backend = EchoBackend::start();
    let socket = pki.file("admin.sock");
    let daemon = Daemon::start_serve(backend.addr, &pki, &["--admin-socket", &socket]);
    let mut client = Client::connect(Client::config(&pki), daemon.listen);
    let stop = AtomicBool::new(false);
    let echoed = std::thread::scope(|s| {
        let busy = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                client.echo(format!("busy {n}").as_bytes());
                n += 1;
            }
            n
        });
        for _ in 0..20 {
            let answer = status_json(&socket, &[]);
            assert_eq!(sessions(&answer).len(), 1, "{answer}");
            assert_eq!(
                answer["shards_unanswered"],
                serde_json::json!([]),
                "{answer}"
            );
        }
        stop.store(true, Relaxed);
        busy.join().expect("the echo thread")
    });
    assert!(echoed > 0);
    let rows = sessions(&status_json(&socket, &[]));
    let records_in = rows[0]["traffic"]["records_in"]
        .as_u64()
        .expect("records_in");
    assert!(
        records_in >= echoed,
        "{records_in} records for {echoed} echoes"
    );
    client.echo(b"still flowing");
}

#[test]
fn an_explicit_admin_socket_that_cannot_be_made_stops_start_up_naming_it() {
    let pki = TempDir::new("admin-bad");
    certs(&pki);
    // A regular file in the way of the socket.
    let path = pki.file("taken.sock");
    std::fs::write(&path, b"not a socket").expect("write");
    let (code, _, err) = dtlsd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--cert",
        &pki.file("server.pem"),
        "--key",
        &pki.file("server.key"),
        "--admin-socket",
        &path,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&path) && err.contains("not a socket"), "{err}");
}

#[test]
fn status_without_a_daemon_says_what_to_do() {
    let dir = TempDir::new("admin-none");
    let socket = dir.file("nobody.sock");
    let (code, _, err) = dtlsd(&["status", "--admin-socket", &socket]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach dtlsd at"), "{err}");
}

/// `dtlsd connect`'s status names the local source that owns each session, and its header
/// says where the sessions go.
#[test]
fn connect_status_names_the_local_source_of_each_session() {
    let pki = TempDir::new("admin-connect");
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &pki, &[]);
    let socket = pki.file("connect.sock");
    let connect = Daemon::start_connect(serve.listen, &pki, &["--admin-socket", &socket]);
    let mut sources = Vec::new();
    for last in [31, 32] {
        let local = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, last), 0)).expect("bind");
        local
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = [0u8; 64];
        let echoed = loop {
            assert!(Instant::now() < deadline, "no echo:\n{}", connect.log());
            local.send_to(b"plain", connect.listen).expect("send");
            if let Ok((n, _)) = local.recv_from(&mut buf) {
                break buf[..n].to_vec();
            }
        };
        assert_eq!(echoed, b"plain");
        sources.push(local.local_addr().expect("addr").to_string());
    }
    let status = status_json(&socket, &[]);
    assert_eq!(status["daemon"]["mode"], "connect", "{status}");
    assert_eq!(
        status["daemon"]["server"],
        serve.listen.to_string(),
        "{status}"
    );
    let mut owners: Vec<String> = sessions(&status)
        .iter()
        .map(|s| {
            assert_eq!(s["source"], s["peer"], "{s}");
            assert_eq!(s["listen"], connect.listen.to_string(), "{s}");
            s["source"].as_str().expect("source").to_owned()
        })
        .collect();
    owners.sort();
    assert_eq!(owners, sources);
    let (code, table, err) = dtlsd(&["status", "--admin-socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(
        table.starts_with(&format!(
            "dtlsd connect on {} -> server {}",
            connect.listen, serve.listen
        )),
        "{table}"
    );
    assert!(table.contains("\n    ID  SOURCE "), "{table}");
}
