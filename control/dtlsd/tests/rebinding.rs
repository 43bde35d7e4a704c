//! Connection IDs through `dtlsd serve` over real loopback sockets (RFC 9146 in DTLS 1.2,
//! RFC 9147 §9 in DTLS 1.3): a client that negotiated the server's CID changes its source
//! port mid-session (a NAT rebinding) and its session survives, data round-tripping
//! through the echo backend; with `--no-connection-id` no CID is given.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// [`cid_client`] in DTLS 1.3.
fn cid_client13(pki: &TempDir) -> Arc<Config> {
    let mut config = (*cid_client(pki)).clone();
    config.versions = vec![control::ProtocolVersion::Dtls1_3];
    Arc::new(config)
}

#[test]
fn a_dtls13_client_that_changes_its_source_port_keeps_its_session() {
    let pki = TempDir::new("rebind13");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "2"]);
    let mut client = Client::connect(cid_client13(&pki), daemon.listen);
    // The server's CID (8 bytes by default) in the unified header of our records.
    assert_eq!(
        client.peer_cid().map(<[u8]>::len),
        Some(8),
        "{}",
        daemon.log()
    );
    client.echo(b"1.3 before the rebinding");
    for round in 0..3 {
        let before = client.local_addr();
        client.rebind();
        assert_ne!(client.local_addr(), before);
        client.echo(format!("1.3 after move {round}").as_bytes());
    }
    let sum = |name: &str| -> u64 {
        (0..2)
            .map(|s| {
                daemon
                    .metric(&format!("{name}{{shard=\"{s}\"}}"))
                    .unwrap_or(0)
            })
            .sum()
    };
    assert_eq!(sum("dtlsd_sessions_moved_total"), 3, "{}", daemon.log());
    assert_eq!(sum("dtlsd_sessions_active"), 1);
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
    let mut client = Client::connect(cid_client13(&pki), daemon.listen);
    assert_eq!(client.peer_cid(), None);
    client.echo(b"plain 1.3 records");
}

/// Clients that each change their source port `REBINDS` times through `dtlsd serve
/// --shards 2` (plus `extra`), echoing after each change. Returns the daemon, to read its
/// counters, once every echo came back.
fn rebinding_clients(tag: &str, extra: &[&str]) -> (Daemon, TempDir, EchoBackend) {
    const CLIENTS: usize = 16;
    const REBINDS: usize = 3;
    let pki = TempDir::new(tag);
    certs(&pki);
    let backend = EchoBackend::start();
    let args: Vec<&str> = ["--shards", "2"].iter().chain(extra).copied().collect();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(cid_client(&pki), daemon.listen))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.peer_cid().map(<[u8]>::len), Some(8));
        client.echo(format!("client {i} at home").as_bytes());
    }
    for round in 0..REBINDS {
        for (i, client) in clients.iter_mut().enumerate() {
            client.rebind();
            client.echo(format!("client {i} after move {round}").as_bytes());
        }
    }
    let per_shard = |name: &str| per_shard(&daemon, name, 2);
    let moved = per_shard("dtlsd_sessions_moved_total");
    assert_eq!(
        moved.iter().sum::<u64>(),
        (CLIENTS * REBINDS) as u64,
        "every change of address moved its session: {moved:?}\n{}",
        daemon.log()
    );
    let active = per_shard("dtlsd_sessions_active");
    assert!(
        active.iter().all(|&n| n > 0),
        "the hash spread the handshakes over both shards: {active:?}"
    );
    (daemon, pki, backend)
}

/// Counter or gauge `name` of each of the first `shards` shards (0 where not exposed).
fn per_shard(daemon: &Daemon, name: &str, shards: usize) -> Vec<u64> {
    (0..shards)
        .map(|s| {
            daemon
                .metric(&format!("{name}{{shard=\"{s}\"}}"))
                .unwrap_or(0)
        })
        .collect()
}

fn handoffs(daemon: &Daemon) -> Vec<u64> {
    (0..2)
        .map(|s| {
            daemon
                .metric(&format!("dtlsd_cid_handoffs_total{{shard=\"{s}\"}}"))
                .expect("the counter is exposed")
        })
        .collect()
}

