//! QUIC-LB connection IDs: the test vectors of draft-ietf-quic-load-balancers-21 (Appendix B,
//! "Load Balancer Test Vectors", and the §5.4.2.4 encryption example), round trips over every
//! server ID / nonce length, garbage decoding, the (node, shard) layout and refused inputs.
//!
//! The vectors were read from the draft's source, draft-ietf-quic-load-balancers.md at tag
//! draft-ietf-quic-load-balancers-21 of github.com/quicwg/load-balancers.

use dataplane::cid::{
    CidError, CidOwner, ConfigId, ConnectionId, FirstOctetBits, MAX_PLAINTEXT_LEN, QuicLbConfig,
    QuicLbConfigs, ServerId, ServerIdLayout,
};
use proptest::prelude::*;

/// Appendix B.2: "The key for all of these examples".
const VECTOR_KEY: &str = "8f95f09245765f80256934e50c66207f";

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

fn key(s: &str) -> [u8; 16] {
    hex(s).try_into().expect("16-octet key")
}

fn config_id(id: u8) -> ConfigId {
    ConfigId::new(id).expect("codepoint 0..=6")
}

/// Encodes `sid` and `nonce` and expects `cid`; decodes `cid` and expects both back.
/// "In all cases, the server is configured to encode the CID length" (Appendix B).
fn check_vector(cr: u8, sid: &str, nonce: &str, key_hex: Option<&str>, cid: &str) {
    let (sid, nonce, cid) = (hex(sid), hex(nonce), hex(cid));
    let config = match key_hex {
        None => QuicLbConfig::plaintext(
            config_id(cr),
            sid.len(),
            nonce.len(),
            FirstOctetBits::CidLength,
        ),
        Some(k) => QuicLbConfig::encrypted(
            config_id(cr),
            sid.len(),
            nonce.len(),
            FirstOctetBits::CidLength,
            &key(k),
        ),
    }
    .expect("vector configuration");
    assert_eq!(config.is_encrypted(), key_hex.is_some());

    let encoded = config.encode(&sid, &nonce, 0).expect("encode");
    assert_eq!(encoded.as_bytes(), &cid[..], "encode {sid:02x?}");
    assert_eq!(encoded.config_id(), Some(config_id(cr)));
    assert_eq!(config.cid_len(), cid.len());

    let decoded = config.decode(&cid).expect("vector decodes");
    assert_eq!(decoded.config_id(), config_id(cr));
    assert_eq!(decoded.server_id().as_bytes(), &sid[..]);
    assert_eq!(decoded.nonce(), &nonce[..]);
    let server_id = config.decode_server_id(&cid).expect("vector decodes");
    assert_eq!(server_id.as_bytes(), &sid[..]);
}

/// Appendix B.1, first row.
#[test]
fn unencrypted_vector_config_0() {
    check_vector(0, "c4605e", "4504cc4f", None, "07c4605e4504cc4f");
}

/// Appendix B.1, second row, as reconstructed. The draft prints it as
/// `1 350d28b420 3487d970b 20a350d28b4203487d970b`: a nonce of nine hex digits for a 5-octet
/// nonce, and a CID whose first octet cannot be 0x20 (config 1 with the length self-encoded
/// is 0x20 | 10 = 0x2a). Reading each nonce octet as printed without its leading zero, the
/// only 5-octet split of "3487d970b" is 34 87 d9 70 0b; the CID is then 0x2a, the server ID
/// and that nonce.
#[test]
fn unencrypted_vector_config_1_reconstructed() {
    check_vector(
        1,
        "350d28b420",
        "3487d9700b",
        None,
        "2a350d28b4203487d9700b",
    );
}

/// Appendix B.2, first row: four passes, odd length (7), server ID shorter than the nonce.
#[test]
fn encrypted_vector_four_pass_odd_length() {
    check_vector(
        0,
        "ed793a",
        "ee080dbf",
        Some(VECTOR_KEY),
        "0720b1d07b359d3c",
    );
}

/// Appendix B.2, second row: four passes with a 10-octet server ID and a 5-octet nonce, so
/// decoding the server ID needs the fourth pass.
#[test]
fn encrypted_vector_four_pass_long_server_id() {
    check_vector(
        1,
        "ed793a51d49b8f5fab65",
        "ee080dbf48",
        Some(VECTOR_KEY),
        "2fcc381bc74cb4fbad2823a3d1f8fed2",
    );
}

