//! Property tests: no parser panics on any input, parse→emit→parse round trips, and
//! reassembly of shuffled, overlapping, duplicated fragments yields the original.

use proptest::collection::vec;
use proptest::prelude::*;
use std::sync::Arc;

use crate::*;

const KXS: [Option<KeyExchange>; 5] = [
    None,
    Some(KeyExchange::EcdheEcdsa),
    Some(KeyExchange::EcdheRsa),
    Some(KeyExchange::Psk),
    Some(KeyExchange::EcdhePsk),
];

/// Whatever parses must re-encode to something that parses back to the same value.
fn check_message_round_trip(msg_type: HandshakeType, data: &[u8], kx: Option<KeyExchange>) {
    if let Ok(m) = HandshakeMessage::parse(msg_type, data, kx) {
        let mut out = Vec::new();
        if m.emit(&mut out).is_ok() {
            assert_eq!(HandshakeMessage::parse(msg_type, &out, kx), Ok(m));
        } else {
            // The only parseable-but-not-emittable value: a server_name list without a
            // host_name.
            let ext = match &m {
                HandshakeMessage::ClientHello(ch) => &ch.extensions,
                HandshakeMessage::ServerHello(sh) => &sh.extensions,
                other => panic!("{other:?} parsed but does not emit"),
            };
            assert_eq!(ext.server_name, Some(ServerName::OtherTypesOnly));
        }
    }
}

fn ext_strategy() -> impl Strategy<Value = Extensions> {
    let host = proptest::option::of("[a-z0-9.-]{1,40}");
    let groups = proptest::option::of(vec(any::<u16>(), 1..20));
    let schemes = proptest::option::of(vec(any::<u16>(), 1..20));
    let alpn = proptest::option::of(vec(vec(any::<u8>(), 1..20), 1..5));
    let srtp = proptest::option::of((vec(any::<u16>(), 1..6), vec(any::<u8>(), 0..10)));
    let misc = (
        any::<bool>(),
        proptest::option::of(vec(any::<u8>(), 0..40)),
        proptest::option::of(vec(any::<u8>(), 0..40)),
        proptest::option::of(1u8..=2),
        vec((0x2000u16..0x3000, vec(any::<u8>(), 0..20)), 0..4),
    );
    (host, groups, schemes, alpn, srtp, misc).prop_map(
        |(host, groups, schemes, alpn, srtp, (ems, ticket, reneg, hb, other))| {
            let mut other = other;
            other.sort_by_key(|(t, _)| *t);
            other.dedup_by_key(|(t, _)| *t);
            Extensions {
                server_name: host.map(ServerName::HostName),
                supported_groups: groups.map(|g| g.into_iter().map(NamedGroup::from_u16).collect()),
                ec_point_formats: Some(vec![0, 1]),
                signature_algorithms: schemes
                    .map(|s| s.into_iter().map(SignatureScheme::from_u16).collect()),
                use_srtp: srtp.map(|(p, mki)| UseSrtp {
                    profiles: p.into_iter().map(SrtpProtectionProfile::from_u16).collect(),
                    mki,
                }),
                heartbeat: hb.map(HeartbeatMode::from_u8),
                alpn,
                extended_master_secret: ems,
                session_ticket: ticket,
                renegotiation_info: reneg,
                other: other
                    .into_iter()
                    .map(|(t, data)| RawExtension {
                        ext_type: ExtensionType::from_u16(t),
                        data,
                    })
                    .collect(),
            }
        },
    )
}

fn client_hello_strategy() -> impl Strategy<Value = ClientHello> {
    (
        any::<u16>(),
        any::<[u8; 32]>(),
        vec(any::<u8>(), 0..=32),
        vec(any::<u8>(), 0..=255),
        vec(any::<u16>(), 1..40),
        vec(any::<u8>(), 0..5),
        ext_strategy(),
    )
        .prop_map(
            |(v, random, session_id, cookie, suites, comp, extensions)| {
                let mut compression_methods = vec![COMPRESSION_NULL];
                compression_methods.extend(comp);
                ClientHello {
                    client_version: ProtocolVersion::from_u16(v),
                    random,
                    session_id,
                    cookie,
                    cipher_suites: suites.into_iter().map(CipherSuite::from_u16).collect(),
                    compression_methods,
                    extensions,
                }
            },
        )
}

