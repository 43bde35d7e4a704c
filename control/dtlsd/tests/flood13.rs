//! `dtlsd serve` under DTLS 1.3 post-handshake floods over real loopback sockets (issue 18:
//! forged ACKs, KeyUpdate floods, RequestConnectionId floods, daemon level).
//!
//! The attacker is authenticated: a client of our own engine that completed its handshake
//! and then seals, with the session's own keys, what it likes past its engine (records the
//! shard opens and hands to control's engine for the session). A second, innocent session
//! echoes one numbered datagram after each batch of the flood, each sent once and never
//! resent.
//!
//! Asserted, from the daemon's counters: forged ACKs move nothing; a flood of KeyUpdates in
//! one epoch moves the attacker's read epoch once (RFC 9147 §8), the rest counted as
//! stale; a flood of RequestConnectionIds gets at most the engine's 8 unused CIDs
//! (RFC 9147 §9); the attacker's session is kept (nothing closed, it still echoes), the
//! daemon's resident memory grows by less than 16 MiB, and the innocent session gets every
//! datagram back exactly once.
//!
//! Every wait has a deadline; the daemon is killed on drop.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::probe::rss_kib;
use common::{Client, Daemon, EchoBackend, TempDir, certs};
use control::{Config, ConnectionIds, ProtocolVersion};
use dataplane::record::v13::InnerContentType;

/// Flood records sent between two echoes of the innocent session.
const BATCH: usize = 16;
/// Batches per flood.
const BATCHES: usize = 16;
/// What an innocent echo may take (a loaded 2-core machine, a debug build).
const ECHO: Duration = Duration::from_secs(10);
/// RFC 9147 §9 bound of the engine (`control::tls13::cids::MAX_ISSUED_CIDS`): CIDs of ours
/// a peer holds unused.
const MAX_ISSUED_CIDS: u64 = 8;

/// DTLS 1.3 only, asking for no CID of its own (it puts the server's in its records,
/// which a RequestConnectionId needs: RFC 9147 §9).
fn config13(pki: &TempDir) -> Arc<Config> {
    let mut config = (*Client::config(pki)).clone();
    config.connection_id = ConnectionIds::On { len: 0 };
    config.versions = vec![ProtocolVersion::Dtls1_3];
    Arc::new(config)
}

/// A whole handshake message in one fragment (RFC 9147 §5.2).
fn handshake(msg_type: u8, message_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut m = vec![msg_type];
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(&message_seq.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0]);
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(body);
    m
}

/// An ACK's body (RFC 9147 §7): record numbers as (epoch, sequence).
fn ack(records: &[(u64, u64)]) -> Vec<u8> {
    let mut body = ((records.len() * 16) as u16).to_be_bytes().to_vec();
    for (epoch, sequence) in records {
        body.extend_from_slice(&epoch.to_be_bytes());
        body.extend_from_slice(&sequence.to_be_bytes());
    }
    body
}

/// The daemon, the attacker and the innocent session, with what the innocent saw.
struct Run {
    daemon: Daemon,
    attacker: Client,
    innocent: Client,
    /// Innocent datagrams sent (each once) and echoes seen (each must come once).
    sent: usize,
    echoed: HashSet<Vec<u8>>,
}

impl Run {
    fn metric(&self, name: &str) -> u64 {
        self.daemon.metric(name).unwrap_or(0)
    }

    /// One innocent datagram, sent once; its echo must come back within `ECHO`, and no
    /// echo may come twice.
    fn innocent_echo(&mut self) {
        let payload = format!("innocent {}", self.sent).into_bytes();
        self.sent += 1;
        self.innocent.send_app(&payload);
        let deadline = Instant::now() + ECHO;
        loop {
            let opened = self.innocent.turn(Duration::from_millis(20));
            for p in opened.app {
                assert!(
                    self.echoed.insert(p.clone()),
                    "echoed twice: {:?}",
                    String::from_utf8_lossy(&p)
                );
            }
            if self.echoed.contains(&payload) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "innocent datagram {} lost: {}",
                self.sent - 1,
                self.daemon.log()
            );
        }
    }

    /// Sends `records` from the attacker in batches of `BATCH`, the attacker's engine
    /// taking in what comes back (it acknowledges the server's messages, as a peer does)
    /// and the innocent session echoing after each batch. Returns the datagrams that came
    /// back to the attacker.
    fn flood(&mut self, records: &[(InnerContentType, Vec<u8>)]) -> u64 {
        let mut back = 0;
        for batch in records.chunks(BATCH) {
            for (inner, payload) in batch {
                self.attacker.send_raw13(*inner, payload);
            }
            back += self.attacker.settle(Duration::from_millis(20));
            self.innocent_echo();
        }
        back + self.attacker.settle(Duration::from_millis(200))
    }
}

