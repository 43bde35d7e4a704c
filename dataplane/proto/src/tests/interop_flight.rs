//! A real server flight: OpenSSL 3.0 `s_server -dtls1_2 -listen` (P-256 ECDSA
//! certificate) answering the captured OpenSSL ClientHello, first with a
//! HelloVerifyRequest, then (after the ClientHello with cookie) with ServerHello,
//! Certificate, ServerKeyExchange and ServerHelloDone, including its own retransmissions
//! because nobody answered. Captured once at `-mtu 1400` and once at `-mtu 300`, which
//! fragments the Certificate.

use crate::*;

const HVR_DATAGRAM: &[&str] = &[
    "16feff00000000000000000023030000170000000000000017feff14293269bc4aae437ce22a2be08a1c0061",
    "e525ae3d",
];

const FLIGHT_MTU_1400: &[&[&str]] = &[
    &[
        "16fefd000000000000000100490200003d000100000000003dfefd41980f4ba587d5ed6f6f1d55f25745fab6",
        "5d69b8b88f2a35b19ca411b4406f9d00c02c000015ff01000100000b000403000102002300000017000016fe",
        "fd000000000000000201920b00018600020000000001860001830001803082017c30820123a0030201020214",
        "58d1a3539b7540eef12dc03a473c8f8910d8ee92300a06082a8648ce3d04030230143112301006035504030c",
        "096c6f63616c686f7374301e170d3236313132323135353634355a170d3236313232323135353634355a3014",
        "3112301006035504030c096c6f63616c686f73743059301306072a8648ce3d020106082a8648ce3d03010703",
        "420004a66b6b407879c1c22930ab9980dd01999639b7b6df0eef5f6aa0f19a432a07cced796de0b28481e308",
        "6ab8a6dae19636e97d97439e86c7d7e61e65d48b7528e6a3533051301d0603551d0e041604144f1c99e82cc4",
        "ca9791503c6b82536db6b6fe81af301f0603551d230418301680144f1c99e82cc4ca9791503c6b82536db6b6",
        "fe81af300f0603551d130101ff040530030101ff300a06082a8648ce3d040302034700304402206f34ad1d1f",
        "6a2294ffb6b7dae9b248b30e3b00d59c03b83a57c697f3a1c4929a0220067de24b57d9c89bcf58c7216b2936",
        "bcad34964d0a3bdb884fe9897e67006c5016fefd0000000000000003007b0c00006f000300000000006f0300",
        "1d20e481192745506b50bed9ff3b0da4808096e3cdbd24c291e4b36a67857d7cdc03040300473045022061bc",
        "20876ebbdaa53807bb438faea9b77ff82d5c4157fc3bfa493328ec9f7d58022100cd7b5219ee6680569e0e73",
        "dc5e9d57fd72bb25f3258fb97b995fbfb15508f12b16fefd0000000000000004000c0e000000000400000000",
        "0000",
    ],
    &[
        "16fefd000000000000000500490200003d000100000000003dfefd41980f4ba587d5ed6f6f1d55f25745fab6",
        "5d69b8b88f2a35b19ca411b4406f9d00c02c000015ff01000100000b0004030001020023000000170000",
    ],
    &[
        "16fefd000000000000000601920b00018600020000000001860001830001803082017c30820123a003020102",
        "021458d1a3539b7540eef12dc03a473c8f8910d8ee92300a06082a8648ce3d04030230143112301006035504",
        "030c096c6f63616c686f7374301e170d3236313132323135353634355a170d3236313232323135353634355a",
        "30143112301006035504030c096c6f63616c686f73743059301306072a8648ce3d020106082a8648ce3d0301",
        "0703420004a66b6b407879c1c22930ab9980dd01999639b7b6df0eef5f6aa0f19a432a07cced796de0b28481",
        "e3086ab8a6dae19636e97d97439e86c7d7e61e65d48b7528e6a3533051301d0603551d0e041604144f1c99e8",
        "2cc4ca9791503c6b82536db6b6fe81af301f0603551d230418301680144f1c99e82cc4ca9791503c6b82536d",
        "b6b6fe81af300f0603551d130101ff040530030101ff300a06082a8648ce3d040302034700304402206f34ad",
        "1d1f6a2294ffb6b7dae9b248b30e3b00d59c03b83a57c697f3a1c4929a0220067de24b57d9c89bcf58c7216b",
        "2936bcad34964d0a3bdb884fe9897e67006c50",
    ],
    &[
        "16fefd0000000000000007007b0c00006f000300000000006f03001d20e481192745506b50bed9ff3b0da480",
        "8096e3cdbd24c291e4b36a67857d7cdc03040300473045022061bc20876ebbdaa53807bb438faea9b77ff82d",
        "5c4157fc3bfa493328ec9f7d58022100cd7b5219ee6680569e0e73dc5e9d57fd72bb25f3258fb97b995fbfb1",
        "5508f12b",
    ],
    &["16fefd0000000000000008000c0e0000000004000000000000"],
    &[
        "16fefd000000000000000900490200003d000100000000003dfefd41980f4ba587d5ed6f6f1d55f25745fab6",
        "5d69b8b88f2a35b19ca411b4406f9d00c02c000015ff01000100000b0004030001020023000000170000",
    ],
];

