//! State-machine negatives (TESTING.md "Adversarial checklist / State machine") and the
//! DTLS 1.0 / cipher-suite refusals, in memory.

mod support;

use std::time::Duration;

use control::crypto::test_pki::TestPki;
use control::{AlertDescription, CipherSuite, ClientAuth, Config, HandshakeError};
use dataplane::record::ContentType;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::*;

const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
const LIMIT: Duration = Duration::from_secs(10);

fn pair(suite: CipherSuite) -> Pair {
    Pair::new(PairConfig::new(
        client_config(&[suite]),
        server_config(&[suite]),
    ))
}

fn established(suite: CipherSuite) -> Pair {
    let mut p = pair(suite);
    assert!(
        p.handshake(LIMIT),
        "{:?} / {:?}",
        p.client.failed,
        p.server.failed
    );
    p.advance(Duration::from_secs(2));
    p.assert_keys_match();
    p
}

fn complete_and_check(p: &mut Pair, what: &str) {
    assert!(
        p.handshake(Duration::from_secs(30)),
        "{what}: handshake did not complete: client {} {:?} / server {:?} {:?}",
        p.client.conn().state_name(),
        p.client.failed,
        p.server.conn.as_ref().map(|c| c.state_name()),
        p.server.failed
    );
    p.assert_keys_match();
}

/// Whether `datagram` carries a plaintext alert with this level and description.
fn has_plain_alert(datagram: &[u8], level: u8, desc: u8) -> bool {
    split_records(datagram)
        .0
        .iter()
        .any(|r| r.content_type == CT_ALERT && r.epoch == 0 && r.payload == [level, desc])
}

fn ccs_record(seq: u64) -> Vec<u8> {
    RawRecord::new(CT_CHANGE_CIPHER_SPEC, 0, seq, vec![1]).to_bytes()
}

fn epoch1_garbage(ct: u8, seq: u64) -> Vec<u8> {
    RawRecord::new(ct, 1, seq, (0..40u8).collect()).to_bytes()
}

/// Sends `datagram` to the acceptor from a fresh address; asserts it is dropped silently.
fn assert_acceptor_drops(p: &mut Pair, datagram: &[u8]) {
    let (replies, accepted) = (p.acceptor_replies, p.accepted);
    let from: std::net::SocketAddr = "192.0.2.7:5555".parse().expect("address literal");
    p.deliver_to_server(from, datagram);
    assert_eq!(
        p.acceptor_replies, replies,
        "acceptor answered a non-ClientHello"
    );
    assert_eq!(p.accepted, accepted);
}

#[test]
fn change_cipher_spec_as_first_message_changes_nothing() {
    let mut p = pair(ECDSA);
    assert_acceptor_drops(&mut p, &ccs_record(0));
    // To the client before anything from the server (its ClientHello is out).
    p.flush();
    let sent = p.client.sent.len();
    assert_eq!(sent, 1);
    p.deliver_to_client(&ccs_record(0));
    p.flush();
    assert_eq!(p.client.sent.len(), sent, "client answered a CCS");
    assert_eq!(p.client.conn().state_name(), "ExpectServerHello");
    assert!(p.client.failed.is_none() && p.client.keys_ready == 0);
    complete_and_check(&mut p, "after early CCS to client");
}

#[test]
fn change_cipher_spec_before_client_key_exchange_does_not_skip_the_key_exchange() {
    // The server engine gets a CCS right after its own first flight (CVE-2014-0224 shape).
    let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
    cfg.c2s.hold = true;
    let mut p = Pair::new(cfg);
    // ClientHello, HelloVerifyRequest, cookie ClientHello → server engine sends flight 4.
    for _ in 0..2 {
        p.drive_until(LIMIT, |p| !p.c2s.held.is_empty());
        p.release_held_c2s();
    }
    assert_eq!(p.accepted, 1);
    assert_eq!(p.server.conn().state_name(), "ExpectClientKeyExchange");
    let from = p.client.addr;
    p.deliver_to_server(from, &ccs_record(50));
    p.deliver_to_server(from, &epoch1_garbage(CT_HANDSHAKE, 0));
    p.flush();
    assert!(
        p.server.keys_ready == 0,
        "server produced keys without a key exchange"
    );
    assert_eq!(p.server.conn().state_name(), "ExpectClientKeyExchange");
    p.c2s.impairment.hold = false;
    p.release_held_c2s();
    complete_and_check(&mut p, "after early CCS to server");
}

