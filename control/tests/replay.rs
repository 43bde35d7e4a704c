//! Record-layer negatives the engine takes part in (TESTING.md "Record layer"): replaying
//! every datagram of a session to both sides delivers nothing twice and changes nothing;
//! epoch-1 records with bad tags are dropped silently and counted.

mod support;

use std::time::Duration;

use control::CipherSuite;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::*;

fn established(suite: CipherSuite) -> Pair {
    let mut p = Pair::new(PairConfig::new(
        client_config(&[suite]),
        server_config(&[suite]),
    ));
    assert!(p.handshake(Duration::from_secs(10)));
    p.assert_keys_match();
    p
}

#[test]
fn replaying_every_datagram_of_a_session_delivers_nothing_twice() {
    for suite in [
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
        CipherSuite::PskAes256GcmSha384,
    ] {
        let mut p = established(suite);
        for i in 0..10u8 {
            p.client_send_app(&[i; 50]);
            p.server_send_app(&[i.wrapping_add(50); 60]);
        }
        p.advance(Duration::from_secs(1));
        assert_eq!((p.client.app_in.len(), p.server.app_in.len()), (10, 10));
        let c2s = p.c2s.log.clone();
        let s2c = p.s2c.log.clone();
        let from = p.client.addr;
        for _ in 0..3 {
            for d in &c2s {
                p.deliver_to_server(from, d);
            }
            for d in &s2c {
                p.deliver_to_client(d);
            }
            p.advance(Duration::from_secs(2));
        }
        assert_eq!(
            (p.client.app_in.len(), p.server.app_in.len()),
            (10, 10),
            "{suite:?}: a replayed record was delivered"
        );
        assert_eq!(p.server.app_rejected, 30, "{suite:?}");
        assert_eq!(p.client.app_rejected, 30, "{suite:?}");
        assert_eq!((p.client.keys_ready, p.server.keys_ready), (1, 1));
        assert!(p.client.failed.is_none() && p.server.failed.is_none());
        assert!(p.client.closed.is_none() && p.server.closed.is_none());
        assert_eq!(
            p.accepted, 1,
            "a replayed ClientHello created a second engine"
        );
        p.assert_keys_match();
        p.assert_no_epoch1_sequence_reuse();
    }
}

#[test]
fn bad_tag_epoch1_records_are_dropped_silently_and_counted() {
    let mut p = established(CipherSuite::EcdheEcdsaAes128GcmSha256);
    p.advance(Duration::from_secs(1));
    let server_sent = p.server.sent.len();
    let rejected = p.server.conn().stats().rejected_records;
    let from = p.client.addr;
    let n = 10_000u64;
    for seq in 0..n {
        // Handshake and alert records under epoch 1 with garbage ciphertext, including the
        // last sequence number of the 48-bit space.
        let ct = if seq % 2 == 0 { CT_HANDSHAKE } else { CT_ALERT };
        let s = if seq == 0 { (1u64 << 48) - 1 } else { seq };
        let rec = RawRecord::new(ct, 1, s, vec![(seq % 251) as u8; 40]).to_bytes();
        p.deliver_to_server(from, &rec);
    }
    p.advance(Duration::from_secs(1));
    assert_eq!(p.server.conn().stats().rejected_records, rejected + n);
    assert_eq!(
        p.server.sent.len(),
        server_sent,
        "a forged record was answered"
    );
    assert!(p.server.alerts.is_empty() && p.server.failed.is_none() && p.server.closed.is_none());
    // The forged sequence 2^48-1 did not move the engine's replay window: a genuine epoch-1
    // record with a small sequence number (a renegotiation ClientHello sealed with the
    // client's keys) is still read, and refused with one no_renegotiation alert.
    let hello = RawFragment::whole(HT_CLIENT_HELLO, 9, ClientHelloSpec::typical(4).body());
    let rec = p
        .client
        .data
        .as_mut()
        .expect("keys")
        .seal_as(dataplane::record::ContentType::Handshake, &hello.to_bytes());
    assert!(split_records(&rec).0[0].sequence < 100);
    p.deliver_to_server(from, &rec);
    p.flush();
    assert_eq!(
        p.server.sent.len(),
        server_sent + 1,
        "genuine record not read after the flood"
    );
    p.assert_keys_match();
}