#[test]
fn dtls13_post_handshake_floods_are_bounded_and_an_innocent_session_loses_nothing() {
    let pki = TempDir::new("flood13");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut attacker = Client::connect(config13(&pki), daemon.listen);
    let innocent = Client::connect(config13(&pki), daemon.listen);
    assert_eq!(
        attacker.peer_cid().map(<[u8]>::len),
        Some(8),
        "the server's CID in our records: {}",
        daemon.log()
    );
    attacker.echo(b"attacker before");
    attacker.settle(Duration::from_millis(300));
    let mut run = Run {
        daemon,
        attacker,
        innocent,
        sent: 0,
        echoed: HashSet::new(),
    };
    run.innocent_echo();
    let rss_before = rss_kib(run.daemon.pid());
    let count = BATCH * BATCHES;

    // (a) Forged and garbage ACKs: record numbers never sent, absurd epochs, a body that
    // does not parse, a long list of numbers.
    let (updates0, stale0, cids0, post0) = (
        run.metric("dtlsd_key_updates_total"),
        run.metric("dtlsd_key_updates_stale_total"),
        run.metric("dtlsd_cids_issued_total"),
        run.metric("dtlsd_post_handshake_total"),
    );
    let long: Vec<(u64, u64)> = (0..64).map(|s| (3, 1_000_000 + s)).collect();
    let acks: Vec<(InnerContentType, Vec<u8>)> = (0..count as u64)
        .map(|i| {
            let body = match i % 4 {
                0 => ack(&[(3, 1_000_000 + i), (2, 77 + i)]),
                1 => ack(&[(u64::from(u16::MAX), (1 << 48) - 1), (4, i)]),
                2 => vec![0xff; 7],
                _ => ack(&long),
            };
            (InnerContentType::Ack, body)
        })
        .collect();
    let back_acks = run.flood(&acks);
    let post_acks = run.metric("dtlsd_post_handshake_total") - post0;
    println!(
        "forged ACKs: {count} sent, {post_acks} reached the engine, {back_acks} datagrams back"
    );
    assert!(post_acks >= 1 && post_acks <= count as u64, "{post_acks}");
    assert_eq!(
        (
            run.metric("dtlsd_key_updates_total"),
            run.metric("dtlsd_key_updates_stale_total"),
            run.metric("dtlsd_cids_issued_total"),
        ),
        (updates0, stale0, cids0),
        "a forged ACK moved something"
    );
    assert!(back_acks <= 2, "{back_acks} datagrams answered forged ACKs");

    // (c) RequestConnectionId(255) floods (RFC 9147 §9), under message_seq 0 up: the
    // numbers the server has seen are acknowledged as retransmissions, the rest are new
    // requests.
    let requests: Vec<(InnerContentType, Vec<u8>)> = (0..count as u16)
        .map(|seq| (InnerContentType::Handshake, handshake(9, seq, &[255])))
        .collect();
    let back_requests = run.flood(&requests);
    let issued = run.metric("dtlsd_cids_issued_total") - cids0;
    let spares = run.attacker.spare_cids13().len();
    let updates1 = run.metric("dtlsd_key_updates_total");
    println!(
        "RequestConnectionId flood: {count} sent, {issued} CIDs issued, {spares} spare at the attacker, {back_requests} datagrams back, {} epochs installed",
        updates1 - updates0
    );
    assert!(
        (1..=MAX_ISSUED_CIDS).contains(&issued),
        "{issued} CIDs issued for {count} requests"
    );
    assert!(spares as u64 <= issued, "{spares} spares, {issued} issued");
    // At most our own KeyUpdate: the answers and ACKs spent half the engine's sequence
    // numbers of the epoch, so it moves to a fresh one before anything else is sent.
    assert!(
        updates1 - updates0 <= 1,
        "{} epochs installed",
        updates1 - updates0
    );
    assert!(
        back_requests <= 2 * count as u64,
        "{back_requests} datagrams for {count} requests"
    );

    // (b) KeyUpdate(update_requested) floods, all in the attacker's epoch 3, message_seq
    // from 0 (the requests' numbers are retransmissions) past the requests'.
    let key_update = |seq| (InnerContentType::Handshake, handshake(24, seq, &[1]));
    let updates: Vec<(InnerContentType, Vec<u8>)> = (0..2 * count as u16).map(key_update).collect();
    let back_updates = run.flood(&updates);
    let moved = run.metric("dtlsd_key_updates_total") - updates1;
    let stale = run.metric("dtlsd_key_updates_stale_total") - stale0;
    println!(
        "KeyUpdate flood: {count} new of {} sent, {moved} epochs installed, {stale} stale, {back_updates} datagrams back",
        2 * count
    );
    // One read epoch for the attacker (3 -> 4) and, if its engine acknowledged our
    // KeyUpdate (the one it asked for), one write epoch: at most two, whatever the
    // flood's size; every other new KeyUpdate of the epoch is stale (RFC 9147 §8).
    assert!((1..=2).contains(&moved), "{moved} epochs installed");
    assert!(
        stale >= count as u64 / 2 && stale < count as u64,
        "{stale} stale of {count}"
    );
    assert!(
        back_updates <= 2 * 2 * count as u64,
        "{back_updates} datagrams for {} KeyUpdates",
        2 * count
    );

    // The attacker's session is kept, within those bounds; nothing was closed.
    run.attacker.echo(b"attacker after");
    run.innocent_echo();
    let rss_after = rss_kib(run.daemon.pid());
    println!(
        "daemon RSS {} KiB -> {} KiB; innocent: {} sent, {} echoed",
        rss_before,
        rss_after,
        run.sent,
        run.echoed.len()
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(run.echoed.len(), run.sent, "every innocent datagram, once");
    assert_eq!(run.metric("dtlsd_sessions_active{shard=\"0\"}"), 2);
    assert_eq!(run.metric("dtlsd_control_sessions_closed_total"), 0);
    assert_eq!(
        run.metric("dtlsd_post_handshake_dropped_total"),
        0,
        "{}",
        run.daemon.log()
    );
}