#[test]
fn finished_as_first_message_is_never_accepted() {
    let finished = handshake_datagram(
        0,
        DTLS_1_2,
        &[RawFragment::whole(HT_FINISHED, 0, vec![7; 12])],
    );
    let mut p = pair(ECDSA);
    assert_acceptor_drops(&mut p, &finished);
    p.deliver_to_client(&finished);
    p.deliver_to_client(&epoch1_garbage(CT_HANDSHAKE, 0));
    p.flush();
    assert_eq!(
        p.client.keys_ready, 0,
        "client accepted a Finished as first message"
    );
    if p.client.failed.is_some() {
        // Failing is allowed, but only with unexpected_message.
        let last = &p.client.sent.last().expect("alert sent").bytes;
        assert!(
            has_plain_alert(last, 2, ALERT_UNEXPECTED_MESSAGE),
            "{:?}",
            p.client.failed
        );
    } else {
        complete_and_check(&mut p, "after early Finished");
    }
}

#[test]
fn application_data_as_first_message_is_not_delivered() {
    let plain_app =
        RawRecord::new(CT_APPLICATION_DATA, 0, 0, b"plaintext canary".to_vec()).to_bytes();
    let mut p = pair(ECDSA);
    assert_acceptor_drops(&mut p, &plain_app);
    assert_acceptor_drops(&mut p, &epoch1_garbage(CT_APPLICATION_DATA, 0));
    p.deliver_to_client(&plain_app);
    p.deliver_to_client(&epoch1_garbage(CT_APPLICATION_DATA, 1));
    p.flush();
    assert!(p.client.failed.is_none());
    complete_and_check(&mut p, "after early application data");
    // After completion an epoch-0 application record is never delivered either.
    let from = p.client.addr;
    p.deliver_to_server(from, &plain_app);
    p.deliver_to_client(&plain_app);
    assert!(p.client.app_in.is_empty() && p.server.app_in.is_empty());
    assert_eq!(p.client.app_rejected + p.server.app_rejected, 2);
}

/// Splits the datagram carrying the client's flight 5 and delivers its records in the order
/// given by `order` (indices into the record list), each in its own datagram.
fn deliver_final_flight_reordered(
    p: &mut Pair,
    to_server: bool,
    reorder: fn(&[RawRecord]) -> Vec<RawRecord>,
) {
    let is_final = |d: &Vec<u8>| split_records(d).0.iter().any(|r| r.epoch == 1);
    loop {
        let found = p.drive_until(LIMIT, |p| {
            if to_server {
                !p.c2s.held.is_empty()
            } else {
                !p.s2c.held.is_empty()
            }
        });
        assert!(found, "flight never sent");
        let held = if to_server {
            std::mem::take(&mut p.c2s.held)
        } else {
            std::mem::take(&mut p.s2c.held)
        };
        let mut done = false;
        for d in held {
            if is_final(&d) && !done {
                let recs = split_records(&d).0;
                for r in reorder(&recs) {
                    if to_server {
                        let from = p.client.addr;
                        p.deliver_to_server(from, &r.to_bytes());
                    } else {
                        p.deliver_to_client(&r.to_bytes());
                    }
                    p.flush();
                }
                done = true;
            } else if to_server {
                let from = p.client.addr;
                p.deliver_to_server(from, &d);
            } else {
                p.deliver_to_client(&d);
            }
        }
        p.flush();
        if done {
            if to_server {
                p.c2s.impairment.hold = false;
            } else {
                p.s2c.impairment.hold = false;
            }
            return;
        }
    }
}

/// Moves the epoch-1 Finished before the ChangeCipherSpec.
fn finished_first(recs: &[RawRecord]) -> Vec<RawRecord> {
    let mut v: Vec<RawRecord> = recs
        .iter()
        .filter(|r| r.content_type != CT_CHANGE_CIPHER_SPEC && r.epoch == 0)
        .cloned()
        .collect();
    v.extend(recs.iter().filter(|r| r.epoch == 1).cloned());
    v.extend(
        recs.iter()
            .filter(|r| r.content_type == CT_CHANGE_CIPHER_SPEC)
            .cloned(),
    );
    v
}

