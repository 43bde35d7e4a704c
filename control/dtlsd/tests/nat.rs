//! `dtlsd connect` behind a NAT: a local source → `dtlsd connect` → a test NAT (a UDP relay
//! of ours that gives the client's flow a new outside port mid-stream, then a new address
//! within 127.0.0.0/8 as well, closing the socket before the old one, as a NAT whose mappings expire does) → `dtlsd serve` → a UDP echo backend and back,
//! for DTLS 1.2 (RFC 9146) and 1.3 (RFC 9147 §9) with connection IDs. Every datagram is
//! echoed byte for byte across the changes, the session survives (one handshake), and the
//! return-routability check of RFC 9853 runs both ways: the server challenges the new
//! port and `dtlsd connect` (the client role) answers. A copy of an old record sent from a
//! third address does not move the session.
//!
//! Every wait has a deadline; daemons are killed on drop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Daemon, EchoBackend, TempDir, certs};

/// A one-client NAT: datagrams from the inside (`dtlsd connect`) to `front` leave through
/// an outside socket towards the server; the server's answers to that socket go back to
/// the inside. [`Nat::rebind`] replaces the outside socket (a new source port). What was
/// already on its way to the old port still reaches the inside until the next rebind (the
/// old mapping lingers one change, so a datagram the server sent just before a change is
/// not lost to the lockstep of the test), and the socket before it is closed: what the
/// server sends two ports back is lost.
/// CIDs of the client's records, each with the number of rebinds before it.
type SeenCids = Mutex<Vec<(u64, Vec<u8>)>>;

/// What the test asks of the NAT.
enum Request {
    /// A new outside port (and address, see [`outside`]).
    Rebind,
    /// An off-path attacker's copy of the client's first record after the handshake, sent
    /// to the server from a third address (127.0.0.9) well after it was first seen.
    ReplayOld,
}

