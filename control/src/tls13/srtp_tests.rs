//! use_srtp (RFC 5764) with DTLS 1.3: offered in the ClientHello, answered in
//! EncryptedExtensions (RFC 8446 §4.2), keys from the RFC 8446 §7.5 exporter with RFC 5764
//! §4.2's label.

use dtls_proto::{SrtpProtectionProfile, UseSrtp};

use super::client::accepted_srtp_profile;
use super::tests::{check_app_data, client13, complete, psk_client, psk_server, server13};
use crate::keys::exporter::SRTP_EXPORTER_LABEL;
use crate::{Config, HandshakeError, SessionKeys};
use dtls_proto::ProtocolVersion;

use SrtpProtectionProfile::{AeadAes128Gcm, Aes128CmHmacSha1_32, Aes128CmHmacSha1_80};

fn offering(mut config: Config, profiles: &[SrtpProtectionProfile]) -> Config {
    config.srtp_profiles = profiles.to_vec();
    config
}

/// Both sides export the same DTLS-SRTP keying material for the negotiated profile:
/// `2 * (key + salt)` bytes, what `export("EXTRACTOR-dtls_srtp", no context)` gives (RFC
/// 5764 §4.2), and not what another label gives.
fn assert_same_srtp_keys(ck: &SessionKeys, sk: &SessionKeys, profile: SrtpProtectionProfile) {
    let a = ck.exporter.export_srtp(profile).expect("client export");
    let b = sk.exporter.export_srtp(profile).expect("server export");
    let (key, salt) = profile.master_key_salt_len().expect("known lengths");
    assert_eq!(a.len(), 2 * (key + salt));
    assert_eq!(a, b);
    let mut direct = vec![0u8; a.len()];
    ck.exporter
        .export(SRTP_EXPORTER_LABEL, None, &mut direct)
        .expect("export");
    assert_eq!(direct, a);
    // RFC 8446 §7.5: no context and an empty context are the same in TLS 1.3.
    sk.exporter
        .export(SRTP_EXPORTER_LABEL, Some(&[]), &mut direct)
        .expect("export");
    assert_eq!(direct, a);
    ck.exporter
        .export(b"EXTRACTOR-other", None, &mut direct)
        .expect("export");
    assert_ne!(direct, a);
}

#[test]
fn the_server_picks_its_first_profile_the_client_offers_and_both_export_the_same_keys() {
    let client = offering(client13(), &[AeadAes128Gcm, Aes128CmHmacSha1_80]);
    let server = offering(server13(), &[Aes128CmHmacSha1_80, AeadAes128Gcm]);
    let (ck, sk, _) = complete(client, server);
    assert_eq!(ck.version, ProtocolVersion::Dtls1_3);
    // RFC 5764 §4.1.1: one profile the client offered; our servers take their own order.
    assert_eq!(ck.srtp_profile, Some(Aes128CmHmacSha1_80));
    assert_eq!(sk.srtp_profile, Some(Aes128CmHmacSha1_80));
    assert_same_srtp_keys(&ck, &sk, Aes128CmHmacSha1_80);
    check_app_data(*ck, *sk);
}

#[test]
fn the_combined_dtls12_and_dtls13_hello_negotiates_srtp_under_dtls13() {
    // Both versions allowed: the ClientHello is the DTLS 1.2 engine's with the 1.3 parts
    // added; use_srtp means the same in both.
    let client = offering(
        Config {
            versions: vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2],
            ..client13()
        },
        &[AeadAes128Gcm],
    );
    let server = offering(server13(), &[AeadAes128Gcm]);
    let (ck, sk, _) = complete(client, server);
    assert_eq!(ck.version, ProtocolVersion::Dtls1_3);
    assert_eq!(
        (ck.srtp_profile, sk.srtp_profile),
        (Some(AeadAes128Gcm), Some(AeadAes128Gcm))
    );
    assert_same_srtp_keys(&ck, &sk, AeadAes128Gcm);
}

#[test]
fn no_common_profile_or_no_server_profiles_leaves_srtp_off_and_the_handshake_completes() {
    for server_profiles in [&[Aes128CmHmacSha1_32][..], &[]] {
        let client = offering(client13(), &[AeadAes128Gcm, Aes128CmHmacSha1_80]);
        let server = offering(server13(), server_profiles);
        let (ck, sk, _) = complete(client, server);
        assert_eq!((ck.srtp_profile, sk.srtp_profile), (None, None));
        check_app_data(*sk, *ck);
    }
    // A server with profiles and a client that offers none.
    let (ck, sk, _) = complete(client13(), offering(server13(), &[AeadAes128Gcm]));
    assert_eq!((ck.srtp_profile, sk.srtp_profile), (None, None));
}

#[test]
fn an_external_psk_handshake_negotiates_srtp_too() {
    let client = offering(psk_client(7), &[AeadAes128Gcm]);
    let server = offering(psk_server(), &[AeadAes128Gcm]);
    let (ck, sk, _) = complete(client, server);
    assert_eq!(
        (ck.srtp_profile, sk.srtp_profile),
        (Some(AeadAes128Gcm), Some(AeadAes128Gcm))
    );
    assert_same_srtp_keys(&ck, &sk, AeadAes128Gcm);
}

#[test]
fn the_client_checks_the_servers_answer_as_the_dtls12_client_does() {
    let config = offering(client13(), &[AeadAes128Gcm, Aes128CmHmacSha1_80]);
    let answer = |profiles: &[SrtpProtectionProfile], mki: &[u8]| UseSrtp {
        profiles: profiles.to_vec(),
        mki: mki.to_vec(),
    };
    assert!(matches!(
        accepted_srtp_profile(&config, &answer(&[Aes128CmHmacSha1_80], &[])),
        Ok(Aes128CmHmacSha1_80)
    ));
    // A profile we did not offer, none, more than one, an MKI we did not offer (RFC 5764
    // §4.1.1; we offer an empty MKI).
    for bad in [
        answer(&[Aes128CmHmacSha1_32], &[]),
        answer(&[], &[]),
        answer(&[AeadAes128Gcm, Aes128CmHmacSha1_80], &[]),
        answer(&[AeadAes128Gcm], &[1, 2]),
    ] {
        assert!(
            matches!(
                accepted_srtp_profile(&config, &bad),
                Err(HandshakeError::IllegalParameter {
                    what: "use_srtp profile not offered"
                })
            ),
            "{bad:?}"
        );
    }
    // An answer to an extension we did not send (RFC 8446 §4.2: unsupported_extension).
    let unsolicited = accepted_srtp_profile(&client13(), &answer(&[AeadAes128Gcm], &[]));
    assert!(
        matches!(
            unsolicited,
            Err(HandshakeError::UnsupportedExtension { ext_type })
                if ext_type == dtls_proto::ExtensionType::UseSrtp.to_u16()
        ),
        "{unsolicited:?}"
    );
}