#[test]
fn finished_before_change_cipher_spec_reordered_completes_both_directions() {
    for to_server in [true, false] {
        let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
        if to_server {
            cfg.c2s.hold = true;
        } else {
            cfg.s2c.hold = true;
        }
        let mut p = Pair::new(cfg);
        deliver_final_flight_reordered(&mut p, to_server, finished_first);
        complete_and_check(&mut p, "Finished before CCS");
        // Completed without waiting for a retransmission.
        assert!(
            p.elapsed() < Duration::from_millis(500),
            "took {:?}",
            p.elapsed()
        );
        assert_eq!(p.client.conn().stats().timer_retransmits, 0);
    }
}

fn is_ccs(r: &[u8]) -> bool {
    r[0] == CT_CHANGE_CIPHER_SPEC
}

#[test]
fn missing_change_cipher_spec_never_completes() {
    // Client → server CCS always lost: the server must never accept the Finished.
    let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
    cfg.c2s.drop_record_if = Some(is_ccs);
    let mut p = Pair::new(cfg);
    p.drive_until(Duration::from_secs(300), |p| p.server.keys_ready > 0);
    assert_eq!(
        p.server.keys_ready, 0,
        "server completed without the client's CCS"
    );
    assert_eq!(p.client.keys_ready, 0);
    assert!(
        matches!(p.server.failed, Some(HandshakeError::Timeout { .. })),
        "{:?}",
        p.server.failed
    );
    // Server → client CCS always lost: the client must never accept the server's Finished.
    let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
    cfg.s2c.drop_record_if = Some(is_ccs);
    let mut p = Pair::new(cfg);
    p.drive_until(Duration::from_secs(300), |p| p.client.keys_ready > 0);
    assert_eq!(
        p.client.keys_ready, 0,
        "client completed without the server's CCS"
    );
    assert!(
        matches!(p.client.failed, Some(HandshakeError::Timeout { .. })),
        "{:?}",
        p.client.failed
    );
}

fn client_auth_pair(client_cert: Option<std::sync::Arc<control::CertifiedKey>>) -> Pair {
    let mut c = client_config(&[ECDSA]);
    c.certificate = client_cert;
    let mut s = server_config(&[ECDSA]);
    s.client_auth = ClientAuth::Required;
    Pair::new(PairConfig::new(c, s))
}

fn is_certificate_verify(r: &[u8]) -> bool {
    r[0] == CT_HANDSHAKE && r[3..5] == [0, 0] && r.get(13) == Some(&HT_CERTIFICATE_VERIFY)
}

#[test]
fn certificate_without_certificate_verify_is_rejected_when_client_auth_required() {
    let mut p = client_auth_pair(Some(client_ec_key()));
    p.c2s.impairment.drop_record_if = Some(is_certificate_verify);
    p.drive_until(Duration::from_secs(300), |p| {
        p.server.keys_ready > 0 || p.server.failed.is_some()
    });
    assert_eq!(
        p.server.keys_ready, 0,
        "server accepted a certificate without CertificateVerify"
    );
    assert_eq!(p.client.keys_ready, 0);
    assert!(
        p.c2s.stats.dropped_records > 0,
        "no CertificateVerify was sent"
    );
    println!(
        "server without CertificateVerify: {:?} in {}",
        p.server.failed,
        p.server.conn().state_name()
    );
}

#[test]
fn certificate_verify_by_the_wrong_key_is_rejected_with_decrypt_error() {
    // The client's chain with the server's private key: the signature cannot verify.
    let wrong = std::sync::Arc::new(control::CertifiedKey {
        chain: client_ec_key().chain.clone(),
        key: control::SigningKey::from_der(
            &control::crypto::pem::parse_private_key(pki().server.key_pem.as_bytes()).expect("key"),
        )
        .expect("key"),
    });
    let mut p = client_auth_pair(Some(wrong));
    p.drive_until(LIMIT, |p| {
        p.server.failed.is_some() && p.client.failed.is_some()
    });
    assert!(
        matches!(p.server.failed, Some(HandshakeError::BadSignature)),
        "{:?}",
        p.server.failed
    );
    assert_eq!(p.server.keys_ready, 0);
    assert_eq!(p.client.keys_ready, 0);
    assert_eq!(
        p.client.alerts_with(AlertDescription::DecryptError),
        1,
        "{:?}",
        p.client.alerts
    );
}