struct Nat {
    front: SocketAddr,
    rebind: mpsc::Sender<Request>,
    rebinds: Arc<AtomicU64>,
    /// The CIDs of the client's DTLS 1.3 records (unified header with the C bit, the
    /// server's 8-byte CIDs), each with the number of rebinds before it.
    cids: Arc<SeenCids>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Nat {
    fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind nat front");
        front.set_nonblocking(true).expect("nonblocking");
        let addr = front.local_addr().expect("front addr");
        let (rebind, requests) = mpsc::channel();
        let rebinds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cids = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (rebinds, stop) = (Arc::clone(&rebinds), Arc::clone(&stop));
            let cids = Arc::clone(&cids);
            std::thread::spawn(move || relay(&front, server, &requests, &rebinds, &stop, &cids))
        };
        Self {
            front: addr,
            rebind,
            rebinds,
            cids,
            stop,
            thread: Some(thread),
        }
    }

    /// Gives the client a new outside port and waits until the NAT uses it.
    fn rebind(&self) {
        let before = self.rebinds.load(Ordering::SeqCst);
        self.rebind.send(Request::Rebind).expect("nat running");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.rebinds.load(Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "the NAT did not rebind");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Nat {
    fn replay_old(&self) {
        self.rebind.send(Request::ReplayOld).expect("nat running");
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

/// The NAT's outside socket after `rebinds` changes: a new port, and from the second change
/// on a new address within 127.0.0.0/8 too (127.0.0.2, 127.0.0.3, ...).
fn outside(server: SocketAddr, rebinds: u64) -> UdpSocket {
    let host = u8::try_from(1 + rebinds / 2).expect("few rebinds");
    let s =
        UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0)).expect("bind nat outside");
    s.connect(server).expect("connect nat outside");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

fn relay(
    front: &UdpSocket,
    server: SocketAddr,
    requests: &mpsc::Receiver<Request>,
    rebinds: &AtomicU64,
    stop: &AtomicBool,
    cids: &SeenCids,
) {
    let mut out = outside(server, 0);
    // The mapping before `out`, read until the next change.
    let mut lingering: Option<UdpSocket> = None;
    let mut inside: Option<SocketAddr> = None;
    // The first protected record (a unified header, or a tls12_cid record) the client sent.
    let mut old: Option<Vec<u8>> = None;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match requests.try_recv() {
            Ok(Request::Rebind) => {
                // The old mapping lingers one change; the one before it is gone, its
                // socket closed with it.
                let next = outside(server, rebinds.load(Ordering::SeqCst) + 1);
                lingering = Some(std::mem::replace(&mut out, next));
                rebinds.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Request::ReplayOld) => {
                if let Some(record) = &old {
                    let spoofer = UdpSocket::bind("127.0.0.9:0").expect("bind spoofer");
                    let _ = spoofer.send_to(record, server);
                }
            }
            Err(_) => {}
        }
        let mut idle = true;
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            idle = false;
            inside = Some(from);
            let protected = buf[0] & 0xe0 == 0x20 || buf[0] == 25;
            if old.is_none() && protected && rebinds.load(Ordering::SeqCst) > 0 {
                old = Some(buf[..n].to_vec());
            }
            if buf[0] & 0xf0 == 0x30 && n > 9 {
                let cid = buf[1..9].to_vec();
                let epoch = rebinds.load(Ordering::SeqCst);
                cids.lock().expect("cids").push((epoch, cid));
            }
            let _ = out.send(&buf[..n]);
        }
        for socket in std::iter::once(&out).chain(lingering.as_ref()) {
            while let Ok(n) = socket.recv(&mut buf) {
                idle = false;
                if let Some(to) = inside {
                    let _ = front.send_to(&buf[..n], to);
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The datagram of `round`: the round number, then a pattern of it, 16 to 1000 bytes.
fn datagram(round: usize) -> Vec<u8> {
    let len = 16 + (round * 977) % 985;
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&(round as u32).to_be_bytes());
    d.extend((4..len).map(|i| (i as u8) ^ (round as u8).wrapping_mul(31)));
    d
}

/// Waits until `serve` validated `moves` new addresses of the client (RFC 9853 §5).
fn validated(serve: &Daemon, moves: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve
        .metric("dtlsd_rrc_validated_total{shard=\"0\"}")
        .unwrap_or(0)
        < moves
    {
        assert!(
            Instant::now() < deadline,
            "move {moves} not validated\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Spare CIDs `dtlsd connect` asks the server for once its DTLS 1.3 handshake is done.
const FIRST_SPARES: u64 = 8;

/// One source through `dtlsd connect --versions <version>` behind the NAT; the NAT
/// changes the client's port `REBINDS` times between lock-step echoes, `ROUNDS` in all.
fn through_a_rebinding_nat<const ROUNDS: usize, const REBINDS: u64>(tag: &str, version: &str) {
    let pki = TempDir::new(tag);
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let nat = Nat::start(serve.listen);
    let connect = Daemon::start_connect_with_metrics(
        nat.front,
        &pki,
        &["--shards", "1", "--versions", version],
    );
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind source");
    source.connect(connect.listen).expect("connect source");
    let mut buf = vec![0u8; 2048];
    let v13 = version == "1.3";
    for round in 0..ROUNDS {
        if round > 0 && round % (ROUNDS / (REBINDS as usize + 1)) == 0 {
            if v13 && round == ROUNDS / (REBINDS as usize + 1) {
                // DTLS 1.3: connect asked the server for spare CIDs after the handshake
                // (RFC 9147 §9); its shard has them before the first move.
                let deadline = Instant::now() + Duration::from_secs(20);
                while connect
                    .metric("dtlsd_peer_cids_spare_total")
                    .is_none_or(|n| n < REBINDS.min(FIRST_SPARES))
                {
                    assert!(
                        Instant::now() < deadline,
                        "no spare CIDs: connect post_handshake {:?}, serve post_handshake {:?}, \
                         serve forwarded {:?}, connect forwarded {:?}\n{}",
                        connect.metric("dtlsd_post_handshake_total"),
                        serve.metric("dtlsd_post_handshake_total"),
                        serve.metric("dtlsd_post_handshake_forwarded_total{shard=\"0\"}"),
                        connect.metric("dtlsd_post_handshake_forwarded_total{shard=\"0\"}"),
                        connect.log()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // The previous move is complete: the client answered the server's check of
            // its new address (RFC 9853 §5) under a fresh CID from there. Without this the
            // NAT could take the answer, sent just before the next rebind, out through the
            // next mapping (the echo can beat it back), and the client would have sent
            // nothing on that path after learning of the move. No waiting for spare CIDs:
            // the moves follow each other after one echo.
            validated(&serve, nat.rebinds.load(Ordering::SeqCst));
            nat.rebind();
        }
        let sent = datagram(round);
        source.send(&sent).expect("send");
        source
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let n = source.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "round {round}: no echo ({e})\nserve: {}\nconnect: {}",
                serve.log(),
                connect.log()
            )
        });
        assert_eq!(&buf[..n], &sent[..], "round {round}: echo differs");
        if round == ROUNDS - 2 {
            // A copy of an old record from a third address: authenticates, but is not the
            // newest (a replay), so it moves nothing (RFC 9146 §6, RFC 9147 §9).
            nat.replay_old();
        }
    }
    // The last move too (its echo may have come back before the answer to the check).
    validated(&serve, REBINDS);
    let serve_metric = |name: &str| serve.metric(&format!("{name}{{shard=\"0\"}}"));
    let connect_metric = |name: &str| connect.metric(&format!("{name}{{shard=\"0\"}}"));
    // One session all along, moved once per new port after the port answered the check.
    assert_eq!(serve_metric("dtlsd_sessions_active"), Some(1));
    assert_eq!(
        serve_metric("dtlsd_sessions_moved_total"),
        Some(REBINDS),
        "{}",
        serve.log()
    );
    assert_eq!(serve_metric("dtlsd_rrc_validated_total"), Some(REBINDS));
    // The replayed record: 1.2 finds the session by its CID and does not move it; 1.3
    // had retired that CID when the client switched to a fresh one (below), so it names
    // no session at all.
    let replay_reason = if v13 { "unknown_session" } else { "not_moved" };
    assert!(
        serve
            .metric(&format!(
                "dtlsd_drops_total{{shard=\"0\",reason=\"{replay_reason}\"}}"
            ))
            .is_some_and(|n| n >= 1),
        "the replayed record was not seen\n{}",
        serve.log()
    );
    if v13 {
        // After each move connect put a fresh server CID in its records (RFC 9147 §9,
        // RFC 9853 §9): the CID the client ended each stretch with differs from every
        // other stretch's, and serve retired the earlier ones as the client moved on.
        let cids = nat.cids.lock().expect("cids").clone();
        let last: Vec<&Vec<u8>> = (0..=REBINDS)
            .map(|k| {
                &cids
                    .iter()
                    .rev()
                    .find(|(e, _)| *e == k)
                    .unwrap_or_else(|| panic!("no 1.3 record after {k} rebinds"))
                    .1
            })
            .collect();
        for (i, a) in last.iter().enumerate() {
            for b in &last[i + 1..] {
                assert_ne!(
                    a,
                    b,
                    "a CID used on two paths: {last:02x?}; connect: spares {:?} requests {:?} \
                     rotations {:?}; serve: retirements {:?} retired {:?} post_handshake {:?}",
                    connect.metric("dtlsd_peer_cids_spare_total"),
                    connect.metric("dtlsd_cid_requests_total"),
                    connect_metric("dtlsd_cid_rotations_total"),
                    serve.metric("dtlsd_cid_retirements_total"),
                    serve_metric("dtlsd_cids_retired_total"),
                    serve.metric("dtlsd_post_handshake_total"),
                );
            }
        }
        assert!(
            connect_metric("dtlsd_cid_rotations_total").is_some_and(|n| n >= REBINDS),
            "{}",
            connect.log()
        );
        assert!(serve_metric("dtlsd_peer_cid_switches_total").is_some_and(|n| n >= REBINDS));
        assert!(serve_metric("dtlsd_cids_retired_total").is_some_and(|n| n >= REBINDS));
        // Each retirement reached serve's engine, which replaced the retired CIDs unasked
        // (RFC 9147 §9), so connect never ran out of fresh ones (above).
        assert!(
            serve
                .metric("dtlsd_cid_retirements_total")
                .is_some_and(|n| n >= REBINDS),
            "{}",
            serve.log()
        );
        if REBINDS > FIRST_SPARES {
            // The moves came back to back (one echo each), yet connect never ran short
            // (the CIDs above): the server replaced each CID the client moved past, one
            // per move (the last one may still be on its way). (Whether each came within
            // its move's exchange is `dtls-runtime`'s `migration13` test: here the NAT
            // drops what is in flight to a mapping it replaces, so a replacement sent just
            // before a rebind is lost and sent again on the next path; connect then asks
            // for more when few are left.)
            let deadline = Instant::now() + Duration::from_secs(5);
            while connect
                .metric("dtlsd_peer_cids_spare_total")
                .is_none_or(|n| n < FIRST_SPARES + REBINDS)
            {
                assert!(
                    Instant::now() < deadline,
                    "a replacement per move: spares {:?}, serve retirements {:?}",
                    connect.metric("dtlsd_peer_cids_spare_total"),
                    serve.metric("dtlsd_cid_retirements_total"),
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    assert_eq!(serve_metric("dtlsd_rrc_failed_total"), Some(0));
    // The client role answered each challenge (retransmitted ones included).
    assert!(
        connect_metric("dtlsd_rrc_responses_sent_total").is_some_and(|n| n >= REBINDS),
        "{}",
        connect.log()
    );
    assert_eq!(connect_metric("dtlsd_sessions_active"), Some(1));
}

#[test]
fn dtls12_connect_behind_a_rebinding_nat_keeps_its_session() {
    through_a_rebinding_nat::<24, 3>("nat12", "1.2");
}

#[test]
fn dtls13_connect_behind_a_rebinding_nat_keeps_its_session() {
    through_a_rebinding_nat::<24, 3>("nat13", "1.3");
}

/// More moves than the spare CIDs connect first got, back to back (one echo between two
/// moves, no waiting for replacements): the server replaces each CID the client moved past
/// on the client's new path as soon as it moved it (and connect would ask for more if few
/// were left), so every path still gets a CID never seen on another (RFC 9147 §9, RFC 9853
/// §9). `dtls-runtime`'s `migration13` test checks the same exchange on a virtual clock.
#[test]
fn dtls13_connect_keeps_fresh_cids_across_more_moves_than_its_first_spares() {
    through_a_rebinding_nat::<13, 12>("nat13many", "1.3");
}