/// Appendix B.2, third row: 8 + 8 octets, the single-pass case.
#[test]
fn encrypted_vector_single_pass() {
    check_vector(
        2,
        "ed793a51d49b8f5f",
        "ee080dbf48c0d1e5",
        Some(VECTOR_KEY),
        "504dd2d05a7b0de9b2b9907afb5ecf8cc3",
    );
}

/// Appendix B.2, fourth row: four passes over 18 octets. The draft labels the row cr_bits 3,
/// but its first octet 0x12 carries codepoint 0 (0x12 >> 5) and length 18; the rest of the CID
/// does not depend on the codepoint, so the row is checked as codepoint 0, and as codepoint 3
/// with the first octet that codepoint gives (0x72).
#[test]
fn encrypted_vector_four_pass_even_length() {
    let (sid, nonce) = ("ed793a51d49b8f5fab", "ee080dbf48c0d1e55d");
    let rest = "5779c9cc86beb3a3a4a3ca96fce4bfe0cdbc";
    check_vector(0, sid, nonce, Some(VECTOR_KEY), &format!("12{rest}"));
    check_vector(3, sid, nonce, Some(VECTOR_KEY), &format!("72{rest}"));
}

/// §5.4.2.4 "Encryption Example": its own key, a 3-octet server ID and a 4-octet nonce.
#[test]
fn encryption_example_of_section_5_4_2_4() {
    check_vector(
        0,
        "31441a",
        "9c69c275",
        Some("fdf726a9893ec05c0632d3956680baf0"),
        "0767947d29be054a",
    );
}

/// One set of configurations decodes the vectors of three codepoints, each with its own.
#[test]
fn config_set_picks_the_configuration_by_first_octet() {
    let k = key(VECTOR_KEY);
    let mut configs = QuicLbConfigs::new();
    for (cr, sid_len, nonce_len) in [(0, 3, 4), (1, 10, 5), (2, 8, 8)] {
        let config = QuicLbConfig::encrypted(
            config_id(cr),
            sid_len,
            nonce_len,
            FirstOctetBits::CidLength,
            &k,
        )
        .expect("config");
        assert!(configs.insert(config).is_none());
    }
    for (cid, sid) in [
        ("0720b1d07b359d3c", "ed793a"),
        ("2fcc381bc74cb4fbad2823a3d1f8fed2", "ed793a51d49b8f5fab65"),
        ("504dd2d05a7b0de9b2b9907afb5ecf8cc3", "ed793a51d49b8f5f"),
    ] {
        let (id, server_id) = configs.decode_server_id(&hex(cid)).expect("routable");
        assert_eq!(server_id.as_bytes(), &hex(sid)[..]);
        assert_eq!(Some(id), ConfigId::of_first_octet(hex(cid)[0]));
        assert_eq!(
            configs.decode(&hex(cid)).map(|p| p.server_id()),
            Some(server_id)
        );
    }
    // Codepoint 3 is empty; 0b111 is never routable.
    assert!(
        configs
            .decode(&hex("72ed793a51d49b8f5fabee080dbf48c0d1"))
            .is_none()
    );
    assert!(configs.decode(&hex("e7ed793aee080dbf")).is_none());
    assert!(configs.decode(&[]).is_none());

    // Rotation: a new configuration at codepoint 0 replaces the old one.
    let replacement =
        QuicLbConfig::plaintext(config_id(0), 3, 4, FirstOctetBits::CidLength).expect("config");
    let old = configs.insert(replacement).expect("codepoint 0 was in use");
    assert!(old.is_encrypted());
    assert_eq!(
        configs
            .decode_server_id(&hex("07c4605e4504cc4f"))
            .map(|(_, s)| s),
        Some(ServerId::new(&hex("c4605e")).expect("sid"))
    );
    assert!(configs.remove(config_id(0)).is_some());
    assert!(configs.get(config_id(0)).is_none());
    assert!(configs.decode(&hex("07c4605e4504cc4f")).is_none());
}

/// Every valid (server ID length, nonce length): `(sid_len, nonce_len)`.
fn all_lengths() -> impl Iterator<Item = (usize, usize)> {
    (1..=15).flat_map(|s| (4..=18).map(move |n| (s, n)).filter(|&(s, n)| s + n <= 19))
}