#[test]
fn missing_client_certificate_is_rejected_with_handshake_failure() {
    let mut p = client_auth_pair(None);
    p.drive_until(LIMIT, |p| {
        p.server.failed.is_some() && p.client.failed.is_some()
    });
    assert!(
        matches!(p.server.failed, Some(HandshakeError::CertificateRequired)),
        "{:?}",
        p.server.failed
    );
    assert_eq!(p.server.keys_ready + p.client.keys_ready, 0);
    assert_eq!(
        p.client.alerts_with(AlertDescription::HandshakeFailure),
        1,
        "{:?}",
        p.client.alerts
    );
}

fn rogue_client_key() -> std::sync::Arc<control::CertifiedKey> {
    static ROGUE: std::sync::OnceLock<TestPki> = std::sync::OnceLock::new();
    let other = ROGUE.get_or_init(|| TestPki::generate().expect("second PKI"));
    certified_key(&other.client.cert_pem, &other.client.key_pem)
}

#[test]
fn client_certificate_from_an_unknown_ca_is_rejected() {
    let mut p = client_auth_pair(Some(rogue_client_key()));
    p.drive_until(LIMIT, |p| {
        p.server.failed.is_some() && p.client.failed.is_some()
    });
    assert!(
        matches!(p.server.failed, Some(HandshakeError::BadCertificate { .. })),
        "{:?}",
        p.server.failed
    );
    assert_eq!(p.server.keys_ready + p.client.keys_ready, 0);
    assert!(
        p.client.alerts_with(AlertDescription::BadCertificate)
            + p.client.alerts_with(AlertDescription::UnknownCa)
            == 1,
        "{:?}",
        p.client.alerts
    );
}

/// The client's last datagram that carries its epoch-1 Finished.
fn client_final_flight(p: &Pair) -> Vec<u8> {
    p.client
        .sent
        .iter()
        .rev()
        .find(|s| {
            split_records(&s.bytes)
                .0
                .iter()
                .any(|r| r.epoch == 1 && r.content_type == CT_HANDSHAKE)
        })
        .map(|s| s.bytes.clone())
        .expect("client sent its Finished")
}

#[test]
fn duplicate_finished_after_completion_is_answered_at_most_once_each() {
    let mut p = established(ECDSA);
    let final_flight = client_final_flight(&p);
    let server_sent = p.server.sent.len();
    let from = p.client.addr;
    p.deliver_to_server(from, &final_flight);
    p.flush();
    let answered = p.server.sent.len() - server_sent;
    assert!(
        answered <= 1,
        "server answered one duplicate with {answered} datagrams"
    );
    // The retransmitted server flight reaches the client: no second KeysReady, no failure.
    p.advance(Duration::from_secs(1));
    for _ in 0..5 {
        p.deliver_to_server(from, &final_flight);
    }
    p.advance(Duration::from_secs(130));
    assert!(
        p.server.sent.len() - server_sent <= 6,
        "more than one answer per duplicate"
    );
    assert_eq!((p.client.keys_ready, p.server.keys_ready), (1, 1));
    assert!(p.client.failed.is_none() && p.server.failed.is_none());
    assert!(p.client.closed.is_none() && p.server.closed.is_none());
    p.assert_keys_match();
    p.assert_no_epoch1_sequence_reuse();
}

#[test]
fn altered_finished_after_completion_is_dropped_silently() {
    let mut p = established(ECDSA);
    let mut flight = client_final_flight(&p);
    // Flip a ciphertext byte of the epoch-1 record (the last record in the flight).
    let last = record_ranges(&flight).into_iter().last().expect("records");
    flight[last.end - 3] ^= 0x40;
    let server_sent = p.server.sent.len();
    let rejected = p.server.conn().stats().rejected_records;
    let from = p.client.addr;
    p.deliver_to_server(from, &flight);
    p.advance(Duration::from_secs(5));
    assert_eq!(p.server.conn().stats().rejected_records, rejected + 1);
    // The untouched epoch-0 records of that datagram may trigger one retransmission; the
    // altered Finished itself never does anything.
    assert!(p.server.sent.len() - server_sent <= 1);
    assert_eq!(p.server.keys_ready, 1);
    assert!(p.server.failed.is_none() && p.server.closed.is_none());
    assert!(p.server.alerts.is_empty());
    p.assert_keys_match();
}