/// A small deterministic generator for shuffling inside a property.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn message_parsers_never_panic(t in any::<u8>(), data in vec(any::<u8>(), 0..400)) {
        for kx in KXS {
            check_message_round_trip(HandshakeType::from_u8(t), &data, kx);
        }
        let _ = Extensions::parse(&data);
        let _ = HeartbeatMessage::parse(&data);
        let _ = Alert::parse(&data);
        let _ = ChangeCipherSpec::parse(&data);
        for (repr, bytes) in HandshakeFragments::new(&data).flatten() {
            prop_assert_eq!(bytes.len(), repr.fragment_length as usize);
            prop_assert!(repr.fragment_offset + repr.fragment_length <= repr.length);
        }
    }

    /// Mutating one byte of a valid message never panics any parser.
    #[test]
    fn mutated_valid_messages_never_panic(idx in any::<usize>(), pos in any::<usize>(), val in any::<u8>()) {
        let samples = super::samples::all_messages();
        let (msg, kx) = &samples[idx % samples.len()];
        let mut bytes = Vec::new();
        msg.emit(&mut bytes).expect("sample encodes");
        if !bytes.is_empty() {
            let p = pos % bytes.len();
            bytes[p] = val;
        }
        check_message_round_trip(msg.msg_type(), &bytes, *kx);
    }

    #[test]
    fn client_hello_round_trips(ch in client_hello_strategy()) {
        let mut out = Vec::new();
        ch.emit(&mut out).expect("strategy produces encodable hellos");
        prop_assert_eq!(ClientHello::parse(&out), Ok(ch));
    }

    #[test]
    fn extensions_round_trip(ext in ext_strategy()) {
        let mut out = Vec::new();
        ext.emit(&mut out).expect("strategy produces encodable extensions");
        prop_assert_eq!(Extensions::parse(&out), Ok(ext));
    }

    /// Messages cut into random fragments, plus random overlapping and duplicate
    /// fragments, all shuffled together, come out complete, in order and unchanged.
    #[test]
    fn shuffled_fragments_reassemble(
        lens in vec(0usize..3000, 1..5),
        cuts in vec(30usize..700, 1..8),
        seed in 1u64..,
        extra in 0usize..20,
    ) {
        let mut rng = XorShift(seed);
        let bodies: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(m, &n)| (0..n).map(|i| (i * 31 + m * 7) as u8).collect())
            .collect();
        let mut frags: Vec<(HandshakeRepr, Vec<u8>)> = Vec::new();
        for (seq, b) in bodies.iter().enumerate() {
            let seq = seq as u16;
            let size = cuts[seq as usize % cuts.len()];
            let mut f = Fragmenter::new(HandshakeType::Certificate, seq, b).expect("fits u24");
            while let Some(fr) = f.next_fragment(size) {
                frags.push((fr.header, fr.data.to_vec()));
            }
            for _ in 0..extra {
                if b.is_empty() {
                    break;
                }
                let start = rng.below(b.len());
                let end = start + 1 + rng.below(b.len() - start);
                let h = HandshakeRepr {
                    msg_type: HandshakeType::Certificate,
                    length: b.len() as u32,
                    message_seq: seq,
                    fragment_offset: start as u32,
                    fragment_length: (end - start) as u32,
                };
                frags.push((h, b[start..end].to_vec()));
            }
        }
        let n = frags.len();
        for i in (1..n).rev() {
            frags.swap(i, rng.below(i + 1));
        }
        // Duplicate a few fragments at random places.
        for _ in 0..extra.min(n) {
            let k = rng.below(frags.len());
            let dup = frags[k].clone();
            frags.insert(rng.below(frags.len() + 1), dup);
        }
        let budget = Arc::new(ReassemblyBudget::new(usize::MAX));
        let mut r = Reassembler::with_budget(ReassemblyConfig::default(), 0, Arc::clone(&budget));
        let mut out = Vec::new();
        for (h, data) in &frags {
            let res = r.handle_fragment(h, data);
            prop_assert!(
                matches!(res, FragmentOutcome::Accepted | FragmentOutcome::Old { .. }),
                "unexpected {:?}", res
            );
            prop_assert_eq!(budget.used(), r.buffered_bytes());
            while let Some(m) = r.poll_message() {
                out.push(m);
            }
        }
        prop_assert_eq!(out.len(), bodies.len());
        for (i, m) in out.iter().enumerate() {
            prop_assert_eq!(m.message_seq as usize, i);
            prop_assert_eq!(&m.body, &bodies[i]);
        }
        prop_assert_eq!(r.buffered_bytes(), 0);
        prop_assert_eq!(budget.used(), 0);
    }

    /// With a tiny piece cap and a tight shared budget, shuffled fragments may be refused,
    /// but one in-order retransmission of the message always completes it, unchanged.
    #[test]
    fn capped_reassembly_completes_after_an_in_order_retransmission(
        len in 1usize..5000,
        cut in 1usize..700,
        seed in 1u64..,
        max_ranges in 1usize..6,
        limit in 0usize..12_000,
    ) {
        let mut rng = XorShift(seed);
        let b: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
        let mut frags = Vec::new();
        let mut f = Fragmenter::new(HandshakeType::Certificate, 0, &b).expect("fits u24");
        while let Some(fr) = f.next_fragment(cut) {
            frags.push((fr.header, fr.data.to_vec()));
        }
        let in_order = frags.clone();
        for i in (1..frags.len()).rev() {
            frags.swap(i, rng.below(i + 1));
        }
        // Someone else holds all but `room` bytes of the shared budget while the shuffled
        // copy arrives; then it frees them, and the peer retransmits in order.
        let budget = Arc::new(ReassemblyBudget::new(2 * len + 12_000));
        let other = Reassembler::with_budget(ReassemblyConfig::default(), 0, Arc::clone(&budget));
        let mut other = other;
        let hog = vec![0u8; limit];
        if limit > 0 {
            let h = HandshakeRepr::unfragmented(HandshakeType::Certificate, 0, limit as u32);
            prop_assert_eq!(other.handle_fragment(&h, &hog), FragmentOutcome::Accepted);
        }
        let cfg = ReassemblyConfig { max_ranges_per_message: max_ranges, ..ReassemblyConfig::default() };
        let mut r = Reassembler::with_budget(cfg, 0, Arc::clone(&budget));
        for (h, data) in &frags {
            let res = r.handle_fragment(h, data);
            prop_assert!(
                matches!(
                    res,
                    FragmentOutcome::Accepted
                        | FragmentOutcome::Dropped {
                            reason: DropReason::TooManyRanges | DropReason::GlobalBudget
                        }
                ),
                "unexpected {:?}", res
            );
            prop_assert!(budget.used() <= budget.limit());
        }
        drop(other);
        for (h, data) in &in_order {
            prop_assert_eq!(r.handle_fragment(h, data), FragmentOutcome::Accepted);
        }
        let m = r.poll_message().expect("complete after the retransmission");
        prop_assert_eq!(m.body, b);
        prop_assert_eq!(budget.used(), 0);
    }

    /// Arbitrary hostile fragments: no panic, caps hold, delivery stays in order.
    #[test]
    fn reassembler_never_panics_and_respects_caps(
        frags in vec((0u16..40, 0u32..70_000, 0u32..70_000, 0u32..2000, 0u8..3), 0..200),
        huge in any::<bool>(),
    ) {
        let cfg = ReassemblyConfig {
            message_caps: MessageCaps::NONE.with(HandshakeType::CertificateRequest, 3000),
            ..ReassemblyConfig::default()
        };
        let budget = Arc::new(ReassemblyBudget::new(if huge { 100_000 } else { usize::MAX }));
        let mut r = Reassembler::with_budget(cfg, 0, Arc::clone(&budget));
        let mut expected_seq = 0u32;
        for (seq, len, off, flen, t) in frags {
            let len = if huge { len.saturating_mul(256).min(U24_MAX as u32) } else { len };
            let h = HandshakeRepr {
                msg_type: HandshakeType::from_u8(t + 11),
                length: len,
                message_seq: seq,
                fragment_offset: off,
                fragment_length: flen,
            };
            let data = vec![0xa5u8; flen as usize];
            let _ = r.handle_fragment(&h, &data);
            prop_assert!(r.buffered_bytes() <= cfg.max_handshake_bytes);
            prop_assert_eq!(budget.used(), r.buffered_bytes());
            while let Some(m) = r.poll_message() {
                prop_assert_eq!(u32::from(m.message_seq), expected_seq);
                prop_assert!(m.body.len() <= cfg.max_len_of(m.msg_type));
                expected_seq += 1;
            }
        }
        prop_assert!(r.peak_buffered_bytes() <= cfg.max_handshake_bytes);
        prop_assert!(budget.peak() <= budget.limit());
        drop(r);
        prop_assert_eq!(budget.used(), 0);
    }
}