fn config(sid_len: usize, nonce_len: usize, encrypted: bool, bits: FirstOctetBits) -> QuicLbConfig {
    let id = config_id(((sid_len + nonce_len) % 7) as u8);
    if encrypted {
        QuicLbConfig::encrypted(id, sid_len, nonce_len, bits, &[0x5a; 16])
    } else {
        QuicLbConfig::plaintext(id, sid_len, nonce_len, bits)
    }
    .expect("valid lengths")
}

/// Encodes and decodes one CID, checking every accessor.
fn round_trip(config: &QuicLbConfig, sid: &[u8], nonce: &[u8], random_bits: u8) -> ConnectionId {
    let cid = config.encode(sid, nonce, random_bits).expect("encode");
    let bytes = cid.as_bytes();
    assert_eq!(bytes.len(), 1 + sid.len() + nonce.len());
    assert_eq!(bytes[0] >> 5, config.config_id().value());
    assert_eq!(cid.config_id(), Some(config.config_id()));
    if !config.is_encrypted() {
        assert_eq!(&bytes[1..=sid.len()], sid);
        assert_eq!(&bytes[1 + sid.len()..], nonce);
    }
    let plaintext = config.decode(bytes).expect("own CID decodes");
    assert_eq!(plaintext.config_id(), config.config_id());
    assert_eq!(plaintext.server_id().as_bytes(), sid);
    assert_eq!(plaintext.nonce(), nonce);
    assert_eq!(
        config
            .decode_server_id(bytes)
            .map(|s| s.as_bytes().to_vec()),
        Some(sid.to_vec())
    );
    // Octets appended after the CID are ignored (§5.5 reads from the second octet on).
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(&[0xff; 3]);
    assert_eq!(config.decode(&longer), Some(plaintext));
    // One octet short is unroutable.
    assert!(config.decode(&bytes[..bytes.len() - 1]).is_none());
    assert!(config.decode_server_id(&bytes[..bytes.len() - 1]).is_none());
    cid
}

/// Every server ID / nonce length, plaintext and encrypted, with the length self-encoded and
/// with random low bits.
#[test]
fn round_trip_every_length_combination() {
    let mut combinations = 0;
    for (sid_len, nonce_len) in all_lengths() {
        let sid: Vec<u8> = (0..sid_len as u8).map(|i| 0x80 | i).collect();
        let nonce: Vec<u8> = (0..nonce_len as u8).map(|i| i.wrapping_mul(29)).collect();
        for encrypted in [false, true] {
            let with_len = config(sid_len, nonce_len, encrypted, FirstOctetBits::CidLength);
            let cid = round_trip(&with_len, &sid, &nonce, 0x1f);
            assert_eq!(cid.as_bytes()[0] & 0x1f, (sid_len + nonce_len) as u8);

            let random = config(sid_len, nonce_len, encrypted, FirstOctetBits::Random);
            let cid = round_trip(&random, &sid, &nonce, 0xf3);
            assert_eq!(cid.as_bytes()[0] & 0x1f, 0x13);
            combinations += 1;
        }
    }
    // 15 server ID lengths; for length s, nonces 4..=19-s.
    assert_eq!(combinations, 2 * (1..=15).map(|s| 16 - s).sum::<usize>());
}

/// Encryption hides the server ID: two nonces give CIDs that differ beyond the first octet,
/// including where the server ID would sit.
#[test]
fn encrypted_cids_of_one_server_differ() {
    for (sid_len, nonce_len) in all_lengths() {
        let config = config(sid_len, nonce_len, true, FirstOctetBits::CidLength);
        let sid = vec![0x11; sid_len];
        let a = config.encode(&sid, &vec![0; nonce_len], 0).expect("encode");
        let b = config.encode(&sid, &vec![1; nonce_len], 0).expect("encode");
        assert_ne!(
            a.as_bytes()[1..=sid_len],
            b.as_bytes()[1..=sid_len],
            "{sid_len}+{nonce_len}"
        );
        assert_ne!(&a.as_bytes()[1..=sid_len], &sid[..]);
    }
}