#[test]
fn extra_finished_sealed_with_the_session_keys_is_not_accepted() {
    let mut p = established(ECDSA);
    let forged = RawFragment::whole(HT_FINISHED, 5, vec![0x5a; 12]).to_bytes();
    let rec = p
        .client
        .data
        .as_mut()
        .expect("keys")
        .seal_as(ContentType::Handshake, &forged);
    let from = p.client.addr;
    p.deliver_to_server(from, &rec);
    p.advance(Duration::from_secs(5));
    assert_eq!(p.server.keys_ready, 1);
    assert!(p.server.failed.is_none() && p.server.closed.is_none());
    p.assert_keys_match();
}

#[test]
fn spoofed_epoch0_alerts_and_hello_verify_requests_on_a_live_session_do_nothing() {
    let mut p = established(ECDSA);
    let (c_sent, s_sent) = (p.client.sent.len(), p.server.sent.len());
    for (level, desc) in [
        (2u8, ALERT_HANDSHAKE_FAILURE),
        (1, ALERT_CLOSE_NOTIFY),
        (2, ALERT_BAD_RECORD_MAC),
    ] {
        let a = alert_record(0, 9, level, desc).to_bytes();
        p.deliver_to_client(&a);
        let from = p.client.addr;
        p.deliver_to_server(from, &a);
    }
    let mut hvr = vec![0xfe, 0xff, 32];
    hvr.extend_from_slice(&[0xab; 32]);
    p.deliver_to_client(&handshake_datagram(
        3,
        DTLS_1_2,
        &[RawFragment::whole(HT_HELLO_VERIFY_REQUEST, 0, hvr)],
    ));
    p.advance(Duration::from_secs(5));
    assert!(
        p.client.alerts.is_empty() && p.server.alerts.is_empty(),
        "spoofed alert was believed"
    );
    assert!(p.client.closed.is_none() && p.server.closed.is_none());
    assert!(p.client.failed.is_none() && p.server.failed.is_none());
    assert_eq!(
        (p.client.sent.len(), p.server.sent.len()),
        (c_sent, s_sent),
        "answered a spoof"
    );
    assert!(p.client.conn().is_established() && p.server.conn().is_established());
    p.client_send_app(b"still alive");
    p.advance(Duration::from_millis(50));
    assert_eq!(p.server.app_in, vec![b"still alive".to_vec()]);
}

/// Opens every epoch-1 non-application record `to` received in datagrams sent after `from`.
fn opened_alerts(p: &mut Pair, to_client: bool, sent_before: usize) -> Vec<Vec<u8>> {
    let datagrams: Vec<Vec<u8>> = if to_client {
        p.server.sent[sent_before..]
            .iter()
            .map(|s| s.bytes.clone())
            .collect()
    } else {
        p.client.sent[sent_before..]
            .iter()
            .map(|s| s.bytes.clone())
            .collect()
    };
    let keys = if to_client {
        p.client.data.as_mut()
    } else {
        p.server.data.as_mut()
    }
    .expect("keys");
    let mut out = Vec::new();
    for d in datagrams {
        for r in record_ranges(&d) {
            if d[r.start] == CT_ALERT && d[r.start + 3..r.start + 5] == [0, 1] {
                let (ct, pt) = keys
                    .open_any(&d[r])
                    .expect("alert opens with the session keys");
                assert_eq!(ct, ContentType::Alert);
                out.push(pt);
            }
        }
    }
    out
}

