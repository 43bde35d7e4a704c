//! The data-plane I/O keys reach the shards: `io_batch`, `uring_buffers`, `gso`,
//! `socket_recv_buffer` and `socket_send_buffer`, given as flags (`serve`) and in a
//! `[connect]` file, are what each shard's backend and socket run with, as the shard's
//! `shard bound` line reads them back (the batch and ring of the backend, GSO as the kernel
//! left it, SO_RCVBUF/SO_SNDBUF by getsockopt); with GSO off a burst of equal-size
//! datagrams leaves connect one datagram per send, and every datagram still comes back.
//! Bad values stop the daemon with a configuration error naming the key (exit 2).

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, EchoBackend, TempDir, certs};

/// The `key=value` fields of the first `shard bound` line of `log`.
fn shard_bound(log: &str) -> HashMap<String, String> {
    let line = log
        .lines()
        .find(|l| l.contains("shard bound"))
        .unwrap_or_else(|| panic!("no `shard bound` line:\n{log}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {fields:?}"))
}

/// Sends `count` equal-size datagrams through `connect` and checks each comes back.
fn echo_burst(source: &UdpSocket, count: usize, tag: u8) {
    let mut buf = vec![0u8; 65_536];
    for i in 0..count {
        source
            .send(&[tag, i as u8, 7, 7, 7, 7, 7, 7])
            .expect("send");
    }
    for i in 0..count {
        let n = source.recv(&mut buf).expect("echo");
        assert_eq!(&buf[..n], &[tag, i as u8, 7, 7, 7, 7, 7, 7], "echo {i}");
    }
}

fn keys_reach_the_shards(io: &str) {
    let pki = TempDir::new(&format!("io-keys-{io}"));
    certs(&pki);
    let backend = EchoBackend::start();

    // Defaults first: today's constants.
    let plain = Daemon::start_serve(backend.addr, &pki, &["--io", io, "--shards", "1"]);
    let f = shard_bound(&plain.log());
    assert_eq!(field(&f, "batch"), 32, "{f:?}");
    assert_eq!(f.get("gso").map(String::as_str), Some("true"), "{f:?}");
    let default_rcvbuf = field(&f, "rcvbuf");
    if io == "uring" {
        assert_eq!(field(&f, "uring_buffers"), 64, "{f:?}");
    }
    drop(plain);

    // Flags on serve. 64 KiB and 96 KiB are below the kernel's default rmem_max/wmem_max,
    // so they are granted with or without CAP_NET_ADMIN; Linux reports twice the grant.
    let serve = Daemon::start_serve(
        backend.addr,
        &pki,
        &[
            "--io",
            io,
            "--shards",
            "1",
            "--io-batch",
            "8",
            "--uring-buffers",
            "1024",
            "--no-gso",
            "--socket-recv-buffer",
            "65536",
            "--socket-send-buffer",
            "98304",
        ],
    );
    let f = shard_bound(&serve.log());
    assert_eq!(
        f.get("backend").map(String::as_str),
        Some(match io {
            "uring" => "Uring",
            _ => "Mmsg",
        })
    );
    assert_eq!(field(&f, "batch"), 8, "{f:?}");
    assert_eq!(f.get("gso").map(String::as_str), Some("false"), "{f:?}");
    assert_eq!(field(&f, "rcvbuf"), 2 * 65_536, "{f:?}");
    assert_eq!(field(&f, "sndbuf"), 2 * 98_304, "{f:?}");
    assert_ne!(field(&f, "rcvbuf"), default_rcvbuf, "{f:?}");
    if io == "uring" {
        // 1024 provided buffers: the completion queue holds two per buffer.
        assert_eq!(field(&f, "uring_buffers"), 1024, "{f:?}");
        assert!(field(&f, "uring_cq_entries") >= 2048, "{f:?}");
    }

    // The same keys from a [connect] file.
    let file = pki.path().join("connect.toml");
    std::fs::write(
        &file,
        format!(
            "[connect]\nio = \"{io}\"\nshards = 1\nio_batch = 4\nuring_buffers = 16\n\
             gso = false\nsocket_recv_buffer = 81920\nsocket_send_buffer = 65536\n"
        ),
    )
    .expect("write connect config");
    let file = file.display().to_string();
    let connect = Daemon::start_connect_with_metrics(serve.listen, &pki, &["--config", &file]);
    let f = shard_bound(&connect.log());
    assert_eq!(field(&f, "batch"), 4, "{f:?}");
    assert_eq!(f.get("gso").map(String::as_str), Some("false"), "{f:?}");
    assert_eq!(field(&f, "rcvbuf"), 2 * 81_920, "{f:?}");
    assert_eq!(field(&f, "sndbuf"), 2 * 65_536, "{f:?}");
    if io == "uring" {
        assert_eq!(field(&f, "uring_buffers"), 16, "{f:?}");
    }

    // Traffic through both with GSO off: every datagram back, none sent as a GSO run.
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind source");
    source.connect(connect.listen).expect("connect source");
    source
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    source.send(b"hello").expect("send");
    let n = source.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "first echo: {e}\nconnect:\n{}\nserve:\n{}",
            connect.log(),
            serve.log()
        )
    });
    assert_eq!(&buf[..n], b"hello");
    for round in 0..20 {
        echo_burst(&source, 16, round);
    }
    let out = connect
        .metric("dtlsd_upstream_datagrams_out_total{shard=\"0\"}")
        .unwrap_or(0);
    assert!(out >= 320, "connect sent {out} upstream datagrams");
    assert_eq!(
        connect.metric("dtlsd_upstream_gso_sends_total{shard=\"0\"}"),
        Some(0),
        "gso = false, yet connect sent GSO runs\n{}",
        connect.log()
    );
}

#[test]
fn io_keys_reach_the_mmsg_backend_and_sockets() {
    keys_reach_the_shards("mmsg");
}

#[test]
fn io_keys_reach_the_uring_backend_and_sockets() {
    keys_reach_the_shards("uring");
}

#[test]
fn bad_io_values_stop_serve_naming_the_key() {
    let pki = TempDir::new("io-keys-bad");
    certs(&pki);
    for (flag, value, expected) in [
        ("--io-batch", "0", "serve.io_batch: 0 is out of range"),
        (
            "--uring-buffers",
            "100",
            "serve.uring_buffers: 100 is not usable",
        ),
        (
            "--socket-recv-buffer",
            "1024",
            "serve.socket_recv_buffer: 1024 is out of range",
        ),
        (
            "--socket-send-buffer",
            "2000000000",
            "serve.socket_send_buffer: 2000000000 is out of range",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dtlsd"))
            .env("RUST_LOG", "warn")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:9",
            ])
            .args([
                "--cert",
                &pki.file("server.pem"),
                "--key",
                &pki.file("server.key"),
            ])
            .args([flag, value])
            .output()
            .expect("run dtlsd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }
    // The same from a file, through check-config.
    let file = pki.path().join("bad.toml");
    std::fs::write(
        &file,
        "[serve]\nlisten = \"127.0.0.1:0\"\nbackend = \"127.0.0.1:9\"\n\
         psk = [\"a:00ff\"]\nio_batch = 64\nuring_buffers = 32\n",
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_dtlsd"))
        .args(["check-config", &file.display().to_string()])
        .output()
        .expect("run dtlsd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("serve.uring_buffers: 32 is not usable: must be at least io_batch"),
        "{stderr}"
    );
}
