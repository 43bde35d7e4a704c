//! Handshake buffer caps (TESTING.md "DoS": per-handshake and global buffer caps;
//! "Parsing": caps per message): the reassembly budget shared by every engine of one
//! configuration holds under many half-open handshakes, counts what it refuses without
//! failing anyone, is released as engines go, and a refused handshake completes from the
//! peer's retransmission once there is room; oversize claims for each message type a client
//! sends are refused before anything is held.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{
    CipherSuite, ClientAuth, Config, Connection, DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN,
    ReassemblyBudget,
};
use support::engines::{claim, peer, server_engines};
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::*;

const PSK: CipherSuite = CipherSuite::PskAes128GcmSha256;
const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
const LIMIT: Duration = Duration::from_secs(60);

fn with_budget(mut config: Config, limit: usize) -> (Arc<Config>, Arc<ReassemblyBudget>) {
    let budget = Arc::new(ReassemblyBudget::new(limit));
    config.reassembly_budget = Arc::clone(&budget);
    (Arc::new(config), budget)
}

/// Feeds each engine its own copy of `datagram`; returns how many engines' refusal count
/// went up.
fn feed(engines: &mut [Connection], datagram: &[u8], now: Instant) -> u64 {
    let mut refused = 0;
    for (i, conn) in engines.iter_mut().enumerate() {
        let before = conn.stats().buffer_refused;
        conn.handle_datagram(now, test_wall(), peer(i), datagram);
        refused += conn.stats().buffer_refused - before;
        assert!(!conn.is_finished(), "engine {i}: a refusal is never fatal");
    }
    refused
}