#[test]
fn renegotiation_is_refused_with_no_renegotiation_both_roles() {
    let mut p = established(ECDSA);
    // Client asks: a ClientHello under epoch 1.
    let hello =
        RawFragment::whole(HT_CLIENT_HELLO, 4, ClientHelloSpec::typical(9).body()).to_bytes();
    let rec = p
        .client
        .data
        .as_mut()
        .expect("keys")
        .seal_as(ContentType::Handshake, &hello);
    let before = p.server.sent.len();
    let from = p.client.addr;
    p.deliver_to_server(from, &rec);
    p.flush();
    let alerts = opened_alerts(&mut p, true, before);
    assert_eq!(
        alerts,
        vec![vec![1, ALERT_NO_RENEGOTIATION]],
        "server reply to renegotiation"
    );
    // Server asks: HelloRequest under epoch 1.
    let req = RawFragment::whole(HT_HELLO_REQUEST, 5, Vec::new()).to_bytes();
    let rec = p
        .server
        .data
        .as_mut()
        .expect("keys")
        .seal_as(ContentType::Handshake, &req);
    let before = p.client.sent.len();
    p.deliver_to_client(&rec);
    p.flush();
    let alerts = opened_alerts(&mut p, false, before);
    assert_eq!(
        alerts,
        vec![vec![1, ALERT_NO_RENEGOTIATION]],
        "client reply to HelloRequest"
    );
    p.advance(Duration::from_secs(5));
    assert_eq!((p.client.keys_ready, p.server.keys_ready), (1, 1));
    assert!(p.client.failed.is_none() && p.server.failed.is_none());
    assert!(p.client.closed.is_none() && p.server.closed.is_none());
    p.assert_keys_match();
    p.assert_no_epoch1_sequence_reuse();
}

fn failed_then_valid(first: Config, what: &str, expect_alert: AlertDescription) {
    let mut s = server_config(&[ECDSA]);
    s.client_auth = ClientAuth::Required;
    let mut p = Pair::new(PairConfig::new(first, s));
    p.drive_until(LIMIT, |p| {
        p.client.failed.is_some() && p.server.failed.is_some()
    });
    assert!(
        p.server.failed.is_some() && p.client.failed.is_some(),
        "{what}: did not fail"
    );
    assert_eq!(
        p.client.alerts_with(expect_alert),
        1,
        "{what}: {:?}",
        p.client.alerts
    );
    let mut good = client_config(&[ECDSA]);
    good.certificate = Some(client_ec_key());
    p.restart_client(good, 77);
    assert!(
        p.handshake(LIMIT),
        "{what}: second handshake failed: {:?} / {:?}",
        p.client.failed,
        p.server.failed
    );
    p.assert_keys_match();
    assert_eq!(p.accepted, 2);
}

#[test]
fn failed_handshake_then_valid_one_from_the_same_address_succeeds() {
    let mut rogue = client_config(&[ECDSA]);
    rogue.certificate = Some(rogue_client_key());
    failed_then_valid(
        rogue,
        "untrusted client certificate",
        AlertDescription::BadCertificate,
    );
    let mut no_common = client_config(&[CipherSuite::EcdheRsaAes128GcmSha256]);
    no_common.certificate = Some(client_ec_key());
    failed_then_valid(
        no_common,
        "no common suite",
        AlertDescription::HandshakeFailure,
    );
}

#[test]
fn dtls_1_0_only_client_hello_gets_protocol_version() {
    let mut p = pair(ECDSA);
    let mut hello = ClientHelloSpec::typical(1);
    hello.client_version = DTLS_1_0;
    let dg = hello.datagram(DTLS_1_0, 0, 0);
    let from: std::net::SocketAddr = "192.0.2.10:1000".parse().expect("address literal");
    let sent_before = p.acceptor_bytes_out;
    p.deliver_to_server(from, &dg);
    assert_eq!(p.acceptor_replies, 1, "one protocol_version alert");
    let out = p.acceptor_bytes_out - sent_before;
    assert!(out > 0 && out <= dg.len());
    // Re-run directly to see the bytes.
    let mut buf = vec![0u8; 2048];
    match p.acceptor.handle_datagram(p.now, from, &dg, &mut buf) {
        control::AcceptOutcome::Reply(t) => {
            let (recs, rest) = split_records(&buf[..t.len]);
            assert!(!rest);
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0].content_type, CT_ALERT);
            assert_eq!(recs[0].payload, vec![2, ALERT_PROTOCOL_VERSION]);
        }
        other => panic!("expected a protocol_version alert, got {other:?}"),
    }
    assert_eq!(p.accepted, 0);
}

