use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::{SocketConfig, bind_udp};

/// Our daemon's layout: 8-octet CIDs of QUIC-LB configuration 0 with the length in the
/// first octet, a 2-octet server ID of node (8 bits) then shard (8 bits).
fn daemon_layout(shards: u16) -> CidSteering {
    CidSteering {
        cid_len: 8,
        first_octet: 7,
        any_codepoint: false,
        shard_bit_offset: 16,
        shard_bits: 8,
        first_shard: 0,
        shards,
    }
}

/// A classic BPF interpreter for the instructions the generator emits, with the kernel's
/// rule that a load past the end ends the program with 0.
fn interpret(program: &SteeringProgram, packet: &[u8]) -> u32 {
    run(program, packet).0
}

/// The program's verdict on `packet` and the instructions it ran.
fn run(program: &SteeringProgram, packet: &[u8]) -> (u32, usize) {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let len = u32::try_from(packet.len()).expect("test packet");
    let mut executed = 0;
    loop {
        let i = program.insns()[pc];
        pc += 1;
        executed += 1;
        let code = u32::from(i.code);
        match code & 0x07 {
            libc::BPF_LD if code & 0xe0 == libc::BPF_LEN => a = len,
            libc::BPF_LD => {
                let n = match code & 0x18 {
                    libc::BPF_B => 1,
                    libc::BPF_H => 2,
                    _ => 4,
                };
                let start = i.k as usize;
                let Some(bytes) = packet.get(start..start + n) else {
                    return (0, executed);
                };
                a = bytes.iter().fold(0, |acc, b| acc << 8 | u32::from(*b));
            }
            libc::BPF_ALU => match code & 0xf0 {
                libc::BPF_RSH => a >>= i.k,
                libc::BPF_AND => a &= i.k,
                libc::BPF_SUB => a = a.wrapping_sub(i.k),
                other => panic!("unexpected ALU op {other:#x}"),
            },
            libc::BPF_JMP => {
                let taken = match code & 0xf0 {
                    libc::BPF_JA => {
                        pc += i.k as usize;
                        continue;
                    }
                    libc::BPF_JEQ => a == i.k,
                    libc::BPF_JGE => a >= i.k,
                    other => panic!("unexpected jump {other:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            libc::BPF_RET => {
                return (if code & 0x18 == libc::BPF_A { a } else { i.k }, executed);
            }
            libc::BPF_MISC if code & 0xf8 == libc::BPF_TXA => a = x,
            libc::BPF_MISC => x = a,
            other => panic!("unexpected class {other:#x}"),
        }
    }
}

/// Our CID naming `shard` (node 0), with `tag` in the nonce.
fn cid(shard: u8, tag: u16) -> [u8; 8] {
    let [hi, lo] = tag.to_be_bytes();
    [7, 0, shard, hi, lo, 0xaa, 0xbb, 0xcc]
}

/// A tls12_cid record (header, CID, then a length and 32 octets of "ciphertext").
fn record12(cid: &[u8]) -> Vec<u8> {
    let mut r = vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9];
    r.extend_from_slice(cid);
    r.extend_from_slice(&[0, 32]);
    r.extend_from_slice(&[0x5a; 32]);
    r
}

/// A DTLS 1.3 record with the C bit, a 2-octet sequence number and a length (001 C S L EE
/// = 0b0011_1111), then "ciphertext".
fn record13(cid: &[u8]) -> Vec<u8> {
    let mut r = vec![0x3f];
    r.extend_from_slice(cid);
    r.extend_from_slice(&[0, 7, 0, 32]);
    r.extend_from_slice(&[0x5a; 32]);
    r
}

#[test]
fn program_steers_cid_records_and_falls_back_on_the_rest() {
    let program = SteeringProgram::new(&daemon_layout(4));
    for shard in 0..4 {
        assert_eq!(
            interpret(&program, &record12(&cid(shard, 1))),
            u32::from(shard)
        );
        assert_eq!(
            interpret(&program, &record13(&cid(shard, 1))),
            u32::from(shard)
        );
    }
    let mut other_config = cid(1, 1);
    other_config[0] = 0x27;
    let mut other_version = record12(&cid(1, 1));
    other_version[1..3].copy_from_slice(&[0xfe, 0xff]);
    let mut no_c_bit = record13(&cid(1, 1));
    no_c_bit[0] = 0x2f;
    let whole = record12(&cid(2, 1));
    let short: Vec<&[u8]> = vec![&[], &[25], &[25, 0xfe], &whole[..18], &whole[..11]];
    let fallbacks: Vec<Vec<u8>> = vec![
        record12(&cid(4, 1)),
        record13(&cid(200, 1)),
        record12(&other_config),
        record13(&other_config),
        other_version,
        no_c_bit,
        // A 1.2 record without a CID, a handshake record, a 1.3 header without CID.
        vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
        vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        vec![0x2c, 0, 1, 0, 4, 1, 2, 3, 4],
        record13(&cid(1, 1))[..8].to_vec(),
    ];
    for packet in fallbacks.iter().map(Vec::as_slice).chain(short) {
        assert_eq!(interpret(&program, packet), FALLBACK, "{packet:02x?}");
    }
}

/// Encrypted CIDs (the shard in clear in the last octet) under rotating QUIC-LB keys: the
/// program steers the CIDs of every routable codepoint of our length, so a key rotation
/// (a new codepoint, the previous one still decoding) needs no new program.
#[test]
fn with_any_codepoint_the_program_follows_a_key_rotation() {
    let steering = CidSteering {
        cid_len: 8,
        first_octet: 7,
        any_codepoint: true,
        shard_bit_offset: 56,
        shard_bits: 8,
        first_shard: 0,
        shards: 4,
    };
    let program = SteeringProgram::new(&steering);
    let encrypted = |first: u8, shard: u8| [first, 0x91, 0x2c, 0x4e, 0x07, 0xd3, 0x5a, shard];
    for codepoint in 0u8..7 {
        for shard in 0u8..4 {
            let cid = encrypted(codepoint << 5 | 7, shard);
            assert_eq!(interpret(&program, &record12(&cid)), u32::from(shard));
            assert_eq!(interpret(&program, &record13(&cid)), u32::from(shard));
        }
        // Another length, or a shard past the group: the hash.
        let cid = encrypted(codepoint << 5 | 9, 1);
        assert_eq!(interpret(&program, &record13(&cid)), FALLBACK);
        assert_eq!(
            interpret(&program, &record13(&encrypted(codepoint << 5 | 7, 4))),
            FALLBACK
        );
    }
    // Codepoint 0b111 is reserved for unroutable CIDs: the hash.
    assert_eq!(
        interpret(&program, &record12(&encrypted(0xe7, 1))),
        FALLBACK
    );
    assert_eq!(
        interpret(&program, &record13(&encrypted(0xe7, 1))),
        FALLBACK
    );
    // Without `any_codepoint` only the configured codepoint is steered.
    let fixed = SteeringProgram::new(&CidSteering {
        any_codepoint: false,
        ..steering
    });
    assert_eq!(interpret(&fixed, &record13(&encrypted(7, 2))), 2);
    assert_eq!(interpret(&fixed, &record13(&encrypted(0x27, 2))), FALLBACK);
}

#[test]
fn program_reads_unaligned_and_wide_shard_fields() {
    // Shard id of 11 bits starting 5 bits into the server ID (node 5 bits), 10-octet CIDs.
    let steering = CidSteering {
        cid_len: 10,
        first_octet: 9,
        any_codepoint: false,
        shard_bit_offset: 13,
        shard_bits: 11,
        first_shard: 0,
        shards: 2000,
    };
    let program = SteeringProgram::new(&steering);
    for shard in [0u32, 1, 1234, 1999, 2000, 2047] {
        // Node 3 in the top 5 bits, then the shard, then 8 padding bits of ones that the
        // mask must not let through (bits after the field are ignored).
        let value = (3u32 << 11 | shard) << 8 | 0xff;
        let [_, a, b, c] = value.to_be_bytes();
        let cid = [9, a, b, c, 1, 2, 3, 4, 5, 6];
        let want = if shard < 2000 { shard } else { FALLBACK };
        assert_eq!(interpret(&program, &record12(&cid)), want);
        assert_eq!(interpret(&program, &record13(&cid)), want);
    }
}

#[test]
fn a_later_groups_program_numbers_its_sockets_from_its_first_shard() {
    // Shards 3..6 listen on a second address: their group's sockets 0..3.
    let program = SteeringProgram::new(&CidSteering {
        first_shard: 3,
        shards: 3,
        ..daemon_layout(0)
    });
    for shard in 0u8..10 {
        let want = match shard {
            3..6 => u32::from(shard - 3),
            _ => FALLBACK,
        };
        assert_eq!(interpret(&program, &record12(&cid(shard, 7))), want);
        assert_eq!(interpret(&program, &record13(&cid(shard, 7))), want);
    }
}

#[test]
fn the_documented_listing_and_costs_are_the_generated_ones() {
    let program = SteeringProgram::new(&daemon_layout(4));
    let listing = program.to_string();
    assert_eq!(listing.lines().count(), program.insns().len());
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/architecture.md"
    ))
    .expect("docs/architecture.md");
    assert!(
        doc.contains(&listing),
        "docs/architecture.md must hold:\n{listing}"
    );
    // Instructions run per datagram, as the docs state them.
    let handshake = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    let costs = [
        run(&program, &record12(&cid(1, 1))).1,
        run(&program, &record13(&cid(1, 1))).1,
        run(&program, &handshake).1,
        run(&program, &[]).1,
    ];
    let stated = format!(
        "A record is steered in {} instructions (1.2) or {} (1.3); a handshake record falls \
         back in {}, an empty datagram in {}.",
        costs[0], costs[1], costs[2], costs[3]
    );
    assert!(
        doc.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains(&stated),
        "docs/architecture.md must say: {stated}"
    );
}