const FLIGHT_MTU_300: &[&[&str]] = &[
    &[
        "16fefd000000000000000100490200003d000100000000003dfefd19344631141049ce3a03b3407d599280f5",
        "714370320775b91a1facb48ab3bbdc00c02c000015ff01000100000b000403000102002300000017000016fe",
        "fd000000000000000200ad0b00018600020000000000a10001830001803082017c30820123a0030201020214",
        "58d1a3539b7540eef12dc03a473c8f8910d8ee92300a06082a8648ce3d04030230143112301006035504030c",
        "096c6f63616c686f7374301e170d3236313132323135353634355a170d3236313232323135353634355a3014",
        "3112301006035504030c096c6f63616c686f73743059301306072a8648ce3d020106082a8648ce3d03010703",
        "420004a66b6b4078",
    ],
    &[
        "16fefd000000000000000300f10b00018600020000a10000e579c1c22930ab9980dd01999639b7b6df0eef5f",
        "6aa0f19a432a07cced796de0b28481e3086ab8a6dae19636e97d97439e86c7d7e61e65d48b7528e6a3533051",
        "301d0603551d0e041604144f1c99e82cc4ca9791503c6b82536db6b6fe81af301f0603551d23041830168014",
        "4f1c99e82cc4ca9791503c6b82536db6b6fe81af300f0603551d130101ff040530030101ff300a06082a8648",
        "ce3d040302034700304402206f34ad1d1f6a2294ffb6b7dae9b248b30e3b00d59c03b83a57c697f3a1c4929a",
        "0220067de24b57d9c89bcf58c7216b2936bcad34964d0a3bdb884fe9897e67006c50",
    ],
    &[
        "16fefd0000000000000004007c0c000070000300000000007003001d20c543d58d138a66ebb71c03a1b7cb44",
        "2230fd040f6910c2b1951002d15b665c46040300483046022100fa300c5b9e02259f593efefa3da7a0996de4",
        "7f79cdcc65bc0f0639b549f77399022100c714f15795594ad94ff8f5e9ee9818d7dfe975028f5ec2e41483f8",
        "de2bb7b15c16fefd0000000000000005000c0e0000000004000000000000",
    ],
    &[
        "16fefd000000000000000600490200003d000100000000003dfefd19344631141049ce3a03b3407d599280f5",
        "714370320775b91a1facb48ab3bbdc00c02c000015ff01000100000b0004030001020023000000170000",
    ],
    &[
        "16fefd000000000000000701030b00018600020000000000f70001830001803082017c30820123a003020102",
        "021458d1a3539b7540eef12dc03a473c8f8910d8ee92300a06082a8648ce3d04030230143112301006035504",
        "030c096c6f63616c686f7374301e170d3236313132323135353634355a170d3236313232323135353634355a",
        "30143112301006035504030c096c6f63616c686f73743059301306072a8648ce3d020106082a8648ce3d0301",
        "0703420004a66b6b407879c1c22930ab9980dd01999639b7b6df0eef5f6aa0f19a432a07cced796de0b28481",
        "e3086ab8a6dae19636e97d97439e86c7d7e61e65d48b7528e6a3533051301d0603551d0e041604144f1c99e8",
        "2cc4ca9791503c6b",
    ],
    &[
        "16fefd0000000000000008009b0b00018600020000f700008f82536db6b6fe81af301f0603551d2304183016",
        "80144f1c99e82cc4ca9791503c6b82536db6b6fe81af300f0603551d130101ff040530030101ff300a06082a",
        "8648ce3d040302034700304402206f34ad1d1f6a2294ffb6b7dae9b248b30e3b00d59c03b83a57c697f3a1c4",
        "929a0220067de24b57d9c89bcf58c7216b2936bcad34964d0a3bdb884fe9897e67006c50",
    ],
    &[
        "16fefd0000000000000009007c0c000070000300000000007003001d20c543d58d138a66ebb71c03a1b7cb44",
        "2230fd040f6910c2b1951002d15b665c46040300483046022100fa300c5b9e02259f593efefa3da7a0996de4",
        "7f79cdcc65bc0f0639b549f77399022100c714f15795594ad94ff8f5e9ee9818d7dfe975028f5ec2e41483f8",
        "de2bb7b15c",
    ],
    &["16fefd000000000000000a000c0e0000000004000000000000"],
    &[
        "16fefd000000000000000b00490200003d000100000000003dfefd19344631141049ce3a03b3407d599280f5",
        "714370320775b91a1facb48ab3bbdc00c02c000015ff01000100000b0004030001020023000000170000",
    ],
];

