//! Key-schedule tests. Expected values were computed independently with OpenSSL 3.0's
//! TLS1-PRF KDF (`openssl kdf -keylen N -kdfopt digest:SHA256 -kdfopt hexsecret:S
//! -kdfopt hexseed:<label ‖ seed> TLS1-PRF`), i.e. outside this crate's PRF code.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is valid hex"))
        .collect()
}

fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn master() -> MasterSecret {
    MasterSecret::from_bytes(counting(0))
}

const CLIENT_RANDOM: u8 = 0x10;
const SERVER_RANDOM: u8 = 0x40;

#[test]
fn standard_master_secret_kat() {
    let pms = PremasterSecret::from_shared_secret(&counting::<32>(100));
    let ms = MasterSecret::derive(
        PrfHash::Sha256,
        &pms,
        &counting(CLIENT_RANDOM),
        &counting(SERVER_RANDOM),
    );
    assert_eq!(
        ms.as_bytes().to_vec(),
        unhex(
            "cb10b93d669144bed26968b14cf5f46aada9a53159792279ff59f475c0837c5e\
             ecc5f86b931275c91232a0b89a7ad8eb"
        )
    );
}

#[test]
fn extended_master_secret_kat_and_differs_from_standard() {
    let pms = PremasterSecret::from_shared_secret(&counting::<32>(100));
    let session_hash: [u8; 32] = counting(200);
    let ems256 = MasterSecret::derive_extended(PrfHash::Sha256, &pms, &session_hash);
    assert_eq!(
        ems256.as_bytes().to_vec(),
        unhex(
            "df0cca988258b71ad0461f7ce2f9d79b23422b0358e189dd90c9d4f6a129a587\
             1d8c9aabb99dae094c7edbd1651ff9ad"
        )
    );
    let ems384 = MasterSecret::derive_extended(PrfHash::Sha384, &pms, &session_hash);
    assert_eq!(
        ems384.as_bytes().to_vec(),
        unhex(
            "8275de98e9ec7d153fc5a14610cccbe77d6a4566882064f9f6a5f4198299194e\
             3ce628a3e00ead249b2ad38d2b6901a9"
        )
    );
    let standard = MasterSecret::derive(
        PrfHash::Sha256,
        &pms,
        &counting(CLIENT_RANDOM),
        &counting(SERVER_RANDOM),
    );
    assert_ne!(standard.as_bytes(), ems256.as_bytes());
}

#[test]
fn key_expansion_kat_aes256_sha384() {
    let block = master().expand_keys(
        PrfHash::Sha384,
        KeyBlockShape::from(Aead::Aes256Gcm),
        &counting(CLIENT_RANDOM),
        &counting(SERVER_RANDOM),
    );
    let kb = unhex(
        "c32bae50c8ceeb712c7ca3a4849362f20bdd0dda68471e2bff78febfc07415e3\
         a1cf9f9e50315af3f3a0d999264540c2c0d96e27234424c75f9639d9545e6930\
         f86b37bc5f9df492",
    );
    assert_eq!(block.client_write_key(), &kb[..32]);
    assert_eq!(block.server_write_key(), &kb[32..64]);
    assert_eq!(block.client_write_iv(), &kb[64..68]);
    assert_eq!(block.server_write_iv(), &kb[68..72]);
}

#[test]
fn key_expansion_lengths_and_layout_per_aead() {
    for (aead, key_len, iv_len) in [
        (Aead::Aes128Gcm, 16, 4),
        (Aead::Aes256Gcm, 32, 4),
        (Aead::ChaCha20Poly1305, 32, 12),
    ] {
        let shape = KeyBlockShape::from(aead);
        assert_eq!((shape.key_len(), shape.fixed_iv_len()), (key_len, iv_len));
        let block = master().expand_keys(
            PrfHash::Sha256,
            shape,
            &counting(CLIENT_RANDOM),
            &counting(SERVER_RANDOM),
        );
        assert_eq!(block.shape(), shape);
        assert_eq!(block.client_write_key().len(), key_len);
        assert_eq!(block.server_write_key().len(), key_len);
        assert_eq!(block.client_write_iv().len(), iv_len);
        assert_eq!(block.server_write_iv().len(), iv_len);
        // The block is the PRF output cut in RFC 5246 §6.3 order (seed: server + client).
        let mut expected = vec![0u8; 2 * (key_len + iv_len)];
        prf(
            PrfHash::Sha256,
            &counting::<48>(0),
            b"key expansion",
            &[
                &counting::<32>(SERVER_RANDOM),
                &counting::<32>(CLIENT_RANDOM),
            ],
            &mut expected,
        );
        let joined: Vec<u8> = [
            block.client_write_key(),
            block.server_write_key(),
            block.client_write_iv(),
            block.server_write_iv(),
        ]
        .concat();
        assert_eq!(joined, expected);
    }
}

