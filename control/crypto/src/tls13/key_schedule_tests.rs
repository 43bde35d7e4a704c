//! Known answers from RFC 8448 (Example Handshake Traces for TLS 1.3), which uses the
//! `"tls13 "` prefix, SHA-256 and TLS_AES_128_GCM_SHA256; and the DTLS 1.3 prefix.

use dtls_proto::{Aead, PrfHash};

use super::*;
use crate::tls13::hkdf::{expand, extract, hkdf_expand_label};
use crate::{EphemeralKeyPair, Transcript};
use dtls_proto::NamedGroup;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is valid hex"))
        .collect()
}

fn hash_of(s: &str) -> HandshakeHash {
    HandshakeHash::from_slice(&unhex(s))
}

// RFC 8448 §3 "Simple 1-RTT Handshake": inputs.
const CLIENT_PRIVATE: &str = "49af42ba7f7994852d713ef2784bcbcaa7911de26adc5642cb634540e7ea5005";
const SERVER_PUBLIC: &str = "c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f";
const SERVER_PRIVATE: &str = "b1580eeadf6dd589b8ef4f2d5652578cc810e9980191ec8d058308cea216a21e";
const CLIENT_PUBLIC: &str = "99381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529aaf2c";

/// RFC 8448 §3 `{client} construct a ClientHello handshake message` (196 octets).
const CLIENT_HELLO: &str = "
    010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef
    6283024dece7000006130113031302010000910000000b000900000673657276
    6572ff01000100000a00140012001d0017001800190100010101020103010400
    230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e
    51c13cae4d5413691e529aaf2c002b0003020304000d0020001e040305030603
    020308040805080604010501060102010402050206020202002d00020101001c
    00024001";

/// RFC 8448 §3 `{server} construct a ServerHello handshake message` (90 octets).
const SERVER_HELLO: &str = "
    020000560303a6af06a4121860dc5e6e60249cd34c95930c8ac5cb1434dac155
    772ed3e2692800130100002e00330024001d0020c9828876112095fe66762bdb
    f7c672e156d6cc253b833df1dd69b1b04e751f0f002b00020304";

/// RFC 8448 §3 `{server} send handshake record` payload (657 octets): EncryptedExtensions,
/// Certificate, CertificateVerify and Finished (the last 36 octets).
const SERVER_FLIGHT: &str = "
    080000240022000a00140012001d00170018001901000101010201030104001c
    00024001000000000b0001b9000001b50001b0308201ac30820115a003020102
    020102300d06092a864886f70d01010b0500300e310c300a0603550403130372
    7361301e170d3136303733303031323335395a170d3236303733303031323335
    395a300e310c300a0603550403130372736130819f300d06092a864886f70d01
    0101050003818d0030818902818100b4bb498f8279303d980836399b36c6988c
    0c68de55e1bdb826d3901a2461eafd2de49a91d015abbc9a95137ace6c1af19e
    aa6af98c7ced43120998e187a80ee0ccb0524b1b018c3e0b63264d449a6d38e2
    2a5fda430846748030530ef0461c8ca9d9efbfae8ea6d1d03e2bd193eff0ab9a
    8002c47428a6d35a8d88d79f7f1e3f0203010001a31a301830090603551d1304
    023000300b0603551d0f0404030205a0300d06092a864886f70d01010b050003
    81810085aad2a0e5b9276b908c65f73a7267170618a54c5f8a7b337d2df7a594
    365417f2eae8f8a58c8f8172f9319cf36b7fd6c55b80f21a03015156726096fd
    335e5e67f2dbf102702e608ccae6bec1fc63a42a99be5c3eb7107c3c54e9b9eb
    2bd5203b1c3b84e0a8b2f759409ba3eac9d91d402dcc0cc8f8961229ac9187b4
    2b4de100000f000084080400805a747c5d88fa9bd2e55ab085a61015b7211f82
    4cd484145ab3ff52f1fda8477b0b7abc90db78e2d33a5c141a078653fa6bef78
    0c5ea248eeaaa785c4f394cab6d30bbe8d4859ee511f602957b15411ac027671
    459e46445c9ea58c181e818e95b8c3fb0bf3278409d3be152a3da5043e063dda
    65cdf5aea20d53dfacd42f74f3140000209b9b141d906337fbd2cbdce71df4de
    da4ab42c309572cb7fffee5454b78f0718";