#[test]
fn decode_refuses_what_it_cannot_route() {
    let config = QuicLbConfig::encrypted(
        config_id(0),
        3,
        4,
        FirstOctetBits::CidLength,
        &key(VECTOR_KEY),
    )
    .expect("config");
    let cid = hex("0720b1d07b359d3c");
    assert!(config.decode(&cid).is_some());
    // Another codepoint, the reserved codepoint, empty, short.
    let mut other = cid.clone();
    other[0] = 0x27;
    assert!(config.decode(&other).is_none());
    other[0] = 0xe7;
    assert!(config.decode(&other).is_none());
    assert!(config.decode(&[]).is_none());
    assert!(config.decode(&cid[..7]).is_none());
    // The first octet claims fewer octets than the configuration needs (§4.1).
    other[0] = 0x06;
    assert!(config.decode(&other).is_none());
    assert!(config.decode_server_id(&other).is_none());
    // Without length self-description the low bits are not checked.
    let random =
        QuicLbConfig::encrypted(config_id(0), 3, 4, FirstOctetBits::Random, &key(VECTOR_KEY))
            .expect("config");
    assert_eq!(
        random
            .decode_server_id(&other)
            .map(|s| s.as_bytes().to_vec()),
        Some(hex("ed793a"))
    );
}

#[test]
fn unroutable_cids_use_the_reserved_codepoint() {
    let random = [0x3c; 9];
    let cid = ConnectionId::unroutable(&random).expect("9 random octets");
    assert_eq!(cid.as_bytes()[0], 0b1110_0000 | 9);
    assert_eq!(&cid.as_bytes()[1..], &random);
    assert_eq!(cid.config_id(), None);
    assert_eq!(ConfigId::of_first_octet(cid.as_bytes()[0]), None);
    assert_eq!(
        ConnectionId::unroutable(&[0; 6]),
        Err(CidError::UnroutableLength(6))
    );
    assert_eq!(
        ConnectionId::unroutable(&[0; 20]),
        Err(CidError::UnroutableLength(20))
    );
    assert!(ConnectionId::unroutable(&[0; 19]).is_ok());
}

#[test]
fn configuration_errors() {
    assert_eq!(ConfigId::new(7), Err(CidError::ConfigId(7)));
    assert_eq!(ConfigId::new(255), Err(CidError::ConfigId(255)));
    assert_eq!(ConfigId::new(6).map(ConfigId::value), Ok(6));
    let id = config_id(0);
    let bits = FirstOctetBits::CidLength;
    let plain = |s, n| QuicLbConfig::plaintext(id, s, n, bits).map(|_| ());
    let keyed = |s, n| QuicLbConfig::encrypted(id, s, n, bits, &[0; 16]).map(|_| ());
    for build in [
        &plain as &dyn Fn(usize, usize) -> Result<(), CidError>,
        &keyed,
    ] {
        assert_eq!(build(0, 4), Err(CidError::ServerIdLength(0)));
        assert_eq!(build(16, 4), Err(CidError::ServerIdLength(16)));
        assert_eq!(build(1, 3), Err(CidError::NonceLength(3)));
        assert_eq!(build(1, 19), Err(CidError::NonceLength(19)));
        assert_eq!(
            build(15, 5),
            Err(CidError::PlaintextLength {
                server_id_len: 15,
                nonce_len: 5
            })
        );
        assert_eq!(
            build(2, 18),
            Err(CidError::PlaintextLength {
                server_id_len: 2,
                nonce_len: 18
            })
        );
        assert_eq!(build(15, 4), Ok(()));
        assert_eq!(build(1, 18), Ok(()));
    }
    assert_eq!(ServerId::new(&[]), Err(CidError::ServerIdLength(0)));
    assert_eq!(ServerId::new(&[0; 16]), Err(CidError::ServerIdLength(16)));

    let config = QuicLbConfig::plaintext(id, 3, 4, bits).expect("config");
    assert_eq!(
        config.encode(&[1, 2], &[0; 4], 0),
        Err(CidError::WrongServerIdLength {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        config.encode(&[1, 2, 3], &[0; 5], 0),
        Err(CidError::WrongNonceLength {
            expected: 4,
            got: 5
        })
    );
}

/// Shards share one set of configurations (behind an `Arc`) and decode from many threads.
#[test]
fn configurations_are_shareable_across_shards() {
    fn shareable<T: Send + Sync>() {}
    shareable::<QuicLbConfig>();
    shareable::<QuicLbConfigs>();

    let config = QuicLbConfig::encrypted(
        config_id(0),
        3,
        4,
        FirstOctetBits::CidLength,
        &key(VECTOR_KEY),
    )
    .expect("config");
    let cid = hex("0720b1d07b359d3c");
    std::thread::scope(|scope| {
        let decoders: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| config.decode_server_id(&cid)))
            .collect();
        for decoder in decoders {
            let sid = decoder.join().expect("decoder thread");
            assert_eq!(sid.map(|s| s.as_bytes().to_vec()), Some(hex("ed793a")));
        }
    });
}

