//! Loss, duplication, reordering and re-fragmentation in memory (TESTING.md "Loss / reorder"),
//! and the exact retransmission timer schedule on the virtual clock.

mod support;

use std::time::Duration;

use control::{CipherSuite, ClientAuth, Config, HandshakeError};
use support::channel::Impairment;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::{CT_HANDSHAKE, split_records};

const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
const PSK: CipherSuite = CipherSuite::PskAes128GcmSha256;

fn configs(suite: CipherSuite) -> (Config, Config) {
    (client_config(&[suite]), server_config(&[suite]))
}

fn client_auth_configs() -> (Config, Config) {
    let (mut c, mut s) = configs(ECDSA);
    c.certificate = Some(client_ec_key());
    s.client_auth = ClientAuth::Required;
    (c, s)
}

/// Records each direction carries in a clean handshake.
fn baseline_records(client: &Config, server: &Config) -> (usize, usize) {
    let mut pair = Pair::new(PairConfig::new(client.clone(), server.clone()));
    assert!(
        pair.handshake(Duration::from_secs(5)),
        "clean handshake fails"
    );
    // Let the last flight land and nothing else move.
    pair.advance(Duration::from_secs(1));
    (pair.c2s.stats.records_in, pair.s2c.stats.records_in)
}

fn drop_each_record_once(name: &str, client: Config, server: Config) {
    let (n_c2s, n_s2c) = baseline_records(&client, &server);
    assert!(n_c2s >= 3 && n_s2c >= 2, "{name}: baseline {n_c2s}/{n_s2c}");
    let mut runs = 0;
    for (dir, n) in [("client->server", n_c2s), ("server->client", n_s2c)] {
        for k in 0..n {
            let mut imp = Impairment::perfect();
            imp.drop_records.insert(k);
            let mut cfg = PairConfig::new(client.clone(), server.clone()).seed(k as u64);
            if dir == "client->server" {
                cfg.c2s = imp;
            } else {
                cfg.s2c = imp;
            }
            let mut pair = Pair::new(cfg);
            pair.assert_handshake(
                Duration::from_secs(30),
                format_args!("{name}: dropping {dir} record #{k} of {n}"),
            );
            let dropped = if dir == "client->server" {
                pair.c2s.stats.dropped_records
            } else {
                pair.s2c.stats.dropped_records
            };
            assert_eq!(dropped, 1, "{name}: record #{k} {dir} was not dropped");
            // One loss costs at most a few timer periods.
            assert!(
                pair.elapsed() < Duration::from_secs(8),
                "{name}: {dir} #{k} took {:?}",
                pair.elapsed()
            );
            // The data plane starts right away, while a lost last flight may still be
            // retransmitted by the engine: both must use distinct sequence numbers.
            pair.client_send_app(b"data from the client's shard");
            pair.server_send_app(b"data from the server's shard");
            // The side that finished first must not fail or re-emit keys later.
            pair.advance(Duration::from_secs(130));
            assert_eq!((pair.client.keys_ready, pair.server.keys_ready), (1, 1));
            assert!(pair.client.failed.is_none() && pair.server.failed.is_none());
            assert_eq!(
                pair.server.app_in,
                vec![b"data from the client's shard".to_vec()]
            );
            assert_eq!(
                pair.client.app_in,
                vec![b"data from the server's shard".to_vec()]
            );
            pair.assert_no_epoch1_sequence_reuse();
            runs += 1;
        }
    }
    println!("{name}: {runs} single-record drops (c2s {n_c2s}, s2c {n_s2c}): 100 % complete");
}

#[test]
fn dropping_any_one_record_still_completes_ecdhe_ecdsa() {
    let (c, s) = configs(ECDSA);
    drop_each_record_once("ECDHE-ECDSA", c, s);
}

#[test]
fn dropping_any_one_record_still_completes_ecdhe_ecdsa_at_mtu_300() {
    let (mut c, mut s) = configs(ECDSA);
    c.mtu = 300;
    s.mtu = 300;
    drop_each_record_once("ECDHE-ECDSA mtu 300", c, s);
}

#[test]
fn dropping_any_one_record_still_completes_psk() {
    let (c, s) = configs(PSK);
    drop_each_record_once("PSK", c, s);
}

#[test]
fn dropping_any_one_record_still_completes_with_client_auth() {
    let (c, s) = client_auth_configs();
    drop_each_record_once("ECDHE-ECDSA + client auth", c, s);
}

