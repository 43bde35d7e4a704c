//! Connection IDs through `dtlsd serve` over real loopback sockets (RFC 9146): a client
//! that negotiated the server's CID changes its source port mid-session (a NAT rebinding)
//! and its session survives, data round-tripping through the echo backend; with
//! `--no-connection-id` no CID is given.

mod common;

use std::sync::Arc;

use common::{Client, Daemon, EchoBackend, TempDir, certs};
use control::{Config, ConnectionIds};

/// Our engine as the client, asking for no CID of its own (it sends the server's).
fn cid_client(pki: &TempDir) -> Arc<Config> {
    let mut config = (*Client::config(pki)).clone();
    config.connection_id = ConnectionIds::On { len: 0 };
    Arc::new(config)
}

#[test]
fn a_client_that_changes_its_source_port_keeps_its_session() {
    let pki = TempDir::new("rebind");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut client = Client::connect(cid_client(&pki), daemon.listen);
    // `dtlsd serve` issues 8-byte CIDs by default.
    assert_eq!(
        client.peer_cid().map(<[u8]>::len),
        Some(8),
        "{}",
        daemon.log()
    );
    client.echo(b"before the rebinding");
    let before = client.local_addr();
    client.rebind();
    assert_ne!(client.local_addr(), before);
    for i in 0..5 {
        client.echo(format!("after the rebinding {i}").as_bytes());
    }
    assert_eq!(
        daemon.metric("dtlsd_sessions_moved_total{shard=\"0\"}"),
        Some(1),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.metric("dtlsd_sessions_active{shard=\"0\"}"), Some(1));
}

#[test]
fn no_connection_id_turns_them_off() {
    let pki = TempDir::new("nocid");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve(backend.addr, &pki, &["--no-connection-id"]);
    let mut client = Client::connect(cid_client(&pki), daemon.listen);
    assert_eq!(client.peer_cid(), None);
    client.echo(b"plain records");
}