#[test]
fn debug_shows_no_key() {
    let config = QuicLbConfig::encrypted(
        config_id(2),
        8,
        8,
        FirstOctetBits::CidLength,
        &key(VECTOR_KEY),
    )
    .expect("config");
    let shown = format!("{config:?}");
    assert!(shown.contains("single-pass"), "{shown}");
    assert!(!shown.to_lowercase().contains("8f95"), "{shown}");
}

#[test]
fn layout_packs_node_then_shard_then_zeros() {
    let layout = ServerIdLayout::new(3, 12, 8).expect("20 bits in 24");
    let sid = layout
        .pack(CidOwner {
            node: 0xabc,
            shard: 0x5d,
        })
        .expect("fits");
    // node 0xabc (12 bits), shard 0x5d (8 bits), 4 zero bits.
    assert_eq!(sid.as_bytes(), &[0xab, 0xc5, 0xd0]);
    assert_eq!(
        layout.unpack(&sid),
        Some(CidOwner {
            node: 0xabc,
            shard: 0x5d
        })
    );
    // Stray bits in the unused tail, or another length: not one of ours.
    assert_eq!(
        layout.unpack(&ServerId::new(&[0xab, 0xc5, 0xd1]).expect("sid")),
        None
    );
    assert_eq!(
        layout.unpack(&ServerId::new(&[0xab, 0xc5]).expect("sid")),
        None
    );
}

#[test]
fn layout_errors() {
    assert_eq!(
        ServerIdLayout::new(0, 1, 1),
        Err(CidError::ServerIdLength(0))
    );
    assert_eq!(
        ServerIdLayout::new(16, 1, 1),
        Err(CidError::ServerIdLength(16))
    );
    assert_eq!(
        ServerIdLayout::new(2, 9, 8),
        Err(CidError::LayoutWidth {
            server_id_len: 2,
            node_bits: 9,
            shard_bits: 8
        })
    );
    assert_eq!(
        ServerIdLayout::new(15, 33, 8),
        Err(CidError::LayoutWidth {
            server_id_len: 15,
            node_bits: 33,
            shard_bits: 8
        })
    );
    assert_eq!(
        ServerIdLayout::new(15, 8, 17),
        Err(CidError::LayoutWidth {
            server_id_len: 15,
            node_bits: 8,
            shard_bits: 17
        })
    );
    let layout = ServerIdLayout::new(2, 10, 6).expect("16 bits");
    assert_eq!(
        layout.pack(CidOwner {
            node: 1024,
            shard: 0
        }),
        Err(CidError::NodeOutOfRange {
            node: 1024,
            bits: 10
        })
    );
    assert_eq!(
        layout.pack(CidOwner { node: 0, shard: 64 }),
        Err(CidError::ShardOutOfRange { shard: 64, bits: 6 })
    );
    let single = ServerIdLayout::new(1, 0, 0).expect("no bits: one node, one shard");
    let sid = single
        .pack(CidOwner { node: 0, shard: 0 })
        .expect("zero fits");
    assert_eq!(sid.as_bytes(), &[0]);
    assert!(single.pack(CidOwner { node: 1, shard: 0 }).is_err());
    let widest = ServerIdLayout::new(6, 32, 16).expect("48 bits");
    let owner = CidOwner {
        node: u32::MAX,
        shard: u16::MAX,
    };
    assert_eq!(
        widest.unpack(&widest.pack(owner).expect("fits")),
        Some(owner)
    );
}

/// A valid (server ID length, nonce length) and the octets of each.
fn lengths_and_octets() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (1usize..=15)
        .prop_flat_map(|s| (Just(s), 4usize..=(MAX_PLAINTEXT_LEN - s)))
        .prop_flat_map(|(s, n)| {
            (
                proptest::collection::vec(any::<u8>(), s),
                proptest::collection::vec(any::<u8>(), n),
            )
        })
}