#[test]
fn finished_verify_data_kat_and_sides_differ() {
    let hash: [u8; 32] = counting(200);
    let client = master().verify_data(PrfHash::Sha256, Sender::Client, &hash);
    assert_eq!(client.to_vec(), unhex("0ff095e8999c17fe7bfa0bca"));
    let server = master().verify_data(PrfHash::Sha256, Sender::Server, &hash);
    assert_ne!(client, server);
    assert_eq!(server.len(), VERIFY_DATA_LEN);
}

#[test]
fn exporter_kats() {
    let ms = master();
    let (cr, sr) = (counting(CLIENT_RANDOM), counting(SERVER_RANDOM));
    let mut out = [0u8; 32];
    ms.export(
        PrfHash::Sha256,
        &cr,
        &sr,
        b"EXPERIMENTAL dtls",
        None,
        &mut out,
    )
    .expect("valid exporter input");
    assert_eq!(
        out.to_vec(),
        unhex("1d2476a031f23c7ac5aa9464a8b5e204a69c07e1e714a8a1aa35b5c5a7964533")
    );
    ms.export(
        PrfHash::Sha256,
        &cr,
        &sr,
        b"EXPERIMENTAL dtls",
        Some(b"abc"),
        &mut out,
    )
    .expect("valid exporter input");
    assert_eq!(
        out.to_vec(),
        unhex("a7c5602c768a0839c615d29d7cbc745525ebc978d45c5acb816308647a64c305")
    );
    // An empty context is not the same as no context (RFC 5705 §4).
    ms.export(
        PrfHash::Sha256,
        &cr,
        &sr,
        b"EXPERIMENTAL dtls",
        Some(b""),
        &mut out,
    )
    .expect("valid exporter input");
    assert_eq!(
        out.to_vec(),
        unhex("8b3475e85b05a862b3522237fe17de850ab8fe4965abe345a5ee28b867a177a9")
    );
    // The DTLS-SRTP label (RFC 5764 §4.2), SHA-384 suite, 40 bytes.
    let mut srtp = [0u8; 40];
    ms.export(
        PrfHash::Sha384,
        &cr,
        &sr,
        b"EXTRACTOR-dtls_srtp",
        None,
        &mut srtp,
    )
    .expect("valid exporter input");
    assert_eq!(
        srtp.to_vec(),
        unhex(
            "a99b06e8789a6dac2ee07473a9481229668df57fe6a8e064ba528483066acf3a\
             b1f82e806f91e792"
        )
    );
}

#[test]
fn exporter_rejects_reserved_labels_and_long_context() {
    let ms = master();
    let (cr, sr) = (counting(CLIENT_RANDOM), counting(SERVER_RANDOM));
    let mut out = [0u8; 16];
    for label in [
        &b"client finished"[..],
        b"server finished",
        b"master secret",
        b"extended master secret",
        b"key expansion",
    ] {
        assert!(matches!(
            ms.export(PrfHash::Sha256, &cr, &sr, label, None, &mut out),
            Err(Error::ReservedExporterLabel)
        ));
    }
    let long = vec![0u8; 65536];
    assert!(matches!(
        ms.export(
            PrfHash::Sha256,
            &cr,
            &sr,
            b"EXPERIMENTAL",
            Some(&long),
            &mut out
        ),
        Err(Error::ExporterContextTooLong { len: 65536 })
    ));
    assert!(
        ms.export(
            PrfHash::Sha256,
            &cr,
            &sr,
            b"EXPERIMENTAL",
            Some(&long[..65535]),
            &mut out
        )
        .is_ok()
    );
}

#[test]
fn duplicate_is_an_equal_independent_copy() {
    let ms = master();
    let copy = ms.duplicate();
    assert_eq!(ms.as_bytes(), copy.as_bytes());
    drop(ms);
    assert_eq!(copy.as_bytes(), &counting::<48>(0));
}

