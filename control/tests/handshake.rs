//! Clean-channel handshakes in memory: every suite, client authentication, resumption,
//! application data through the data plane keys.

mod support;

use std::time::Duration;

use control::{CipherSuite, ClientAuth, PeerIdentity};
use support::fixtures::*;
use support::pair::{Pair, PairConfig};

fn complete(suite: CipherSuite) -> Pair {
    let cfg = PairConfig::new(client_config(&[suite]), server_config(&[suite]));
    let mut pair = Pair::new(cfg);
    pair.assert_handshake(Duration::from_secs(5), format_args!("{suite:?}"));
    assert_eq!(pair.client.info.as_ref().map(|i| i.suite), Some(suite));
    pair
}

#[test]
fn every_suite_completes_with_matching_keys() {
    for &suite in CipherSuite::SUPPORTED {
        let pair = complete(suite);
        assert_eq!(pair.client.keys_ready, 1);
        assert_eq!(pair.server.keys_ready, 1);
        assert_eq!(pair.accepted, 1, "one engine for one handshake");
        assert_eq!(pair.acceptor_replies, 1, "one HelloVerifyRequest");
        // No retransmission on a clean channel.
        assert_eq!(pair.client.conn().stats().timer_retransmits, 0, "{suite:?}");
        assert_eq!(pair.server.conn().stats().timer_retransmits, 0, "{suite:?}");
        let expect_identity = if suite.uses_psk() {
            PeerIdentity::Psk(PSK_IDENTITY.to_vec())
        } else {
            PeerIdentity::None
        };
        assert_eq!(
            pair.server.info.as_ref().map(|i| i.peer_identity.clone()),
            Some(expect_identity),
            "{suite:?}"
        );
        if suite.uses_certificate() {
            assert!(matches!(
                pair.client.info.as_ref().map(|i| &i.peer_identity),
                Some(PeerIdentity::Certificates(chain)) if !chain.is_empty()
            ));
        }
    }
}

#[test]
fn application_data_crosses_the_impairment_free_channel_both_ways() {
    let mut pair = complete(CipherSuite::EcdheEcdsaAes128GcmSha256);
    for i in 0..20u8 {
        pair.client_send_app(&[i; 100]);
        pair.server_send_app(&[i.wrapping_add(100); 1000]);
    }
    pair.advance(Duration::from_millis(100));
    assert_eq!(pair.server.app_in.len(), 20);
    assert_eq!(pair.client.app_in.len(), 20);
    for (i, m) in pair.server.app_in.iter().enumerate() {
        assert_eq!(m, &vec![i as u8; 100]);
    }
    for (i, m) in pair.client.app_in.iter().enumerate() {
        assert_eq!(m, &vec![(i as u8).wrapping_add(100); 1000]);
    }
    assert_eq!(pair.client.app_rejected + pair.server.app_rejected, 0);
    // Nothing fails later: the engines stay quiet.
    pair.advance(Duration::from_secs(120));
    assert!(pair.client.failed.is_none() && pair.server.failed.is_none());
    assert_eq!(pair.client.keys_ready, 1);
    assert_eq!(pair.server.keys_ready, 1);
}

#[test]
fn client_certificate_authentication_completes_and_identifies_the_client() {
    let suite = CipherSuite::EcdheEcdsaAes128GcmSha256;
    let mut client = client_config(&[suite]);
    client.certificate = Some(client_ec_key());
    let mut server = server_config(&[suite]);
    server.client_auth = ClientAuth::Required;
    let mut pair = Pair::new(PairConfig::new(client, server));
    pair.assert_handshake(Duration::from_secs(5), "client certificate");
    let chain = match &pair
        .server
        .info
        .as_ref()
        .expect("server info")
        .peer_identity
    {
        PeerIdentity::Certificates(c) => c.clone(),
        other => panic!("server saw {other:?}"),
    };
    assert_eq!(chain[0], client_ec_key().chain[0]);
}

#[test]
fn resumption_with_a_ticket_is_abbreviated_and_keys_match() {
    let suite = CipherSuite::EcdheEcdsaAes128GcmSha256;
    let mut server = server_config(&[suite]);
    server.ticket_keys = Some(ticket_keys(9));
    let client = client_config(&[suite]);
    let mut first = Pair::new(PairConfig::new(client.clone(), server.clone()));
    assert!(first.handshake(Duration::from_secs(5)));
    first.assert_keys_match();
    let ticket = first
        .client
        .info
        .as_mut()
        .and_then(|i| i.ticket.take())
        .expect("client got a ticket");
    assert!(!first.client.info.as_ref().is_some_and(|i| i.resumed));

    let mut second = Pair::with_ticket(PairConfig::new(client, server).seed(2), Some(ticket));
    second.assert_handshake(Duration::from_secs(5), "resumption");
    assert!(second.client.info.as_ref().is_some_and(|i| i.resumed));
    assert!(second.server.info.as_ref().is_some_and(|i| i.resumed));
    // Abbreviated: no Certificate from the server, so far fewer bytes than the full one.
    assert!(
        second.s2c.stats.bytes_in < first.s2c.stats.bytes_in / 2,
        "resumed {} B vs full {} B",
        second.s2c.stats.bytes_in,
        first.s2c.stats.bytes_in
    );
}