#[test]
fn with_steering_no_record_crosses_shards_after_address_changes() {
    let (daemon, _pki, _backend) = rebinding_clients("steer-on", &[]);
    assert!(
        daemon.log().contains("CID steering program attached"),
        "{}",
        daemon.log()
    );
    assert_eq!(handoffs(&daemon), vec![0, 0], "{}", daemon.log());
}

#[test]
fn without_steering_records_reach_their_shard_by_hand_off() {
    let (daemon, _pki, _backend) = rebinding_clients("steer-off", &["--no-cid-steering"]);
    assert!(
        daemon.log().contains("cid_steering = false"),
        "{}",
        daemon.log()
    );
    // 48 new source ports hashed over two shards: about half land on the other one.
    let handoffs = handoffs(&daemon);
    assert!(handoffs.iter().sum::<u64>() > 0, "{handoffs:?}");
    assert_eq!(
        daemon.metric("dtlsd_drops_total{shard=\"0\",reason=\"handoff_full\"}"),
        Some(0)
    );
}

/// A client that offers the return-routability check (RFC 9853) and never answers a
/// path_challenge: after its address changes, its records are still delivered and echoed to
/// the new address within the amplification limit, but the session does not move there, and
/// the check gives up after its retries.
#[test]
fn an_address_that_never_answers_the_challenge_does_not_take_the_session() {
    never_answers("rrc-silent", cid_client);
}

/// [`an_address_that_never_answers_the_challenge_does_not_take_the_session`] in DTLS 1.3
/// (RFC 9853 covers both versions: the message is the inner content type there).
#[test]
fn a_dtls13_address_that_never_answers_the_challenge_does_not_take_the_session() {
    never_answers("rrc-silent13", cid_client13);
}

fn never_answers(tag: &str, client: fn(&TempDir) -> Arc<Config>) {
    let pki = TempDir::new(tag);
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut config = (*client(&pki)).clone();
    config.rrc = true;
    let mut client = Client::connect(Arc::new(config), daemon.listen);
    client.echo(b"before the rebinding");
    client.rebind();
    for i in 0..3 {
        client.echo(format!("from the unchecked address {i}").as_bytes());
    }
    let metric = |name: &str| daemon.metric(&format!("{name}{{shard=\"0\"}}"));
    assert!(
        metric("dtlsd_rrc_challenges_sent_total").is_some_and(|n| n >= 1),
        "{}",
        daemon.log()
    );
    // Three challenges a retransmission timeout apart, retried by the 1 s sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while metric("dtlsd_rrc_failed_total") != Some(1) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        metric("dtlsd_rrc_failed_total"),
        Some(1),
        "{}",
        daemon.log()
    );
    assert_eq!(metric("dtlsd_rrc_validated_total"), Some(0));
    assert_eq!(metric("dtlsd_sessions_moved_total"), Some(0));
    assert_eq!(metric("dtlsd_sessions_active"), Some(1));
}

/// Two listen addresses over four shards (two each): each address's reuseport group gets its
/// own steering program, numbering its sockets from its first shard, so clients of the
/// second address that change their source port never cross shards either.
#[test]
fn each_listen_address_steers_its_own_shards() {
    const CLIENTS: usize = 16;
    const REBINDS: usize = 3;
    let pki = TempDir::new("steer-two-listen");
    certs(&pki);
    let backend = EchoBackend::start();
    let second_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let second = SocketAddr::new(second_ip, common::free_udp_port());
    let daemon = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--listen", &second.to_string(), "--shards", "4"],
    );
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect_from(cid_client(&pki), second, second_ip, common::IO_TIMEOUT))
        .collect();
    for round in 0..=REBINDS {
        for (i, client) in clients.iter_mut().enumerate() {
            if round > 0 {
                client.rebind();
            }
            client.echo(format!("client {i}, round {round}").as_bytes());
        }
    }
    let per_shard = |name: &str| per_shard(&daemon, name, 4);
    let log = daemon.log();
    let attached = log
        .lines()
        .filter(|l| l.contains("CID steering program attached"))
        .count();
    assert_eq!(attached, 2, "one program per address:\n{log}");
    let active = per_shard("dtlsd_sessions_active");
    assert_eq!(active[..2], [0, 0], "{active:?}");
    assert!(active[2] > 0 && active[3] > 0, "{active:?}");
    let moved = per_shard("dtlsd_sessions_moved_total");
    assert_eq!(
        moved.iter().sum::<u64>(),
        (CLIENTS * REBINDS) as u64,
        "{moved:?}"
    );
    assert_eq!(
        per_shard("dtlsd_cid_handoffs_total"),
        vec![0; 4],
        "steered, never handed off:\n{log}"
    );
}