#[test]
fn debug_output_is_redacted() {
    let ms = MasterSecret::from_bytes([0xab; 48]);
    assert_eq!(format!("{ms:?}"), "MasterSecret(<redacted>)");
    let block = ms.expand_keys(
        PrfHash::Sha256,
        KeyBlockShape::from(Aead::Aes128Gcm),
        &[0; 32],
        &[0; 32],
    );
    let shown = format!("{block:?}");
    assert!(shown.starts_with("KeyBlock"), "{shown}");
    assert!(!shown.contains("client_write_key"), "{shown}");
}

#[test]
fn record_keys_follow_roles_and_reject_wrong_aead() {
    use dataplane::record::{ContentType, DTLS_1_2, Opener, ReplayWindow, Sealer};
    for aead in Aead::ALL {
        let expand = || {
            master().expand_keys(
                PrfHash::Sha256,
                KeyBlockShape::from(aead),
                &counting(CLIENT_RANDOM),
                &counting(SERVER_RANDOM),
            )
        };
        let (client_block, server_block) = (expand(), expand());
        let (client_write, _) = client_block
            .record_keys(aead, Sender::Client)
            .expect("shape matches");
        let (_, server_read) = server_block
            .record_keys(aead, Sender::Server)
            .expect("shape matches");
        // What the client seals, the server opens.
        let mut sealer = Sealer::new(1, client_write, 0).expect("fresh sequence space");
        let mut opener = Opener::new(1, server_read, ReplayWindow::new(64));
        let mut record = vec![0u8; 64];
        let offset = sealer.plaintext_offset();
        record[offset..offset + 5].copy_from_slice(b"hello");
        let len = sealer
            .seal(ContentType::ApplicationData, DTLS_1_2, &mut record, 5)
            .expect("seal");
        let opened = opener.open(&mut record[..len]).expect("open");
        assert_eq!(opened.plaintext, b"hello");
    }
    let block = master().expand_keys(
        PrfHash::Sha256,
        KeyBlockShape::from(Aead::Aes128Gcm),
        &counting(CLIENT_RANDOM),
        &counting(SERVER_RANDOM),
    );
    assert!(matches!(
        block.client_record_key(Aead::ChaCha20Poly1305),
        Err(Error::RecordKey { .. })
    ));
}

// ----- zeroized on drop (issue 18: key material of a closed session) -----

/// A canary key byte: any byte of it left after zeroizing is key material that survived.
pub(crate) const CANARY: u8 = 0xa5;

/// `T`'s drop glue zeroizes it: `ZeroizeOnDrop` (the derive implements it together with a
/// `Drop` that calls `zeroize`), and `T` needs dropping although it holds only plain bytes,
/// so that `Drop` exists (a marker impl without it would leave `needs_drop` false).
pub(crate) fn drop_zeroizes<T: zeroize::ZeroizeOnDrop + Zeroize>() {
    assert!(
        std::mem::needs_drop::<T>(),
        "{} has no Drop: nothing wipes it",
        std::any::type_name::<T>()
    );
}

/// Whether `bytes` hold no canary byte and are all zero.
pub(crate) fn wiped(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

#[test]
fn dtls12_master_secret_and_key_block_are_wiped_on_drop() {
    drop_zeroizes::<MasterSecret>();
    drop_zeroizes::<KeyBlock>();
    // What the derived `Drop` runs, on a canary: every secret byte goes.
    let mut master = MasterSecret::from_bytes([CANARY; MASTER_SECRET_LEN]);
    assert!(master.as_bytes().iter().all(|b| *b == CANARY));
    master.zeroize();
    assert!(wiped(master.as_bytes()));
    let shape = KeyBlockShape::from(Aead::ChaCha20Poly1305);
    let mut block = KeyBlock {
        shape,
        client_write_key: [CANARY; MAX_KEY_LEN],
        server_write_key: [CANARY; MAX_KEY_LEN],
        client_write_iv: [CANARY; MAX_FIXED_IV_LEN],
        server_write_iv: [CANARY; MAX_FIXED_IV_LEN],
    };
    block.zeroize();
    for part in [
        block.client_write_key(),
        block.server_write_key(),
        block.client_write_iv(),
        block.server_write_iv(),
    ] {
        assert!(!part.is_empty() && wiped(part), "{part:?}");
    }
    // Only the shape (no secret) is skipped.
    assert_eq!(block.shape(), shape);
}