/// A layout (server ID length, node bits, shard bits) and an owner that fits it.
fn layout_and_owner() -> impl Strategy<Value = (ServerIdLayout, CidOwner)> {
    (1usize..=15, 0u32..=32, 0u32..=16)
        .prop_filter("fits the server ID", |&(s, n, h)| n + h <= 8 * s as u32)
        .prop_flat_map(|(s, n, h)| {
            let layout = ServerIdLayout::new(s, n, h).expect("filtered to fit");
            let node_max = if n == 32 { u32::MAX } else { (1 << n) - 1 };
            let shard_max = if h == 16 { u16::MAX } else { (1 << h) - 1 };
            (Just(layout), 0..=node_max, 0..=shard_max)
                .prop_map(|(layout, node, shard)| (layout, CidOwner { node, shard }))
        })
}

proptest! {
    #[test]
    fn encode_decode_round_trip(
        (sid, nonce) in lengths_and_octets(),
        encrypted in any::<bool>(),
        key in any::<[u8; 16]>(),
        cr in 0u8..7,
        random_bits in any::<u8>(),
    ) {
        let config = if encrypted {
            QuicLbConfig::encrypted(config_id(cr), sid.len(), nonce.len(), FirstOctetBits::Random, &key)
        } else {
            QuicLbConfig::plaintext(config_id(cr), sid.len(), nonce.len(), FirstOctetBits::Random)
        }.expect("valid lengths");
        let cid = round_trip(&config, &sid, &nonce, random_bits);
        prop_assert_eq!(cid.as_bytes()[0], cr << 5 | (random_bits & 0x1f));
    }

    /// Whatever the octets, decoding returns or refuses without panicking; whatever it
    /// accepts encodes back to the same octets (the mapping is a bijection per configuration).
    #[test]
    fn decode_of_garbage_never_panics(
        cid in proptest::collection::vec(any::<u8>(), 0..=24),
        (sid_len, nonce_len) in (1usize..=15).prop_flat_map(|s| (Just(s), 4usize..=(MAX_PLAINTEXT_LEN - s))),
        mode in 0u8..3,
        bits in prop_oneof![Just(FirstOctetBits::CidLength), Just(FirstOctetBits::Random)],
    ) {
        let id = config_id(cid.first().map_or(0, |b| (b >> 5) % 7));
        let config = match mode {
            0 => QuicLbConfig::plaintext(id, sid_len, nonce_len, bits),
            _ => QuicLbConfig::encrypted(id, sid_len, nonce_len, bits, &[mode; 16]),
        }.expect("valid lengths");
        let decoded = config.decode(&cid);
        prop_assert_eq!(
            decoded.map(|p| p.server_id()),
            config.decode_server_id(&cid)
        );
        if let Some(plaintext) = decoded {
            let again = config
                .encode(plaintext.server_id().as_bytes(), plaintext.nonce(), cid[0])
                .expect("decoded lengths are the configuration's");
            let len = config.cid_len();
            prop_assert_eq!(&again.as_bytes()[1..], &cid[1..len]);
            if bits == FirstOctetBits::Random {
                prop_assert_eq!(again.as_bytes()[0], cid[0]);
            }
        }
        let mut configs = QuicLbConfigs::new();
        configs.insert(config);
        let _ = configs.decode(&cid);
        let _ = configs.decode_server_id(&cid);
    }

    #[test]
    fn layout_round_trip((layout, owner) in layout_and_owner()) {
        let sid = layout.pack(owner).expect("owner fits");
        prop_assert_eq!(sid.as_bytes().len(), layout.server_id_len());
        prop_assert_eq!(layout.unpack(&sid), Some(owner));
    }

    /// Owner to CID to owner, through an encrypted configuration.
    #[test]
    fn owner_survives_an_encrypted_cid(
        (layout, owner) in layout_and_owner(),
        key in any::<[u8; 16]>(),
        nonce_seed in any::<u8>(),
    ) {
        let nonce_len = (MAX_PLAINTEXT_LEN - layout.server_id_len()).min(8);
        let config = QuicLbConfig::encrypted(
            config_id(1), layout.server_id_len(), nonce_len, FirstOctetBits::CidLength, &key,
        ).expect("valid lengths");
        let sid = layout.pack(owner).expect("owner fits");
        let nonce: Vec<u8> = (0..nonce_len as u8).map(|i| i ^ nonce_seed).collect();
        let cid = config.encode(sid.as_bytes(), &nonce, 0).expect("encode");
        let decoded = config.decode_server_id(cid.as_bytes()).expect("own CID");
        prop_assert_eq!(layout.unpack(&decoded), Some(owner));
    }
}