#[test]
fn half_open_engines_sharing_one_budget_stay_under_it_and_count_refusals() {
    let now = Instant::now();
    let (config, budget) = with_budget(server_config(&[PSK]), 64 * 1024);
    let mut engines = server_engines(&config, 256, now);
    // Each engine gets the first 1000 bytes of a 3000-byte client Certificate: 256 000
    // bytes wanted, 65 536 allowed.
    let refused = feed(&mut engines, &claim(HT_CERTIFICATE, 1, 3000, 0, 1000), now);
    assert_eq!(budget.used(), 65 * 1000, "whole fragments only");
    assert!(budget.peak() <= budget.limit());
    assert_eq!(refused, 256 - 65);
    assert_eq!(budget.refused(), refused);
    let malformed: u64 = engines.iter().map(|c| c.stats().malformed_records).sum();
    assert_eq!(malformed, 0, "a refusal is not a malformed record");
    // The rest of the message for the engines that hold its start: in-order growth past the
    // budget is refused too, and the budget still holds.
    let refused = feed(
        &mut engines,
        &claim(HT_CERTIFICATE, 1, 3000, 1000, 1000),
        now,
    );
    assert!(refused >= 256 - 65, "{refused}");
    assert!(budget.used() <= budget.limit());
    assert_eq!(
        budget.refused(),
        engines
            .iter()
            .map(|c| c.stats().buffer_refused)
            .sum::<u64>()
    );
    // Engines that go (completed, failed, timed out) give their bytes back.
    let used = budget.used();
    let gone: usize = engines.drain(..32).count();
    assert_eq!(gone, 32);
    assert!(budget.used() < used);
    drop(engines);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_refused_flight_completes_from_the_retransmission_once_there_is_room() {
    let now = Instant::now();
    // Client certificates, so the client's flight has something to hold.
    let mut client = client_config(&[ECDSA]);
    client.certificate = Some(client_ec_key());
    let mut server = server_config(&[ECDSA]);
    server.client_auth = ClientAuth::Required;
    let (server, budget) = with_budget(server, 4096);
    // Other half-open handshakes of the same server hold the whole budget.
    let hog_config = Arc::new(server_config(&[PSK]));
    let hog_config = Arc::new(Config {
        reassembly_budget: Arc::clone(&budget),
        ..(*hog_config).clone()
    });
    let mut hogs = server_engines(&hog_config, 4, now);
    feed(&mut hogs, &claim(HT_CERTIFICATE, 1, 3000, 0, 1024), now);
    assert_eq!(budget.used(), budget.limit());

    let mut p = Pair::new(PairConfig::new(client, (*server).clone()));
    assert!(p.drive_until(Duration::from_secs(3), |p| {
        p.server
            .conn
            .as_ref()
            .is_some_and(|c| c.stats().buffer_refused > 0)
    }));
    assert!(!p.server.is_ready() && p.server.failed.is_none());
    assert!(budget.refused() > 0);
    // The other handshakes end; the client's next retransmission gets through.
    drop(hogs);
    assert!(
        p.handshake(LIMIT),
        "{:?} / {:?}",
        p.client.failed,
        p.server.failed
    );
    p.assert_keys_match();
    assert_eq!(p.server.conn().stats().malformed_records, 0);
}

/// Budget bytes a server engine holds after one 14-byte fragment of a message of type
/// `msg_type` claiming `claimed` bytes (0: refused), and whether it counted it malformed.
fn held_after_claim(config: &Config, msg_type: u8, claimed: u32) -> (usize, bool) {
    let now = Instant::now();
    let (config, budget) = with_budget(config.clone(), 1 << 20);
    let mut engines = server_engines(&config, 1, now);
    let conn = &mut engines[0];
    conn.handle_datagram(
        now,
        test_wall(),
        peer(0),
        &claim(msg_type, 1, claimed, 0, 14),
    );
    assert!(!conn.is_finished());
    (budget.used(), conn.stats().malformed_records > 0)
}

#[test]
fn a_server_caps_each_message_type_a_client_sends() {
    let config = server_config(&[PSK]);
    let refused = (0, true);
    let cases: &[(&str, u8, u32)] = &[
        // One record's worth (the acceptor needs the first hello in one record).
        ("ClientHello", HT_CLIENT_HELLO, 1 << 14),
        (
            "Certificate",
            HT_CERTIFICATE,
            DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN as u32,
        ),
        // psk_identity<0..2^16-1> of up to 128 bytes, then point<1..2^8-1>.
        (
            "ClientKeyExchange",
            HT_CLIENT_KEY_EXCHANGE,
            2 + 128 + 1 + 255,
        ),
        // Scheme, length, an RSA-8192 signature.
        ("CertificateVerify", HT_CERTIFICATE_VERIFY, 2 + 2 + 1024),
    ];
    for &(name, msg_type, cap) in cases {
        assert_eq!(
            held_after_claim(&config, msg_type, cap),
            (14, false),
            "{name} of {cap} bytes"
        );
        assert_eq!(
            held_after_claim(&config, msg_type, cap + 1),
            refused,
            "{name} of {} bytes",
            cap + 1
        );
    }
    // Types a client never sends in DTLS 1.2 get nothing.
    for msg_type in [
        HT_SERVER_HELLO,
        HT_SERVER_KEY_EXCHANGE,
        HT_NEW_SESSION_TICKET,
        99,
    ] {
        assert_eq!(
            held_after_claim(&config, msg_type, 14),
            refused,
            "type {msg_type}"
        );
    }
    // The caps follow the configuration: a longer configured PSK identity, a larger chain.
    let mut wide = config.clone();
    wide.psks[0].identity = vec![b'i'; 1000];
    wide.max_client_certificate_chain = 100_000;
    wide.max_handshake_buffer = 128 * 1024;
    assert_eq!(
        held_after_claim(&wide, HT_CLIENT_KEY_EXCHANGE, 2 + 1000 + 1 + 255),
        (14, false)
    );
    assert_eq!(held_after_claim(&wide, HT_CERTIFICATE, 60_000), (14, false));
    // Never beyond max_handshake_buffer (64 KiB by default) whatever the type's cap.
    let mut narrow = config.clone();
    narrow.max_client_certificate_chain = 100_000;
    assert_eq!(held_after_claim(&narrow, HT_CERTIFICATE, 65_537), refused);
}

#[test]
fn a_client_keeps_room_for_a_servers_chain_and_caps_fixed_size_messages() {
    let now = Instant::now();
    let (config, budget) = with_budget(client_config(&[ECDSA]), 1 << 20);
    let server = server_addr();
    let offer = |msg_type: u8, seq: u16, claimed: u32| {
        let mut conn = Connection::client(
            Arc::clone(&config),
            Box::new(control::crypto::SeededRng::new(1)),
            now,
            server,
            None,
        )
        .expect("client engine");
        conn.handle_datagram(
            now,
            test_wall(),
            server,
            &claim(msg_type, seq, claimed, 0, 14),
        );
        assert!(!conn.is_finished());
        budget.used()
    };
    // Messages ahead of the ServerHello are held (not yet deliverable).
    assert_eq!(offer(HT_CERTIFICATE, 1, 65_536), 14);
    assert_eq!(offer(HT_CERTIFICATE_REQUEST, 2, 65_536), 14);
    assert_eq!(offer(HT_CERTIFICATE, 1, 65_537), 0);
    // server_version and cookie<0..2^8-1>.
    assert_eq!(offer(HT_HELLO_VERIFY_REQUEST, 0, 258), 14);
    assert_eq!(offer(HT_HELLO_VERIFY_REQUEST, 0, 259), 0);
    assert_eq!(offer(HT_SERVER_HELLO_DONE, 3, 1), 0);
}