/// RFC 8448 §3 `{client} construct a Finished handshake message` (36 octets).
const CLIENT_FINISHED: &str = "
    14000020a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2
    edd5ce61";

fn keys_are(secret: &TrafficSecret, key: &str, iv: &str) {
    let keys = secret.traffic_keys(Aead::Aes128Gcm);
    assert_eq!(keys.key(), unhex(key));
    assert_eq!(keys.iv(), unhex(iv));
    assert_eq!(keys.sn_key().len(), 16);
}

/// Every intermediate value of RFC 8448 §3 that this key schedule computes, in order.
#[test]
fn rfc8448_simple_1rtt_handshake() {
    let hash = PrfHash::Sha256;

    // {client} / {server} x25519 shared secret: `{server} extract secret "handshake"` IKM.
    let ecdhe = "8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d";
    for (private, peer) in [
        (CLIENT_PRIVATE, SERVER_PUBLIC),
        (SERVER_PRIVATE, CLIENT_PUBLIC),
    ] {
        let pair = EphemeralKeyPair::from_private_bytes(NamedGroup::X25519, &unhex(private))
            .expect("RFC key");
        let z = pair.agree(&unhex(peer)).expect("RFC public key");
        assert_eq!(z.as_bytes(), unhex(ecdhe));
    }

    // Transcript: ClientHello..ServerHello (`derive secret "tls13 c hs traffic"` hash).
    let mut transcript = Transcript::new();
    transcript.update(&unhex(CLIENT_HELLO));
    transcript.update(&unhex(SERVER_HELLO));
    transcript.select_hash(hash).expect("first selection");
    let hello_hash = transcript.current_hash().expect("selected");
    assert_eq!(
        hello_hash.as_bytes(),
        unhex("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
    );

    // `{server} extract secret "early"`.
    let early = EarlySecret::new(hash, LabelPrefix::Tls13, None);
    assert_eq!(
        early.as_bytes(),
        unhex("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a")
    );
    // `derive secret for handshake "tls13 derived"`.
    assert_eq!(
        early.0.derive_empty(b"derived").as_bytes(),
        unhex("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba")
    );

    // `{server} extract secret "handshake"`.
    let shared = SharedSecret::from_slice(&unhex(ecdhe));
    let handshake = early.into_handshake_secret(Some(&shared));
    assert_eq!(
        handshake.as_bytes(),
        unhex("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac")
    );

    // `derive secret "tls13 c hs traffic"` / `"tls13 s hs traffic"`.
    let client_hs = handshake.client_handshake_traffic_secret(&hello_hash);
    let server_hs = handshake.server_handshake_traffic_secret(&hello_hash);
    assert_eq!(
        client_hs.as_bytes(),
        unhex("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
    );
    assert_eq!(
        server_hs.as_bytes(),
        unhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    );

    // `derive secret for master "tls13 derived"`.
    assert_eq!(
        handshake.0.derive_empty(b"derived").as_bytes(),
        unhex("43de77e0c77713859a944db9db2590b53190a65b3ee2e4f12dd7a0bb7ce254b4")
    );
    // `{server} extract secret "master"`.
    let master = handshake.into_master_secret();
    assert_eq!(
        master.as_bytes(),
        unhex("18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919")
    );

    // `{server} derive write traffic keys for handshake data` and the read (client) keys.
    keys_are(
        &server_hs,
        "3fce516009c21727d0f2e4e86ee403bc",
        "5d313eb2671276ee13000b30",
    );
    keys_are(
        &client_hs,
        "dbfaa693d1762c5b666af5d950258d01",
        "5bd3c71b836e0b76bb73265f",
    );

    // `{server} calculate finished "tls13 finished"`: over ClientHello..CertificateVerify,
    // i.e. the server flight without its Finished (36 octets).
    let flight = unhex(SERVER_FLIGHT);
    let (before_finished, server_finished) = flight.split_at(flight.len() - 36);
    transcript.update(before_finished);
    let cv_hash = transcript.current_hash().expect("selected");
    assert_eq!(
        server_hs.finished_key(),
        unhex("008d3b66f816ea559f96b537e885c31fc068bf492c652f01f288a1d8cdc19fc8")
    );
    let server_verify = server_hs.verify_data(&cv_hash);
    assert_eq!(
        server_verify.as_bytes(),
        unhex("9b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f0718")
    );
    assert_eq!(&server_finished[4..], server_verify.as_bytes());
    assert!(server_verify.matches(&server_finished[4..]));

    // ClientHello..server Finished: `derive secret "tls13 c ap traffic"` hash.
    transcript.update(server_finished);
    let finished_hash = transcript.current_hash().expect("selected");
    assert_eq!(
        finished_hash.as_bytes(),
        unhex("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")
    );
    let client_ap = master.client_application_traffic_secret(&finished_hash);
    let server_ap = master.server_application_traffic_secret(&finished_hash);
    let exporter = master.exporter_master_secret(&finished_hash);
    assert_eq!(
        client_ap.as_bytes(),
        unhex("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
    );
    assert_eq!(
        server_ap.as_bytes(),
        unhex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
    );
    assert_eq!(
        exporter.as_bytes(),
        unhex("fe22f881176eda18eb8f44529e6792c50c9a3f89452f68d8ae311b4309d3cf50")
    );
    keys_are(
        &server_ap,
        "9f02283b6c9c07efc26bb9f2ac92e356",
        "cf782b88dd83549aadf1e984",
    );
    keys_are(
        &client_ap,
        "17422dda596ed5d9acd890e3c63f5051",
        "5b78923dee08579033e523d9",
    );

    // `{client} calculate finished "tls13 finished"`.
    assert_eq!(
        client_hs.finished_key(),
        unhex("b80ad01015fb2f0bd65ff7d4da5d6bf83f84821d1f87fdc7d3c75b5a7b42d9c4")
    );
    let client_verify = client_hs.verify_data(&finished_hash);
    assert_eq!(
        client_verify.as_bytes(),
        unhex("a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61")
    );

    // `{client} derive secret "tls13 res master"` over ClientHello..client Finished.
    transcript.update(&unhex(CLIENT_FINISHED));
    let client_finished_hash = transcript.current_hash().expect("selected");
    assert_eq!(
        client_finished_hash.as_bytes(),
        unhex("209145a96ee8e2a122ff810047cc952684658d6049e86429426db87c54ad143d")
    );
    let resumption = master.resumption_master_secret(&client_finished_hash);
    assert_eq!(
        resumption.as_bytes(),
        unhex("7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c")
    );

    // `{server} generate resumption secret "tls13 resumption"`, ticket nonce 00 00.
    let psk = resumption.psk(&[0, 0]).expect("short nonce");
    assert_eq!(
        psk.as_bytes(),
        unhex("4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3")
    );
}

/// RFC 8448 §4 "Resumed 0-RTT Handshake": the early secret from the §3 resumption PSK, the
/// PSK binder, and the early traffic and exporter secrets.
#[test]
fn rfc8448_resumed_psk_binder_and_early_secrets() {
    let psk = unhex("4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3");
    let early = EarlySecret::new(PrfHash::Sha256, LabelPrefix::Tls13, Some(&psk));
    // `{client} extract secret "early"`.
    assert_eq!(
        early.as_bytes(),
        unhex("9b2188e9b2fc6d64d71dc329900e20bb41915000f678aa839cbb797cb7d8332c")
    );

    // `{client} calculate PSK binder`: PRK (the binder key), expanded (its finished key),
    // binder hash (the truncated ClientHello) and the binder.
    let binder_key = early.binder_key(PskKind::Resumption);
    assert_eq!(
        binder_key.0.as_bytes(),
        unhex("69fe131a3bbad5d63c64eebcc30e395b9d8107726a13d074e389dbc8a4e47256")
    );
    let mut finished_key = [0u8; 32];
    binder_key
        .0
        .expand_label(b"finished", b"", &mut finished_key);
    assert_eq!(
        finished_key[..],
        unhex("5588673e72cb59c87d220caffe94f2dea9a3b1609f7d50e90a48227db9ed7eaa")
    );
    let truncated = hash_of("63224b2e4573f2d3454ca84b9d009a04f6be9e05711a8396473aefa01e924a14");
    let binder = binder_key.binder(&truncated);
    let expected = unhex("3add4fb2d8fdf822a0ca3cf7678ef5e88dae990141c5924d57bb6fa31b9e5f9d");
    assert_eq!(binder.as_bytes(), expected);
    assert!(binder.matches(&expected));

    // The external binder key uses another label, so another key.
    let external = early.binder_key(PskKind::External);
    assert_ne!(external.0.as_bytes(), binder_key.0.as_bytes());

    // `derive secret "tls13 c e traffic"` and `"tls13 e exp master"` over the ClientHello.
    let hello = hash_of("08ad0fa05d7c7233b1775ba2ff9f4c5b8b59276b7f227f13a976245f5d960913");
    assert_eq!(
        early.client_early_traffic_secret(&hello).as_bytes(),
        unhex("3fbbe6a60deb66c30a32795aba0eff7eaa10105586e7be5c09678d63b6caab62")
    );
    assert_eq!(
        early.early_exporter_master_secret(&hello).as_bytes(),
        unhex("b2026866610937d7423e5be90862ccf24c0e6091186d34f812089ff5be2ef7df")
    );
}

/// The HkdfLabel bytes, built by hand for a prefix, label and context.
fn hkdf_label(length: u16, prefix: &[u8], label: &[u8], context: &[u8]) -> Vec<u8> {
    let mut info = length.to_be_bytes().to_vec();
    info.push(u8::try_from(prefix.len() + label.len()).expect("short label"));
    info.extend_from_slice(prefix);
    info.extend_from_slice(label);
    info.push(u8::try_from(context.len()).expect("short context"));
    info.extend_from_slice(context);
    info
}

#[test]
fn dtls13_prefix_encodes_hkdf_label_and_changes_every_output() {
    let secret = [0x5a; 48];
    for hash in [PrfHash::Sha256, PrfHash::Sha384] {
        let secret = &secret[..hash.output_len()];
        let context = [0xc7; 20];
        for (label, out_len) in [(&b"derived"[..], 32), (b"c hs traffic", 48), (b"sn", 16)] {
            let mut dtls = vec![0u8; out_len];
            let mut tls = vec![0u8; out_len];
            hkdf_expand_label(
                hash,
                LabelPrefix::Dtls13,
                secret,
                label,
                &context,
                &mut dtls,
            )
            .expect("in range");
            hkdf_expand_label(hash, LabelPrefix::Tls13, secret, label, &context, &mut tls)
                .expect("in range");
            assert_ne!(dtls, tls, "{label:?}");

            // HkdfLabel: uint16 length, opaque label<7..255> = "dtls13" + Label (one length
            // byte covering both), opaque context<0..255>.
            let info = hkdf_label(
                u16::try_from(out_len).expect("short"),
                b"dtls13",
                label,
                &context,
            );
            assert_eq!(info[2], u8::try_from(6 + label.len()).expect("short"));
            let mut by_hand = vec![0u8; out_len];
            expand(hash, secret, &[&info], &mut by_hand).expect("in range");
            assert_eq!(dtls, by_hand, "{label:?}");

            let info = hkdf_label(
                u16::try_from(out_len).expect("short"),
                b"tls13 ",
                label,
                &context,
            );
            expand(hash, secret, &[&info], &mut by_hand).expect("in range");
            assert_eq!(tls, by_hand, "{label:?}");
        }
    }

    // Through the whole schedule: a DTLS 1.3 handshake gets keys unrelated to TLS 1.3's.
    let hello = HandshakeHash::digest(PrfHash::Sha256, b"hello");
    let shared = SharedSecret::from_slice(&[7; 32]);
    let secrets = [LabelPrefix::Tls13, LabelPrefix::Dtls13].map(|prefix| {
        let hs =
            EarlySecret::new(PrfHash::Sha256, prefix, None).into_handshake_secret(Some(&shared));
        let keys = hs
            .client_handshake_traffic_secret(&hello)
            .traffic_keys(Aead::Aes128Gcm);
        (
            hs.as_bytes().to_vec(),
            keys.key().to_vec(),
            keys.sn_key().to_vec(),
        )
    });
    // The early secret is an Extract, which has no label; everything after differs.
    assert_ne!(secrets[0].0, secrets[1].0);
    assert_ne!(secrets[0].1, secrets[1].1);
    assert_ne!(secrets[0].2, secrets[1].2);
}

#[test]
fn hkdf_label_bounds_are_errors_not_panics() {
    let hash = PrfHash::Sha256;
    let secret = [1u8; 32];
    let mut out = [0u8; 32];
    let label = [b'a'; MAX_LABEL_LEN + 1];
    let context = [0u8; 256];
    let expand = |label: &[u8], context: &[u8], out: &mut [u8]| {
        hkdf_expand_label(hash, LabelPrefix::Dtls13, &secret, label, context, out)
    };
    assert!(expand(&label[..MAX_LABEL_LEN], &context[..255], &mut out).is_ok());
    assert!(matches!(
        expand(&label, b"", &mut out),
        Err(Error::InvalidHkdfLabel { label_len: 250, .. })
    ));
    assert!(matches!(
        expand(b"", b"", &mut out),
        Err(Error::InvalidHkdfLabel { label_len: 0, .. })
    ));
    assert!(expand(b"k", b"", &mut out).is_ok());
    assert!(matches!(
        expand(b"key", &context, &mut out),
        Err(Error::InvalidHkdfLabel {
            context_len: 256,
            ..
        })
    ));
    let mut long = vec![0u8; 255 * 32 + 1];
    assert!(expand(b"key", b"", &mut long[..255 * 32]).is_ok());
    assert!(matches!(
        expand(b"key", b"", &mut long),
        Err(Error::InvalidHkdfLabel { out_len: 8161, .. })
    ));

    // The same bounds through the public derivations that take caller input.
    let master = EarlySecret::new(hash, LabelPrefix::Dtls13, None)
        .into_handshake_secret(None)
        .into_master_secret();
    let exporter = master.exporter_master_secret(&HandshakeHash::digest(hash, b""));
    assert!(exporter.export(&label, b"", &mut out).is_err());
    assert!(exporter.export(b"", b"", &mut out).is_err());
    assert!(exporter.export(b"EXPORTER-x", b"", &mut long).is_err());
    let resumption = master.resumption_master_secret(&HandshakeHash::digest(hash, b""));
    assert!(resumption.psk(&context[..255]).is_ok());
    assert!(resumption.psk(&context).is_err());
}

/// SHA-384 (TLS_AES_256_GCM_SHA384): every secret is 48 bytes, and each step is the formula
/// of RFC 8446 §7.1 evaluated by hand with HKDF.
#[test]
fn sha384_schedule_follows_the_formulas() {
    let hash = PrfHash::Sha384;
    let prefix = LabelPrefix::Dtls13;
    let expand_label = |secret: &[u8], label: &[u8], context: &[u8], len: usize| {
        let mut out = vec![0u8; len];
        hkdf_expand_label(hash, prefix, secret, label, context, &mut out).expect("in range");
        out
    };
    let empty = HandshakeHash::digest(hash, b"");
    let psk = [0x11; 48];
    let shared = SharedSecret::from_slice(&[0x22; 64]);
    let hello = HandshakeHash::digest(hash, b"client hello, server hello");

    let early = EarlySecret::new(hash, prefix, Some(&psk));
    let early_bytes = extract(hash, &[0; 48], &psk).as_ref().to_vec();
    assert_eq!(early.as_bytes(), early_bytes);
    assert_eq!(early.as_bytes().len(), 48);

    let derived = expand_label(&early_bytes, b"derived", empty.as_bytes(), 48);
    let handshake = early.into_handshake_secret(Some(&shared));
    let hs_bytes = extract(hash, &derived, shared.as_bytes()).as_ref().to_vec();
    assert_eq!(handshake.as_bytes(), hs_bytes);

    let client_hs = handshake.client_handshake_traffic_secret(&hello);
    assert_eq!(
        client_hs.as_bytes(),
        expand_label(&hs_bytes, b"c hs traffic", hello.as_bytes(), 48)
    );
    let keys = client_hs.traffic_keys(Aead::Aes256Gcm);
    assert_eq!(
        keys.key(),
        expand_label(client_hs.as_bytes(), b"key", b"", 32)
    );
    assert_eq!(
        keys.iv(),
        expand_label(client_hs.as_bytes(), b"iv", b"", 12)
    );
    assert_eq!(
        keys.sn_key(),
        expand_label(client_hs.as_bytes(), b"sn", b"", 32)
    );
    assert_eq!(keys.aead(), Aead::Aes256Gcm);

    let verify = client_hs.verify_data(&hello);
    let finished_key = expand_label(client_hs.as_bytes(), b"finished", b"", 48);
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA384, &finished_key),
        hello.as_bytes(),
    );
    assert_eq!(verify.as_bytes(), mac.as_ref());

    let derived = expand_label(&hs_bytes, b"derived", empty.as_bytes(), 48);
    let master = handshake.into_master_secret();
    let master_bytes = extract(hash, &derived, &[0; 48]).as_ref().to_vec();
    assert_eq!(master.as_bytes(), master_bytes);
}

#[test]
fn key_update_derives_the_next_secret() {
    let master = EarlySecret::new(PrfHash::Sha256, LabelPrefix::Dtls13, None)
        .into_handshake_secret(Some(&SharedSecret::from_slice(&[3; 32])))
        .into_master_secret();
    let secret0 =
        master.server_application_traffic_secret(&HandshakeHash::digest(PrfHash::Sha256, b"t"));
    let secret1 = secret0.next();
    let mut expected = [0u8; 32];
    hkdf_expand_label(
        PrfHash::Sha256,
        LabelPrefix::Dtls13,
        secret0.as_bytes(),
        b"traffic upd",
        b"",
        &mut expected,
    )
    .expect("in range");
    assert_eq!(secret1.as_bytes(), expected);
    let secret2 = secret1.next();
    assert_ne!(secret2.as_bytes(), secret1.as_bytes());
    // Keys move with the secret, and a duplicate derives the same keys.
    let k0 = secret0.traffic_keys(Aead::ChaCha20Poly1305);
    let k1 = secret1.traffic_keys(Aead::ChaCha20Poly1305);
    assert_ne!(k0.key(), k1.key());
    assert_ne!(k0.sn_key(), k1.sn_key());
    assert_eq!(k1.key().len(), 32);
    assert_eq!(k1.sn_key().len(), 32);
    assert_eq!(
        secret1
            .duplicate()
            .traffic_keys(Aead::ChaCha20Poly1305)
            .key(),
        k1.key()
    );
}

#[test]
fn exporter_follows_rfc8446_7_5() {
    let hash = PrfHash::Sha256;
    let master = EarlySecret::new(hash, LabelPrefix::Tls13, None)
        .into_handshake_secret(Some(&SharedSecret::from_slice(&[9; 32])))
        .into_master_secret();
    let exporter = master.exporter_master_secret(&HandshakeHash::digest(hash, b"transcript"));
    let mut out = [0u8; 40];
    exporter
        .export(b"EXPORTER-test", b"context", &mut out)
        .expect("in range");

    // HKDF-Expand-Label(Derive-Secret(Secret, label, ""), "exporter", Hash(context), L).
    let mut inner = [0u8; 32];
    hkdf_expand_label(
        hash,
        LabelPrefix::Tls13,
        exporter.as_bytes(),
        b"EXPORTER-test",
        HandshakeHash::digest(hash, b"").as_bytes(),
        &mut inner,
    )
    .expect("in range");
    let mut expected = [0u8; 40];
    hkdf_expand_label(
        hash,
        LabelPrefix::Tls13,
        &inner,
        b"exporter",
        HandshakeHash::digest(hash, b"context").as_bytes(),
        &mut expected,
    )
    .expect("in range");
    assert_eq!(out, expected);

    let mut other = [0u8; 40];
    exporter
        .export(b"EXPORTER-test", b"", &mut other)
        .expect("in range");
    assert_ne!(out, other);
    exporter
        .export(b"EXPORTER-other", b"context", &mut other)
        .expect("in range");
    assert_ne!(out, other);
}

#[test]
fn verify_data_comparison() {
    let secret = EarlySecret::new(PrfHash::Sha256, LabelPrefix::Dtls13, None)
        .into_handshake_secret(None)
        .server_handshake_traffic_secret(&HandshakeHash::digest(PrfHash::Sha256, b"h"));
    let verify = secret.verify_data(&HandshakeHash::digest(PrfHash::Sha256, b"m"));
    let mut bytes = verify.as_bytes().to_vec();
    assert!(verify.matches(&bytes));
    assert!(!verify.matches(&bytes[..31]));
    bytes[31] ^= 1;
    assert!(!verify.matches(&bytes));
    assert!(!verify.matches(b""));
}

#[test]
fn debug_output_redacts_secrets() {
    let psk = [0x42; 32];
    let early = EarlySecret::new(PrfHash::Sha256, LabelPrefix::Dtls13, Some(&psk));
    let hello = HandshakeHash::digest(PrfHash::Sha256, b"h");
    let traffic = early.client_early_traffic_secret(&hello);
    let keys = traffic.traffic_keys(Aead::Aes128Gcm);
    let resumption_psk = early
        .into_handshake_secret(None)
        .into_master_secret()
        .resumption_master_secret(&hello)
        .psk(b"n")
        .expect("short nonce");
    // The first bytes of each secret, as `Debug` of a slice and as hex would show them.
    let leaks: Vec<String> = [traffic.as_bytes(), keys.key(), resumption_psk.as_bytes()]
        .iter()
        .flat_map(|bytes| {
            let head = &bytes[..4];
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            [format!("{head:?}").trim_end_matches(']').to_owned(), hex]
        })
        .collect();
    for shown in [
        format!("{traffic:?}"),
        format!("{keys:?}"),
        format!("{resumption_psk:?}"),
    ] {
        assert!(shown.len() < 80, "{shown}");
        for leak in &leaks {
            assert!(!shown.contains(leak.as_str()), "{shown} shows {leak}");
        }
    }
}

/// Issue 18 (key material of a closed session is zeroized): every DTLS 1.3 secret of the
/// schedule, the traffic keys cut from it and a resumption PSK wipe themselves when
/// dropped. Checked without reading freed memory: each type's drop glue is the derive's
/// `zeroize` (`drop_zeroizes`), and `zeroize` on a canary leaves no byte of it (a key
/// field wrongly marked `#[zeroize(skip)]` would keep its canary).
#[test]
fn dtls13_secrets_and_traffic_keys_are_wiped_on_drop() {
    use crate::key_schedule::tests::{CANARY, drop_zeroizes, wiped};
    use zeroize::Zeroize;

    drop_zeroizes::<Secret>();
    drop_zeroizes::<TrafficKeys>();
    drop_zeroizes::<ResumptionPsk>();
    // The schedule's secrets are `Secret`s, their only field, dropped with them.
    let canary = || Secret::from_slice(PrfHash::Sha384, LabelPrefix::Dtls13, &[CANARY; 48]);
    let secrets = [
        EarlySecret(canary()).0,
        HandshakeSecret(canary()).0,
        MasterSecret(canary()).0,
        TrafficSecret(canary()).0,
        BinderKey(canary()).0,
        ExporterSecret(canary()).0,
        ResumptionMasterSecret(canary()).0,
    ];
    for mut secret in secrets {
        assert!(secret.as_bytes().iter().all(|b| *b == CANARY));
        secret.zeroize();
        assert!(wiped(secret.as_bytes()));
        // Only the hash and the label prefix (no secret) are skipped.
        assert_eq!(
            (secret.hash(), secret.prefix()),
            (PrfHash::Sha384, LabelPrefix::Dtls13)
        );
    }
    // Traffic keys as the engine cuts them for the data plane (and keeps for its own
    // records), from a canary secret: key, IV and sn_key all go.
    let mut keys = TrafficSecret(canary()).traffic_keys(Aead::Aes256Gcm);
    let cut: Vec<u8> = [keys.key(), keys.iv(), keys.sn_key()].concat();
    assert!(!wiped(&cut));
    keys.zeroize();
    for part in [keys.key(), keys.iv(), keys.sn_key()] {
        assert!(!part.is_empty() && wiped(part), "{part:?}");
    }
    assert_eq!(keys.aead(), Aead::Aes256Gcm);
    let mut psk = ResumptionPsk {
        bytes: [CANARY; MAX_HASH_LEN],
        len: 32,
    };
    psk.zeroize();
    assert!(wiped(psk.as_bytes()) && psk.as_bytes().len() == 32);
}