/// Binds `n` reuseport sockets on one loopback port, in order.
fn group(n: usize) -> Vec<UdpSocket> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(n);
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    for _ in 0..n {
        let bound = bind_udp(addr, &SocketConfig::default()).expect("bind on loopback");
        addr = bound.local_addr;
        sockets.push(bound.socket);
    }
    sockets
}

/// Every datagram each socket of `group` holds, by its first 20 octets, until `expect` in
/// all have come or 2 s pass.
fn drain(group: &[UdpSocket], expect: usize) -> Vec<Vec<Vec<u8>>> {
    let mut got = vec![Vec::new(); group.len()];
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while got.iter().map(Vec::len).sum::<usize>() < expect && Instant::now() < deadline {
        let mut idle = true;
        for (socket, got) in group.iter().zip(&mut got) {
            while let Ok(n) = socket.recv(&mut buf) {
                got.push(buf[..n].to_vec());
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    got
}

#[test]
fn kernel_delivers_each_cid_record_to_the_socket_it_names() {
    const SOCKETS: usize = 4;
    const CLIENTS: u16 = 64;
    let sockets = group(SOCKETS);
    let to = sockets[0].local_addr().expect("bound");
    SteeringProgram::new(&daemon_layout(SOCKETS as u16))
        .attach(&sockets[2])
        .expect("SO_ATTACH_REUSEPORT_CBPF needs no privilege");
    // Each client (its own source port) sends a 1.2 and a 1.3 CID record naming shard
    // `tag % 4`, one naming shard 9 (past the group), and a handshake record: the last two
    // kinds must be spread by the hash.
    for tag in 0..CLIENTS {
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        let shard = (tag % SOCKETS as u16) as u8;
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
        hello.extend_from_slice(&tag.to_be_bytes());
        for datagram in [
            record12(&cid(shard, tag)),
            record13(&cid(shard, tag)),
            record12(&cid(9, tag)),
            hello,
        ] {
            client.send_to(&datagram, to).expect("loopback send");
        }
    }
    let got = drain(&sockets, 4 * usize::from(CLIENTS));
    let mut spread: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    let mut counted = 0;
    for (index, datagrams) in got.iter().enumerate() {
        for d in datagrams {
            counted += 1;
            match (d[0], d.get(13)) {
                (25, Some(&9)) => spread.entry("past the group").or_default().insert(index),
                (25, Some(&shard)) => {
                    assert_eq!(usize::from(shard), index, "1.2 record on the wrong socket");
                    true
                }
                (0x3f, _) => {
                    assert_eq!(usize::from(d[3]), index, "1.3 record on the wrong socket");
                    true
                }
                _ => spread.entry("handshake").or_default().insert(index),
            };
        }
    }
    assert_eq!(counted, 4 * usize::from(CLIENTS), "loopback lost datagrams");
    for (kind, sockets) in &spread {
        assert!(
            sockets.len() > 1,
            "{kind} records all on one socket: {sockets:?}"
        );
    }
    assert_eq!(spread.len(), 2);

    // Detached: CID records are hashed like the rest (spread, not all on their shard).
    detach_steering(&sockets[1]).expect("a program is attached");
    let client_count = 64u16;
    for tag in 0..client_count {
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .send_to(&record12(&cid(0, tag)), to)
            .expect("loopback send");
    }
    let got = drain(&sockets, usize::from(client_count));
    assert!(got.iter().filter(|d| !d.is_empty()).count() > 1, "{got:?}");
}

#[test]
fn kernel_delivers_to_a_second_groups_sockets_by_their_shard_ids() {
    // A daemon's second listen address: shards 2 and 3 in a group of their own.
    const CLIENTS: u16 = 32;
    let sockets = group(2);
    let to = sockets[0].local_addr().expect("bound");
    SteeringProgram::new(&CidSteering {
        first_shard: 2,
        shards: 2,
        ..daemon_layout(0)
    })
    .attach(&sockets[1])
    .expect("SO_ATTACH_REUSEPORT_CBPF needs no privilege");
    for tag in 0..CLIENTS {
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        let shard = 2 + (tag % 2) as u8;
        for datagram in [
            record12(&cid(shard, tag)),
            record13(&cid(shard, tag)),
            // The first group's shard: not this group's, spread by the hash.
            record12(&cid(0, tag)),
        ] {
            client.send_to(&datagram, to).expect("loopback send");
        }
    }
    let got = drain(&sockets, 3 * usize::from(CLIENTS));
    let mut counted = 0;
    let mut spread = BTreeSet::new();
    for (index, datagrams) in got.iter().enumerate() {
        for d in datagrams {
            counted += 1;
            match (d[0], d.get(13)) {
                (25, Some(&0)) => {
                    spread.insert(index);
                }
                (25, Some(&shard)) => assert_eq!(usize::from(shard) - 2, index, "1.2 record"),
                _ => assert_eq!(usize::from(d[3]) - 2, index, "1.3 record"),
            }
        }
    }
    assert_eq!(counted, 3 * usize::from(CLIENTS), "loopback lost datagrams");
    assert_eq!(
        spread.len(),
        2,
        "another group's CIDs are hashed, not steered"
    );
}
