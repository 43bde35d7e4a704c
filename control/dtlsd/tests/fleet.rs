//! Two `dtlsd serve` nodes on loopback behind a 4-tuple-hashing UDP balancer of ours
//! (`common::balancer`), sharing a key store with `forward_secrets` and listing each other
//! in `[[nodes]]`: a client whose new address hashes to the other node keeps its session,
//! for DTLS 1.2 (tls12_cid records) and 1.3 (the C bit). The node the client now reaches
//! reads the owner's node id from the CID and forwards the record to the owner's
//! forwarding address with the client's address inside the authenticated encapsulation;
//! the owner moves the session to that address and answers the client directly (through
//! the balancer, which takes replies from any node, as a direct-server-return front
//! does). With `dtlsd connect` as the client behind a NAT of ours, the owner's RFC 9853
//! return-routability check of the new address runs through the forwarding too. A forged
//! forwarded packet (bad HMAC) is dropped, counted, and moves nothing.
//!
//! Every wait has a deadline; daemons are killed on drop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::balancer::{Balancer, pick};
use common::{Client, Daemon, EchoBackend, TempDir, certs, free_udp_addr};
use control::{Config, ConnectionIds, ProtocolVersion};
use dataplane::cid::{ConfigId, EncryptedCids, QuicLbKey, ServerIdLayout};
use dataplane::forward::{ForwardKey, Forwarder};

const TICKETS: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const COOKIES: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const FORWARD: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
/// Node ids of the two nodes, in balancer order.
const IDS: [u8; 2] = [7, 9];

struct Fleet {
    nodes: Vec<Daemon>,
    forward: Vec<SocketAddr>,
    balancer: Balancer,
    _backend: EchoBackend,
}

/// The key store's text, with `extra` lines (e.g. `quic_lb_keys`) after the secrets.
fn store_text(extra: &str) -> String {
    format!(
        "ticket_secrets = [\"{TICKETS}\"]\ncookie_secrets = [\"{COOKIES}\"]\n\
         forward_secrets = [\"{FORWARD}\"]\n{extra}"
    )
}

impl Fleet {
    fn start(pki: &TempDir) -> Self {
        Self::start_with(pki, "")
    }

    /// A fleet whose key store has `extra` lines too.
    fn start_with(pki: &TempDir, extra: &str) -> Self {
        let store = pki.file("keys.toml");
        std::fs::write(&store, store_text(extra)).expect("write key store");
        let forward = vec![free_udp_addr(), free_udp_addr()];
        let config = pki.file("serve.toml");
        let mut text = "[serve]\n".to_owned();
        for (id, address) in IDS.iter().zip(&forward) {
            text.push_str(&format!("[[nodes]]\nid = {id}\naddress = \"{address}\"\n"));
        }
        std::fs::write(&config, text).expect("write config");
        let backend = EchoBackend::start();
        let nodes: Vec<Daemon> = IDS
            .iter()
            .map(|id| {
                Daemon::start_serve_with_metrics(
                    backend.addr,
                    pki,
                    &[
                        "--shards",
                        "2",
                        "--config",
                        &config,
                        "--key-store",
                        &store,
                        "--node-id",
                        &id.to_string(),
                    ],
                )
            })
            .collect();
        for node in &nodes {
            assert!(
                node.log().contains("forwarding records between nodes"),
                "{}",
                node.log()
            );
        }
        let balancer = Balancer::start(nodes.iter().map(|n| n.listen).collect());
        Self {
            nodes,
            forward,
            balancer,
            _backend: backend,
        }
    }

    /// The sum of `series{shard="0"}` and `series{shard="1"}` on node `i`.
    fn per_shard(&self, i: usize, series: &str) -> u64 {
        (0..2)
            .map(|s| {
                self.nodes[i]
                    .metric(&format!("{series}{{shard=\"{s}\"}}"))
                    .unwrap_or(0)
            })
            .sum()
    }

    fn metric(&self, i: usize, series: &str) -> u64 {
        self.nodes[i]
            .metric(series)
            .unwrap_or_else(|| panic!("no {series} on node {i}:\n{}", self.nodes[i].log()))
    }

    fn logs(&self) -> String {
        format!(
            "node 0:\n{}\nnode 1:\n{}",
            self.nodes[0].log(),
            self.nodes[1].log()
        )
    }
}

fn client_config(pki: &TempDir, version: ProtocolVersion) -> Arc<Config> {
    let mut config = (*Client::config(pki)).clone();
    config.connection_id = ConnectionIds::On { len: 0 };
    config.versions = vec![version];
    Arc::new(config)
}