#[test]
fn no_cbc_suite_is_offered_or_accepted() {
    let mut p = pair(ECDSA);
    p.flush();
    // Our ClientHello offers AEAD suites (and the SCSV) only.
    let first = &p.client.sent[0].bytes;
    let frag = &split_records(first).0[0].handshake_fragments()[0];
    let b = &frag.body;
    let sid = b[34] as usize;
    let at = 35 + sid;
    let cookie = b[at] as usize;
    let at = at + 1 + cookie;
    let n = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
    let offered: Vec<u16> = b[at + 2..at + 2 + n]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let aead = [
        0xc02b, 0xc02c, 0xcca9, 0xc02f, 0xc030, 0xcca8, 0x00a8, 0x00a9, 0xccac, 0x00ff,
    ];
    assert!(!offered.is_empty());
    for s in &offered {
        assert!(aead.contains(s), "offered non-AEAD suite {s:#06x}");
    }
    // A client offering only CBC suites is refused.
    let mut cbc = ClientHelloSpec::typical(3);
    cbc.cipher_suites = vec![0xc009, 0xc013, 0x002f, 0x0035];
    let from: std::net::SocketAddr = "192.0.2.11:1000".parse().expect("address literal");
    let mut buf = vec![0u8; 2048];
    let dg = cbc.datagram(DTLS_1_2, 0, 0);
    let cookie = match p.acceptor.handle_datagram(p.now, from, &dg, &mut buf) {
        control::AcceptOutcome::Reply(t) => {
            let recs = split_records(&buf[..t.len]).0;
            hello_verify_cookie(&recs[0].handshake_fragments()[0].body).expect("cookie")
        }
        other => panic!("expected HelloVerifyRequest, got {other:?}"),
    };
    cbc.cookie = cookie;
    let dg = cbc.datagram(DTLS_1_2, 1, 1);
    let hello = match p.acceptor.handle_datagram(p.now, from, &dg, &mut buf) {
        control::AcceptOutcome::Accept(h) => h,
        other => panic!("expected Accept, got {other:?}"),
    };
    let mut conn = control::Connection::server(
        std::sync::Arc::new(server_config(&[ECDSA])),
        Box::new(control::crypto::SeededRng::new(5)),
        p.now,
        test_wall(),
        hello,
    )
    .expect("config");
    let mut failed = None;
    while let Some(ev) = conn.poll_event() {
        if let control::Event::HandshakeFailed(e) = ev {
            failed = Some(e);
        }
    }
    assert!(
        matches!(failed, Some(HandshakeError::NoCommonSuite)),
        "{failed:?}"
    );
    let t = conn.poll_transmit(p.now, &mut buf).expect("alert sent");
    assert!(has_plain_alert(&buf[..t.len], 2, ALERT_HANDSHAKE_FAILURE));
}

/// A wrong PSK key: the handshake cannot complete, both sides give up, and each side's
/// timeout names the likely reason for the operator (the server saw the client's Finished
/// fail authentication; the client's Finished was never answered). The records are still
/// discarded silently before the timeout (RFC 6347 §4.1.2.7).
#[test]
fn a_wrong_psk_key_times_out_naming_mismatched_keys_on_both_sides() {
    let suite = CipherSuite::PskAes128GcmSha256;
    let mut client = client_config(&[suite]);
    client.psks[0].key = zeroize::Zeroizing::new(vec![0x42; 16]);
    let cfg = PairConfig::new(client, server_config(&[suite]));
    let mut p = Pair::new(cfg);
    p.drive_until(Duration::from_secs(400), |p| {
        p.client.failed.is_some() && p.server.failed.is_some()
    });
    assert_eq!((p.client.keys_ready, p.server.keys_ready), (0, 0));
    let server = p.server.failed.as_ref().expect("server gave up");
    assert!(
        matches!(server, HandshakeError::Timeout { unauthenticated, .. } if *unauthenticated > 0),
        "{server:?}"
    );
    assert!(server.to_string().contains("a wrong PSK?"), "{server}");
    let client = p.client.failed.as_ref().expect("client gave up");
    assert!(
        matches!(
            client,
            HandshakeError::Timeout {
                finished_unanswered: true,
                ..
            }
        ),
        "{client:?}"
    );
    assert!(
        client.to_string().contains("never answered our Finished"),
        "{client}"
    );
}