#[test]
fn dropping_any_one_record_still_completes_resumption() {
    let (c, mut s) = configs(ECDSA);
    s.ticket_keys = Some(ticket_keys(3));
    let mut first = Pair::new(PairConfig::new(c.clone(), s.clone()));
    assert!(first.handshake(Duration::from_secs(5)));
    let ticket_bytes = first
        .client
        .info
        .as_ref()
        .and_then(|i| i.ticket.as_ref())
        .map(|t| t.ticket.clone())
        .expect("ticket issued");
    assert!(!ticket_bytes.is_empty());
    // Each run needs its own ticket (SessionTicket is not Clone): one full handshake each.
    let ticket_for = |seed: u64| {
        let mut p = Pair::new(PairConfig::new(c.clone(), s.clone()).seed(seed + 500));
        assert!(p.handshake(Duration::from_secs(5)));
        p.client
            .info
            .as_mut()
            .and_then(|i| i.ticket.take())
            .expect("ticket issued")
    };
    let mut base = Pair::with_ticket(PairConfig::new(c.clone(), s.clone()), Some(ticket_for(0)));
    assert!(base.handshake(Duration::from_secs(5)));
    assert!(base.client.info.as_ref().is_some_and(|i| i.resumed));
    base.advance(Duration::from_secs(1));
    let (n_c2s, n_s2c) = (base.c2s.stats.records_in, base.s2c.stats.records_in);
    for (dir, n) in [("c2s", n_c2s), ("s2c", n_s2c)] {
        for k in 0..n {
            let mut imp = Impairment::perfect();
            imp.drop_records.insert(k);
            let mut cfg = PairConfig::new(c.clone(), s.clone()).seed(k as u64 + 1);
            if dir == "c2s" {
                cfg.c2s = imp;
            } else {
                cfg.s2c = imp;
            }
            let mut pair = Pair::with_ticket(cfg, Some(ticket_for(k as u64 + 1)));
            pair.assert_handshake(
                Duration::from_secs(30),
                format_args!("resumption: dropping {dir} record #{k}"),
            );
            assert!(pair.server.info.as_ref().is_some_and(|i| i.resumed));
            pair.advance(Duration::from_secs(130));
            assert_eq!((pair.client.keys_ready, pair.server.keys_ready), (1, 1));
            assert!(pair.client.failed.is_none() && pair.server.failed.is_none());
        }
    }
}

#[test]
fn duplicating_every_datagram_completes_once() {
    for suite in [ECDSA, PSK] {
        let (c, s) = configs(suite);
        let imp = Impairment {
            duplicate: 1.0,
            ..Impairment::perfect()
        };
        let mut pair = Pair::new(PairConfig::new(c, s).impaired(imp));
        assert!(pair.handshake(Duration::from_secs(5)), "{suite:?}");
        pair.assert_keys_match();
        assert!(pair.c2s.stats.duplicated > 0 && pair.s2c.stats.duplicated > 0);
        pair.client_send_app(b"after duplicates");
        pair.advance(Duration::from_secs(130));
        // Duplicates never produce a second session or a failure.
        assert_eq!((pair.client.keys_ready, pair.server.keys_ready), (1, 1));
        assert!(pair.client.failed.is_none() && pair.server.failed.is_none());
        assert_eq!(
            pair.accepted, 1,
            "duplicate ClientHello created a second engine"
        );
        // The duplicated application record is delivered once (replay window).
        assert_eq!(pair.server.app_in, vec![b"after duplicates".to_vec()]);
        assert_eq!(pair.server.app_rejected, 1);
    }
}

/// Whether the server's flight was cut into handshake fragments.
fn saw_fragmented_handshake(pair: &Pair) -> bool {
    pair.server.sent.iter().any(|d| {
        split_records(&d.bytes).0.iter().any(|r| {
            r.epoch == 0
                && r.content_type == CT_HANDSHAKE
                && r.handshake_fragments()
                    .iter()
                    .any(|f| f.body.len() < f.length as usize)
        })
    })
}

#[test]
fn mtu_300_with_shuffled_single_record_datagrams_completes() {
    let mut completed = 0;
    let runs = 60;
    for seed in 0..runs {
        for suite in [ECDSA, CipherSuite::EcdheRsaAes256GcmSha384] {
            let (mut c, mut s) = configs(suite);
            c.mtu = 300;
            s.mtu = 300;
            let imp = Impairment {
                refragment: true,
                reorder: 1.0,
                jitter: Duration::from_millis(40),
                ..Impairment::perfect()
            };
            let mut pair = Pair::new(PairConfig::new(c, s).impaired(imp).seed(seed));
            pair.assert_handshake(
                Duration::from_secs(30),
                format_args!("{suite:?} seed {seed}"),
            );
            assert!(
                saw_fragmented_handshake(&pair),
                "certificate flight was not fragmented"
            );
            assert!(pair.c2s.stats.max_datagram <= 300 && pair.s2c.stats.max_datagram <= 300);
            completed += 1;
        }
    }
    assert_eq!(completed, 2 * runs);
}

#[test]
fn mtu_300_shuffled_with_loss_and_duplicates_completes() {
    for seed in 0..40 {
        let (mut c, mut s) = configs(ECDSA);
        c.mtu = 300;
        s.mtu = 300;
        let imp = Impairment {
            refragment: true,
            reorder: 0.5,
            jitter: Duration::from_millis(300),
            duplicate: 0.2,
            loss: 0.05,
            ..Impairment::perfect()
        };
        let mut pair = Pair::new(PairConfig::new(c, s).impaired(imp).seed(seed));
        pair.assert_handshake(Duration::from_secs(60), format_args!("seed {seed}"));
    }
}