fn moves_to_the_other_node_and_keeps_its_session(tag: &str, version: ProtocolVersion) {
    let pki = TempDir::new(tag);
    certs(&pki);
    let fleet = Fleet::start(&pki);
    let mut client = Client::connect(client_config(&pki, version), fleet.balancer.front);
    let owner = fleet.balancer.node_of(client.local_addr());
    let cid = client.peer_cid().expect("a CID").to_vec();
    assert_eq!(cid[1], IDS[owner], "the CID names the owner: {cid:02x?}");
    client.echo(b"before the move");
    move_to_other_node(&fleet, &mut client, owner, 1);
    assert_sessions_on(&fleet, owner);
    assert_no_auth_drops(&fleet);
}

/// The one session lives on node `owner`, none on the other.
fn assert_sessions_on(fleet: &Fleet, owner: usize) {
    let logs = fleet.logs();
    assert_eq!(fleet.per_shard(owner, "dtlsd_sessions_active"), 1, "{logs}");
    assert_eq!(
        fleet.per_shard(1 - owner, "dtlsd_sessions_active"),
        0,
        "{logs}"
    );
}

/// QUIC-LB keys of the encrypted-CID tests (AES-128, 32 hex digits).
const QUIC_LB_OLD: &str = "000102030405060708090a0b0c0d0e0f";
const QUIC_LB_NEW: &str = "f0e0d0c0b0a090807060504030201000";

/// The key store's `quic_lb_keys` line for `keys` (codepoint, key), current first.
fn quic_lb_keys(keys: &[(u8, &str)]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|(codepoint, key)| format!("{{ codepoint = {codepoint}, key = \"{key}\" }}"))
        .collect();
    format!("quic_lb_keys = [{}]\n", list.join(", "))
}

/// What a QUIC-LB load balancer holding `keys` decodes from our 8-octet CIDs (the serve
/// default length: first octet, 2 octets of server ID and 4 of nonce encrypted with the
/// four-pass Feistel network, then the shard octet).
fn decoder(keys: &[(u8, &str)]) -> EncryptedCids {
    let keys: Vec<QuicLbKey> = keys
        .iter()
        .map(|(codepoint, hex)| {
            let mut key = [0u8; 16];
            for (i, k) in key.iter_mut().enumerate() {
                *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
            }
            QuicLbKey {
                config_id: ConfigId::new(*codepoint).expect("codepoint"),
                key: zeroize::Zeroizing::new(key),
            }
        })
        .collect();
    let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
    EncryptedCids::new(8, layout, &keys).expect("8-octet encrypted CIDs")
}

/// Checks `cid` is an encrypted CID under `codepoint` naming node `IDS[owner]`, and
/// returns the shard it names.
fn assert_encrypted_cid(cid: &[u8], keys: &[(u8, &str)], codepoint: u8, owner: usize) -> u16 {
    assert_eq!(cid.len(), 8, "{cid:02x?}");
    assert_eq!(
        cid[0],
        codepoint << 5 | 7,
        "codepoint and length: {cid:02x?}"
    );
    let named = decoder(keys).owner_of(cid).expect("decodes under the key");
    assert_eq!(named.node, u32::from(IDS[owner]), "{cid:02x?}");
    assert_eq!(u16::from(cid[7]), named.shard, "the plaintext shard octet");
    named.shard
}

fn encrypted_cids_move_to_the_other_node(tag: &str, version: ProtocolVersion) {
    let pki = TempDir::new(tag);
    certs(&pki);
    let keys = [(2, QUIC_LB_OLD)];
    let fleet = Fleet::start_with(&pki, &quic_lb_keys(&keys));
    assert!(
        fleet.nodes[0].log().contains("encrypted connection IDs"),
        "{}",
        fleet.logs()
    );
    let mut client = Client::connect(client_config(&pki, version), fleet.balancer.front);
    let owner = fleet.balancer.node_of(client.local_addr());
    let cid = client.peer_cid().expect("a CID").to_vec();
    assert_encrypted_cid(&cid, &keys, 2, owner);
    client.echo(b"before the move");
    move_to_other_node(&fleet, &mut client, owner, 1);
    assert_sessions_on(&fleet, owner);
    assert_no_auth_drops(&fleet);
}

#[test]
fn a_dtls12_client_with_an_encrypted_cid_moved_to_the_other_node_keeps_its_session() {
    encrypted_cids_move_to_the_other_node("fleetenc12", ProtocolVersion::Dtls1_2);
}