/// `--no-rrc`: a client that offers the check (and never answers a challenge) is moved at
/// once, as without the check.
#[test]
fn no_rrc_moves_sessions_at_once() {
    let pki = TempDir::new("no-rrc");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon =
        Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1", "--no-rrc"]);
    for (i, client) in [cid_client as fn(&TempDir) -> Arc<Config>, cid_client13]
        .into_iter()
        .enumerate()
    {
        let mut config = (*client(&pki)).clone();
        config.rrc = true;
        let mut client = Client::connect(Arc::new(config), daemon.listen);
        client.echo(b"before the rebinding");
        client.rebind();
        client.echo(b"after the rebinding");
        assert_eq!(
            daemon.metric("dtlsd_sessions_moved_total{shard=\"0\"}"),
            Some(i as u64 + 1),
            "{}",
            daemon.log()
        );
    }
    assert_eq!(
        daemon.metric("dtlsd_rrc_challenges_sent_total{shard=\"0\"}"),
        Some(0)
    );
}

/// DTLS 1.3 CIDs issued after the handshake (RFC 9147 §9): the client asks for more of the
/// server's CIDs (RequestConnectionId), and records under one of them from a new address
/// reach the session, which moves there.
#[test]
fn a_dtls13_client_moves_under_a_cid_issued_after_the_handshake() {
    let pki = TempDir::new("rebind13-new-cid");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut client = Client::connect(cid_client13(&pki), daemon.listen);
    client.echo(b"under the handshake's cid");
    let first = client.peer_cid().expect("a CID").to_vec();
    let spare = client.request_cids(2);
    assert_eq!(spare.len(), 2, "{}", daemon.log());
    assert!(spare.iter().all(|c| c.len() == first.len() && *c != first));
    for (round, cid) in spare.iter().enumerate() {
        client.use_peer_cid(cid);
        client.rebind();
        client.echo(format!("under issued cid {round}").as_bytes());
    }
    assert_eq!(
        daemon.metric("dtlsd_sessions_moved_total{shard=\"0\"}"),
        Some(2),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.metric("dtlsd_sessions_active{shard=\"0\"}"), Some(1));
}

/// The node id configured for a fleet (`[[nodes]]` in the file, `--node-name` picking this
/// node's entry) is in every CID the server issues: byte 1 of our QUIC-LB CIDs (after the
/// first octet, which carries the length) is the node id, byte 2 the shard id.
#[test]
fn issued_cids_name_the_configured_node() {
    let pki = TempDir::new("node-id");
    certs(&pki);
    let config = pki.file("serve.toml");
    // Other nodes listed: records are forwarded between them, authenticated with the key
    // store's forward_secrets, and this node takes them on its own address.
    let store = pki.file("keys.toml");
    let secret = "ab".repeat(32);
    std::fs::write(
        &store,
        format!(
            "ticket_secrets = [\"{secret}\"]\ncookie_secrets = [\"{secret}\"]\n\
             forward_secrets = [\"{secret}\"]\n"
        ),
    )
    .expect("write key store");
    std::fs::write(
        &config,
        format!(
            "[serve]\nkey_store = \"{store}\"\n\
             [[nodes]]\nid = 3\nname = \"worker-a\"\naddress = \"127.0.0.1:1\"\n\
             [[nodes]]\nid = 42\nname = \"worker-b\"\naddress = \"{}\"\n",
            common::free_udp_addr()
        ),
    )
    .expect("write config");
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &[
            "--shards",
            "2",
            "--config",
            &config,
            "--node-name",
            "worker-b",
        ],
    );
    for _ in 0..4 {
        let mut client = Client::connect(cid_client(&pki), daemon.listen);
        let cid = client.peer_cid().expect("a CID").to_vec();
        assert_eq!(cid.len(), 8);
        assert_eq!(cid[0] & 0x3f, 7, "length self-description");
        assert_eq!(cid[1], 42, "node id: {cid:02x?}\n{}", daemon.log());
        assert!(cid[2] < 2, "shard id: {cid:02x?}");
        client.echo(b"from node 42");
    }
}