fn unhex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
        .collect()
}

/// Record payloads of a datagram (a minimal splitter for plaintext epoch-0 records).
fn records(datagram: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 13 {
        assert_eq!(rest[0], 22, "handshake records only");
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        out.push(&rest[13..13 + len]);
        rest = &rest[13 + len..];
    }
    assert!(rest.is_empty());
    out
}

#[test]
fn hello_verify_request_from_openssl() {
    let dgram = unhex(HVR_DATAGRAM);
    let recs = records(&dgram);
    let (repr, body) = HandshakeFragments::new(recs[0])
        .next()
        .expect("one message")
        .expect("valid");
    assert_eq!(repr.msg_type, HandshakeType::HelloVerifyRequest);
    assert_eq!(repr.message_seq, 0);
    let hvr = HelloVerifyRequest::parse(body).expect("parses");
    // RFC 6347 §4.2.1: DTLS 1.0 in HelloVerifyRequest.
    assert_eq!(hvr.server_version, ProtocolVersion::Dtls1_0);
    assert_eq!(hvr.cookie.len(), 20);
}

fn check_flight(datagrams: &[&[&str]]) {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 1);
    let mut messages = Vec::new();
    let mut old = 0;
    for d in datagrams {
        let dgram = unhex(d);
        for rec in records(&dgram) {
            for frag in HandshakeFragments::new(rec) {
                let (repr, data) = frag.expect("OpenSSL fragments are well formed");
                match r.handle_fragment(&repr, data) {
                    FragmentOutcome::Accepted => {}
                    FragmentOutcome::Old { .. } => old += 1,
                    other => panic!("unexpected {other:?}"),
                }
                while let Some(m) = r.poll_message() {
                    messages.push(m);
                }
            }
        }
    }
    assert!(old > 0, "the capture contains retransmissions");
    let types: Vec<_> = messages.iter().map(|m| m.msg_type).collect();
    assert_eq!(
        types,
        [
            HandshakeType::ServerHello,
            HandshakeType::Certificate,
            HandshakeType::ServerKeyExchange,
            HandshakeType::ServerHelloDone
        ]
    );
    let sh = ServerHello::parse(&messages[0].body).expect("ServerHello parses");
    assert_eq!(sh.server_version, ProtocolVersion::Dtls1_2);
    assert_eq!(sh.extensions.check_server_hello(), Ok(()));
    assert!(sh.extensions.extended_master_secret);
    let kx = sh
        .cipher_suite
        .key_exchange()
        .expect("OpenSSL chose one of our suites");
    assert_eq!(kx, KeyExchange::EcdheEcdsa);
    let cert = Certificate::parse(&messages[1].body).expect("Certificate parses");
    assert_eq!(cert.chain.len(), 1);
    assert_eq!(cert.chain[0][0], 0x30, "DER SEQUENCE");
    let ske = ServerKeyExchange::parse(&messages[2].body, kx).expect("SKE parses");
    let ServerKeyExchange::Ecdhe { params, signature } = &ske else {
        panic!("ECDHE SKE expected, got {ske:?}");
    };
    assert_eq!(Some(params.public.len()), params.group.public_key_len());
    assert!(signature.scheme.is_ecdsa_or_eddsa());
    ServerHelloDone::parse(&messages[3].body).expect("empty body");
    // Re-encoding what we parsed reproduces OpenSSL's bytes exactly.
    let mut out = Vec::new();
    ske.emit(&mut out).expect("encodable");
    assert_eq!(out, messages[2].body);
    let mut out = Vec::new();
    cert.emit(&mut out).expect("encodable");
    assert_eq!(out, messages[1].body);
}

#[test]
fn openssl_server_flight_reassembles_and_parses() {
    check_flight(FLIGHT_MTU_1400);
}

#[test]
fn openssl_fragmented_server_flight_reassembles_and_parses() {
    check_flight(FLIGHT_MTU_300);
}
