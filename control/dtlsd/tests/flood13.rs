//! `dtlsd serve` under DTLS 1.3 post-handshake floods over real loopback sockets (issue 18:
//! forged ACKs, KeyUpdate floods, RequestConnectionId floods, daemon level).
//!
//! The attacker is authenticated: a client of our own engine that completed its handshake
//! and then seals, with the session's own keys, what it likes past its engine (records the
//! shard opens and hands to control's engine for the session); the KeyUpdate flood comes
//! from a second such client, since the first one's flood of requests took the message
//! numbers its own engine goes on with. Another, innocent session echoes one numbered
//! datagram after each batch of the flood, each sent once and never resent.
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

use std::time::Duration;

use common::innocent::Innocent;
use common::probe::rss_kib;
use common::{Client, Daemon, EchoBackend, TempDir, certs};
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
/// Half the sequence numbers the engine keeps for itself in each epoch
/// (`control::tls13::ENGINE_SEQUENCE_RESERVE`, 64): once they are spent, its KeyUpdate goes
/// first.
const RESERVE_HALF: u64 = 32;
/// RFC 9147 §6.1: the first application epoch, the one every flood record is sealed in.
const FIRST_EPOCH: u64 = 3;

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

/// The daemon, the attacker and the innocent session.
struct Run {
    daemon: Daemon,
    attacker: Client,
    innocent: Innocent,
}

impl Run {
    fn metric(&self, name: &str) -> u64 {
        self.daemon.metric(name).unwrap_or(0)
    }

    /// One innocent datagram, sent once; its echo must come back within `ECHO`.
    fn innocent_echo(&mut self) {
        let daemon = &self.daemon;
        self.innocent.echo(ECHO, || daemon.log());
    }

    /// Sends `records` from the attacker in batches of `BATCH`, all in its first epoch
    /// (its engine may move on meanwhile: see the RequestConnectionId flood), the attacker's engine
    /// taking in what comes back (it acknowledges the server's messages, as a peer does)
    /// and the innocent session echoing after each batch. Returns the datagrams that came
    /// back to the attacker.
    fn flood(&mut self, records: &[(InnerContentType, Vec<u8>)]) -> u64 {
        let mut back = 0;
        for batch in records.chunks(BATCH) {
            for (inner, payload) in batch {
                self.attacker.send_raw13_in(FIRST_EPOCH, *inner, payload);
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
    let mut attacker = Client::connect(Client::config13(&pki), daemon.listen);
    let innocent = Innocent::new(Client::connect(Client::config13(&pki), daemon.listen));
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
    // Only our own KeyUpdates: each time the answers and ACKs spent half the engine's
    // sequence numbers of an epoch, it moves to a fresh one (once the attacker's engine
    // acknowledged it) before anything else is sent: at most one per `RESERVE_HALF`
    // datagrams sent back. (Until the engine acknowledged records of a peer epoch above
    // its own write epoch, RFC 9147 §7, the attacker's engine could not acknowledge our
    // messages after our first KeyUpdate, and this stopped at 1.)
    assert!(
        updates1 - updates0 <= back_requests / RESERVE_HALF + 1,
        "{} epochs installed for {back_requests} datagrams",
        updates1 - updates0
    );
    assert!(
        back_requests <= 2 * count as u64,
        "{back_requests} datagrams for {count} requests"
    );

    // The requests took message_seq 0 to 255 past the attacker's engine, so the server
    // takes the engine's own next message (its KeyUpdate, once acknowledging our answers
    // spent half its numbers of the epoch) for a retransmission: acknowledged, not
    // applied (RFC 9147 §7: ACKs cover "records containing messages which are discarded
    // because a previous copy has been received"), and its records in epoch 4 are not
    // the server's. That
    // is the attacker's own session, which it broke itself; the server still reads epoch
    // 3 and keeps the session.
    run.attacker
        .echo13_in(FIRST_EPOCH, b"attacker after requests");
    run.innocent_echo();

    // (b) KeyUpdate(update_requested) floods, all in epoch 3, from a second attacker
    // (one whose message_seq numbers the first flood did not take), message_seq from 0
    // (the handshake's numbers are retransmissions) up.
    run.attacker = Client::connect(Client::config13(&pki), run.daemon.listen);
    run.attacker.echo(b"second attacker before");
    run.attacker.settle(Duration::from_millis(300));
    let updates2 = run.metric("dtlsd_key_updates_total");
    let key_update = |seq| (InnerContentType::Handshake, handshake(24, seq, &[1]));
    let updates: Vec<(InnerContentType, Vec<u8>)> = (0..2 * count as u16).map(key_update).collect();
    let back_updates = run.flood(&updates);
    let moved = run.metric("dtlsd_key_updates_total") - updates2;
    let stale = run.metric("dtlsd_key_updates_stale_total") - stale0;
    println!(
        "KeyUpdate flood: {} sent, {moved} epochs installed, {stale} stale, {back_updates} datagrams back",
        2 * count
    );
    // One read epoch for the attacker (3 -> 4), whatever the flood's size: every other
    // new KeyUpdate of the epoch is stale (RFC 9147 §8). Our own write epoch moves for
    // the KeyUpdate it asked for and then, as above, once per `RESERVE_HALF` datagrams
    // (the ACKs of the flood) that its engine acknowledged.
    assert!(
        (1..=back_updates / RESERVE_HALF + 2).contains(&moved),
        "{moved} epochs installed for {back_updates} datagrams"
    );
    // The KeyUpdates under the handshake's message_seq numbers (0 to 2) are
    // retransmissions; of the rest, one moves the epoch and all others are stale.
    assert!(
        stale >= 2 * count as u64 - 4 && stale < 2 * count as u64,
        "{stale} stale of {}",
        2 * count
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
        run.innocent.sent,
        run.innocent.echoed.len()
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    run.innocent.assert_all_echoed();
    assert_eq!(run.metric("dtlsd_sessions_active{shard=\"0\"}"), 3);
    assert_eq!(run.metric("dtlsd_control_sessions_closed_total"), 0);
    assert_eq!(
        run.metric("dtlsd_post_handshake_dropped_total"),
        0,
        "{}",
        run.daemon.log()
    );
}