/// Times (virtual, since start) at which a side sent datagrams, grouped into flights (sends
/// at the same instant).
fn send_instants(sent: &[support::pair::Sent]) -> Vec<Duration> {
    let mut v: Vec<Duration> = sent.iter().map(|s| s.at).collect();
    v.dedup();
    v
}

fn secs(d: &[Duration]) -> Vec<f64> {
    d.iter().map(|x| x.as_secs_f64()).collect()
}

#[test]
fn client_retransmission_schedule_is_1_2_4_doubling_to_60_then_gives_up() {
    let (mut c, s) = configs(ECDSA);
    c.retransmit.max_retransmits = 10;
    c.retransmit.max_handshake_time = None;
    let copies = c.retransmit.copies.max(1) as usize;
    let imp = Impairment {
        loss: 1.0,
        ..Impairment::perfect()
    };
    let mut cfg = PairConfig::new(c, s);
    cfg.c2s = imp;
    let mut pair = Pair::new(cfg);
    pair.drive_until(Duration::from_secs(1000), |p| p.client.failed.is_some());
    let times = send_instants(&pair.client.sent);
    // The first transmission is one datagram; each timer retransmission sends the configured
    // number of copies (RetransmitConfig::copies), all at the same instant.
    for (i, t) in times.iter().enumerate() {
        let n = pair.client.sent.iter().filter(|s| s.at == *t).count();
        assert_eq!(n, if i == 0 { 1 } else { copies }, "datagrams at {t:?}");
    }
    let expected: Vec<f64> = [0, 1, 3, 7, 15, 31, 63, 123, 183, 243, 303]
        .iter()
        .map(|&s| s as f64)
        .collect();
    assert_eq!(secs(&times), expected, "ClientHello send times");
    assert!(
        matches!(pair.client.failed, Some(HandshakeError::Timeout { .. })),
        "{:?}",
        pair.client.failed
    );
    // Gave up at the 11th deadline (303 + 60 s), not before.
    assert_eq!(pair.elapsed(), Duration::from_secs(363));
    assert_eq!(pair.client.conn().stats().timer_retransmits, 10);
    // Every retransmission is the same ClientHello (same body, new record sequence).
    let first = split_records(&pair.client.sent[0].bytes).0;
    for s in &pair.client.sent[1..] {
        let recs = split_records(&s.bytes).0;
        assert_eq!(
            recs[0].handshake_fragments(),
            first[0].handshake_fragments()
        );
        assert!(recs[0].sequence > first[0].sequence);
    }
}

#[test]
fn total_handshake_time_limit_gives_up() {
    let (mut c, s) = configs(ECDSA);
    c.retransmit.max_retransmits = 100;
    c.retransmit.max_handshake_time = Some(Duration::from_secs(20));
    let mut cfg = PairConfig::new(c, s);
    cfg.c2s.loss = 1.0;
    let mut pair = Pair::new(cfg);
    pair.drive_until(Duration::from_secs(100), |p| p.client.failed.is_some());
    assert!(matches!(
        pair.client.failed,
        Some(HandshakeError::Timeout { .. })
    ));
    assert_eq!(pair.elapsed(), Duration::from_secs(20));
    assert_eq!(
        secs(&send_instants(&pair.client.sent)),
        vec![0.0, 1.0, 3.0, 7.0, 15.0]
    );
}

#[test]
fn server_flight_schedule_restarts_at_1s_and_doubles() {
    // The client's ClientHello and cookie ClientHello get through; everything after is
    // lost, so the server retransmits its flight on its own timer.
    let (c, s) = configs(ECDSA);
    let mut s = s;
    s.retransmit.max_retransmits = 7;
    s.retransmit.max_handshake_time = None;
    let mut cfg = PairConfig::new(c, s);
    cfg.c2s.drop_datagrams = (2..10_000).collect();
    let mut pair = Pair::new(cfg);
    pair.drive_until(Duration::from_secs(1000), |p| p.server.failed.is_some());
    // Server sends: HelloVerifyRequest (stateless) at t0 + 5 ms; its flight at +15 ms
    // (cookie hello arrives after one more round trip), then retransmissions.
    let times = send_instants(&pair.server.sent);
    let ms = |x: u64| Duration::from_millis(x);
    let flight0 = ms(15);
    let mut expected = vec![ms(5), flight0];
    let mut t = flight0;
    for step in [1, 2, 4, 8, 16, 32, 60] {
        t += Duration::from_secs(step);
        expected.push(t);
    }
    assert_eq!(times, expected);
    assert!(matches!(
        pair.server.failed,
        Some(HandshakeError::Timeout { .. })
    ));
    // The client meanwhile restarted its own timer at 1 s for its new flight.
    let ct = send_instants(&pair.client.sent);
    assert_eq!(ct[0], Duration::ZERO);
    assert_eq!(
        ct[1],
        ms(10),
        "cookie ClientHello right after the HelloVerifyRequest"
    );
    assert_eq!(ct[2], ms(20), "flight 5 right after the server flight");
    assert_eq!(ct[3], ms(1020), "flight 5 timer starts at 1 s");
}