#[test]
fn a_dtls13_client_with_an_encrypted_cid_moved_to_the_other_node_keeps_its_session() {
    encrypted_cids_move_to_the_other_node("fleetenc13", ProtocolVersion::Dtls1_3);
}

/// Writes the key store with `keys`, sends SIGHUP to both nodes and waits until each has
/// logged `rotations` QUIC-LB key rotations in all.
fn rotate_quic_lb_keys(pki: &TempDir, fleet: &Fleet, keys: &[(u8, &str)], rotations: usize) {
    std::fs::write(pki.file("keys.toml"), store_text(&quic_lb_keys(keys))).expect("store");
    for node in &fleet.nodes {
        node.signal("HUP");
    }
    common::wait_until(
        "both nodes rotated their QUIC-LB keys",
        || fleet.logs(),
        || {
            fleet
                .nodes
                .iter()
                .all(|n| n.log().matches("QUIC-LB keys rotated").count() >= rotations)
        },
    );
}

/// QUIC-LB key rotation (draft-ietf-quic-load-balancers-21 §3.1): a new key under a new
/// codepoint issues the CIDs of new sessions, the previous key still decodes the CIDs of
/// sessions it issued (a client that moves keeps reaching its owner node), and once the
/// previous key is removed its CIDs no longer route to another node.
#[test]
fn quic_lb_keys_rotate_under_a_new_codepoint_with_a_grace_period() {
    let pki = TempDir::new("fleetrot");
    certs(&pki);
    let old = [(0, QUIC_LB_OLD)];
    let new = [(1, QUIC_LB_NEW)];
    let fleet = Fleet::start_with(&pki, &quic_lb_keys(&old));
    let config = client_config(&pki, ProtocolVersion::Dtls1_2);
    let mut a = Client::connect(Arc::clone(&config), fleet.balancer.front);
    let owner_a = fleet.balancer.node_of(a.local_addr());
    assert_encrypted_cid(a.peer_cid().expect("a CID"), &old, 0, owner_a);
    a.echo(b"a before the rotation");

    // Rotation: the new key under codepoint 1 issues, the old one still decodes.
    rotate_quic_lb_keys(&pki, &fleet, &[(1, QUIC_LB_NEW), (0, QUIC_LB_OLD)], 1);
    let mut b = Client::connect(config, fleet.balancer.front);
    let owner_b = fleet.balancer.node_of(b.local_addr());
    let cid_b = b.peer_cid().expect("a CID").to_vec();
    assert_encrypted_cid(&cid_b, &new, 1, owner_b);
    assert!(
        decoder(&old).owner_of(&cid_b).is_none(),
        "not under the old key"
    );
    // a's CID, issued under the old key, still names its owner: a keeps its session when
    // it moves to the other node.
    move_to_other_node(&fleet, &mut a, owner_a, 1);
    let moved_b = 1 + u64::from(owner_b == owner_a);
    move_to_other_node(&fleet, &mut b, owner_b, moved_b);

    // The old key retired: b's CID still routes; a's no longer reaches its owner from the
    // other node (that node finds no session under it and drops the record, counted).
    rotate_quic_lb_keys(&pki, &fleet, &new, 2);
    b.echo(b"b after the old key is gone");
    let other_a = 1 - owner_a;
    let unknown = |i: usize| {
        (0..2)
            .map(|s| {
                fleet.nodes[i]
                    .metric(&format!(
                        "dtlsd_drops_total{{shard=\"{s}\",reason=\"unknown_session\"}}"
                    ))
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = unknown(other_a);
    let forwards = fleet.per_shard(other_a, "dtlsd_cid_forwards_total");
    a.send_app(b"a after the old key is gone");
    common::wait_until(
        "the other node drops a's record",
        || fleet.logs(),
        || unknown(other_a) > before,
    );
    assert_eq!(
        fleet.per_shard(other_a, "dtlsd_cid_forwards_total"),
        forwards,
        "{}",
        fleet.logs()
    );
    assert_no_auth_drops(&fleet);
}

/// Rebinds `client` (owned by node `owner`) until the balancer sends it to the other node,
/// then checks its records reach the owner through forwarding and that the owner has
/// moved the session `moved` times in all.
fn move_to_other_node(fleet: &Fleet, client: &mut Client, owner: usize, moved: u64) {
    let other = 1 - owner;
    let forwards_before = fleet.per_shard(other, "dtlsd_cid_forwards_total");
    let mut moves = 0;
    while fleet.balancer.node_of(client.local_addr()) != other {
        client.rebind();
        moves += 1;
        assert!(moves < 200, "no port hashed to the other node");
    }
    for i in 0..5 {
        client.echo(format!("after the move {i}").as_bytes());
    }
    let logs = fleet.logs();
    assert!(
        fleet.per_shard(other, "dtlsd_cid_forwards_total") >= forwards_before + 5,
        "{logs}"
    );
    assert!(
        fleet.metric(other, "dtlsd_forwarded_out_total") >= 5,
        "{logs}"
    );
    assert!(
        fleet.metric(owner, "dtlsd_forwarded_in_total") >= 5,
        "{logs}"
    );
    assert_eq!(
        fleet.per_shard(owner, "dtlsd_sessions_moved_total"),
        moved,
        "{logs}"
    );
}

fn assert_no_auth_drops(fleet: &Fleet) {
    let logs = fleet.logs();
    for i in 0..2 {
        assert_eq!(
            fleet.metric(i, r#"dtlsd_forward_drops_total{reason="auth"}"#),
            0,
            "{logs}"
        );
    }
}

#[test]
fn a_dtls12_client_moved_to_the_other_node_keeps_its_session() {
    moves_to_the_other_node_and_keeps_its_session("fleet12", ProtocolVersion::Dtls1_2);
}

#[test]
fn a_dtls13_client_moved_to_the_other_node_keeps_its_session() {
    moves_to_the_other_node_and_keeps_its_session("fleet13", ProtocolVersion::Dtls1_3);
}

/// A fleet with one DTLS 1.2 client that echoed once, the node that owns its session, and
/// a tls12_cid record header under the session's CID followed by junk.
fn a_session_and_a_junk_record(name: &str) -> (TempDir, Fleet, Client, usize, Vec<u8>) {
    let pki = TempDir::new(name);
    certs(&pki);
    let fleet = Fleet::start(&pki);
    let mut client = Client::connect(
        client_config(&pki, ProtocolVersion::Dtls1_2),
        fleet.balancer.front,
    );
    let owner = fleet.balancer.node_of(client.local_addr());
    client.echo(b"before");
    let cid = client.peer_cid().expect("a CID");
    let mut record = vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9];
    record.extend_from_slice(cid);
    record.extend_from_slice(&[0, 24]);
    record.extend_from_slice(&[0xab; 24]);
    (pki, fleet, client, owner, record)
}

/// Wall-clock milliseconds since the Unix epoch (the forwarding header's timestamp).
fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    u64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// A packet in our encapsulation whose tag was made with another key, carrying a record
/// under a live session's CID and claiming a third address: dropped before anything in it
/// is read, counted as `auth`, and the session stays where it is.
#[test]
fn a_forged_forwarded_datagram_is_dropped_and_counted() {
    let (_pki, fleet, mut client, owner, record) = a_session_and_a_junk_record("fleet-forged");
    let now_ms = unix_ms();
    let mut forger = Forwarder::new(IDS[1 - owner], ForwardKey::new(&[0x5a; 32]), now_ms);
    let mut packet = Vec::new();
    let spoofed: SocketAddr = "127.0.0.9:9999".parse().expect("literal");
    forger.encapsulate(now_ms, spoofed, &record, &mut packet);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..3 {
        sock.send_to(&packet, fleet.forward[owner]).expect("send");
    }
    let logs = || fleet.logs();
    common::wait_until("the forged packets counted", logs, || {
        fleet.nodes[owner]
            .metric(r#"dtlsd_forward_drops_total{reason="auth"}"#)
            .is_some_and(|n| n == 3)
    });
    client.echo(b"after the forgery");
    let logs = fleet.logs();
    assert_eq!(fleet.metric(owner, "dtlsd_forwarded_in_total"), 0, "{logs}");
    assert_eq!(
        fleet.per_shard(owner, "dtlsd_sessions_moved_total"),
        0,
        "{logs}"
    );
    assert_eq!(fleet.per_shard(owner, "dtlsd_sessions_active"), 1, "{logs}");
}

/// A one-client NAT in front of the balancer: what `dtlsd connect` sends to `inside` leaves
/// through an outside socket towards the balancer's front, answers come back.
/// [`Nat::move_to`] replaces the outside socket with one whose 4-tuple hashes to a given
/// node (the old socket closes, as a NAT mapping that expired).
struct Nat {
    inside: SocketAddr,
    requests: mpsc::Sender<usize>,
    /// The node the outside socket hashes to, once the thread set it up.
    node: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Nat {
    fn start(front: SocketAddr) -> Self {
        let inside = UdpSocket::bind("127.0.0.1:0").expect("bind nat inside");
        inside.set_nonblocking(true).expect("nonblocking");
        let addr = inside.local_addr().expect("inside address");
        let (requests, rx) = mpsc::channel();
        let node = Arc::new(AtomicUsize::new(usize::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (node, stop) = (Arc::clone(&node), Arc::clone(&stop));
            std::thread::spawn(move || nat_relay(&inside, front, &rx, &node, &stop))
        };
        let nat = Self {
            inside: addr,
            requests,
            node,
            stop,
            thread: Some(thread),
        };
        nat.wait_for(|n| n != usize::MAX);
        nat
    }

    fn wait_for(&self, done: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let node = self.node.load(Ordering::SeqCst);
            if done(node) {
                return node;
            }
            assert!(Instant::now() < deadline, "the NAT did not move");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node the client's outside address hashes to now.
    fn node(&self) -> usize {
        self.node.load(Ordering::SeqCst)
    }

    /// A new outside port that hashes to `node`.
    fn move_to(&self, node: usize) {
        self.node.store(usize::MAX, Ordering::SeqCst);
        self.requests.send(node).expect("nat running");
        self.wait_for(|n| n == node);
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An outside socket towards `front`, hashing to `node` when given.
fn outside(front: SocketAddr, node: Option<usize>) -> UdpSocket {
    for _ in 0..500 {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind nat outside");
        let local = s.local_addr().expect("outside address");
        if node.is_none_or(|n| pick(local, front, IDS.len()) == n) {
            s.connect(front).expect("connect nat outside");
            s.set_nonblocking(true).expect("nonblocking");
            return s;
        }
    }
    panic!("no outside port hashed to {node:?}");
}

fn nat_relay(
    inside: &UdpSocket,
    front: SocketAddr,
    requests: &mpsc::Receiver<usize>,
    node: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut out = outside(front, None);
    let hashed = |s: &UdpSocket| pick(s.local_addr().expect("outside"), front, IDS.len());
    node.store(hashed(&out), Ordering::SeqCst);
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        if let Ok(target) = requests.try_recv() {
            out = outside(front, Some(target));
            node.store(hashed(&out), Ordering::SeqCst);
        }
        let mut idle = true;
        while let Ok((n, from)) = inside.recv_from(&mut buf) {
            idle = false;
            client = Some(from);
            let _ = out.send(&buf[..n]);
        }
        while let Ok(n) = out.recv(&mut buf) {
            idle = false;
            if let Some(to) = client {
                let _ = inside.send_to(&buf[..n], to);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// `dtlsd connect` (which answers path_challenges) behind the NAT: after its outside port
/// moves to one that hashes to the other node, the owner challenges the new address
/// (RFC 9853), the path_response comes back through the other node's forwarding, and the
/// session moves once; every datagram is echoed.
fn connect_moves_with_the_return_routability_check(tag: &str, version: &str) {
    let pki = TempDir::new(tag);
    certs(&pki);
    let fleet = Fleet::start(&pki);
    let nat = Nat::start(fleet.balancer.front);
    let owner = nat.node();
    let connect = Daemon::start_connect_with_metrics(
        nat.inside,
        &pki,
        &["--shards", "1", "--versions", version],
    );
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind source");
    source.connect(connect.listen).expect("connect source");
    source
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = vec![0u8; 2048];
    for round in 0..8u8 {
        if round == 4 {
            nat.move_to(1 - owner);
        }
        let sent = vec![round; 100 + usize::from(round)];
        source.send(&sent).expect("send");
        let n = source.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "round {round}: no echo ({e})\n{}\nconnect: {}",
                fleet.logs(),
                connect.log()
            )
        });
        assert_eq!(&buf[..n], &sent[..], "round {round}");
    }
    let logs = fleet.logs();
    assert_eq!(
        fleet.per_shard(owner, "dtlsd_sessions_moved_total"),
        1,
        "{logs}"
    );
    assert_eq!(
        fleet.per_shard(owner, "dtlsd_rrc_validated_total"),
        1,
        "{logs}"
    );
    assert!(
        fleet.per_shard(owner, "dtlsd_rrc_challenges_sent_total") >= 1,
        "{logs}"
    );
    assert!(
        fleet.metric(owner, "dtlsd_forwarded_in_total") >= 4,
        "{logs}"
    );
    assert!(
        fleet.metric(1 - owner, "dtlsd_forwarded_out_total") >= 4,
        "{logs}"
    );
    assert_eq!(
        fleet.per_shard(1 - owner, "dtlsd_sessions_active"),
        0,
        "{logs}"
    );
    assert_eq!(
        connect.metric("dtlsd_sessions_active{shard=\"0\"}"),
        Some(1),
        "one session all along"
    );
}

#[test]
fn dtls12_connect_moved_to_the_other_node_passes_the_return_routability_check() {
    connect_moves_with_the_return_routability_check("fleet-rrc12", "1.2");
}

#[test]
fn dtls13_connect_moved_to_the_other_node_passes_the_return_routability_check() {
    connect_moves_with_the_return_routability_check("fleet-rrc13", "1.3");
}

/// Forwarding-secret rotation (key store `forward_secrets`, SIGHUP): during a rotation a
/// node accepts records forwarded under the previous secret and under the new one; once the
/// previous secret is removed, records under it are dropped (counted as `auth`) and records
/// under the new one still arrive.
#[test]
fn forwarded_records_are_accepted_under_both_secrets_during_a_rotation_only() {
    const NEW: &str = "0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e";
    // The junk record: the forwarder takes it (its HMAC is what is checked here); the shard
    // then drops it as bad_tag.
    let (pki, fleet, mut client, owner, record) = a_session_and_a_junk_record("fleet-fwdrot");
    let now_ms = unix_ms;
    let secret = |hex: &str| {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
        }
        ForwardKey::new(&key)
    };
    // One sender, so its sequence numbers keep growing across keys; under a node id of its
    // own (200), since the receiver keeps one replay window per sending node and the real
    // other node's forwarded records must not look replayed next to ours.
    let mut sender = Forwarder::new(200, secret(FORWARD), now_ms());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let source: SocketAddr = "127.0.0.9:9999".parse().expect("literal");
    let mut send = |key: &str| {
        sender.set_key(secret(key));
        let mut packet = Vec::new();
        sender.encapsulate(now_ms(), source, &record, &mut packet);
        sock.send_to(&packet, fleet.forward[owner]).expect("send");
    };
    let rotate = |secrets: &str, rotations: usize| {
        std::fs::write(
            pki.file("keys.toml"),
            format!(
                "ticket_secrets = [\"{TICKETS}\"]\ncookie_secrets = [\"{COOKIES}\"]\n\
                 forward_secrets = {secrets}\n"
            ),
        )
        .expect("store");
        for node in &fleet.nodes {
            node.signal("HUP");
        }
        common::wait_until(
            "both nodes rotated their forwarding keys",
            || fleet.logs(),
            || {
                fleet.nodes.iter().all(|n| {
                    n.log()
                        .matches("node-to-node forwarding keys rotated")
                        .count()
                        >= rotations
                })
            },
        );
    };
    let forwarded_in = || {
        fleet.nodes[owner]
            .metric("dtlsd_forwarded_in_total")
            .unwrap_or(0)
    };
    let auth_drops = || {
        fleet.nodes[owner]
            .metric(r#"dtlsd_forward_drops_total{reason="auth"}"#)
            .unwrap_or(0)
    };

    // During the rotation: [new, old] on both nodes; either secret is accepted.
    rotate(&format!("[\"{NEW}\", \"{FORWARD}\"]"), 1);
    send(FORWARD);
    common::wait_until(
        "accepted under the old secret",
        || fleet.logs(),
        || forwarded_in() == 1,
    );
    send(NEW);
    common::wait_until(
        "accepted under the new secret",
        || fleet.logs(),
        || forwarded_in() == 2,
    );
    // The nodes forward real records to each other under the new secret meanwhile.
    move_to_other_node(&fleet, &mut client, owner, 1);

    // The old secret removed: refused under it, still accepted under the new one.
    rotate(&format!("[\"{NEW}\"]"), 2);
    let accepted = forwarded_in();
    send(FORWARD);
    common::wait_until(
        "refused under the removed secret",
        || fleet.logs(),
        || auth_drops() == 1,
    );
    send(NEW);
    common::wait_until(
        "accepted under the new secret",
        || fleet.logs(),
        || forwarded_in() == accepted + 1,
    );
    client.echo(b"after the old secret is gone");
    assert_eq!(auth_drops(), 1, "{}", fleet.logs());
}
