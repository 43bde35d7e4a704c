//! Issue 18, DoS / amplification: a flood of spoofed ClientHellos from many 127.0.0.0/8
//! sources, DTLS 1.2 and 1.3 (whole and fragmented 1.3 hellos, several hello sizes), through
//! the real path of the daemon minus its sockets: the sans-IO shard core ([`ShardCore`],
//! serve mode) forwards each datagram through its fair stage and the shard → control queue
//! to the control loop ([`ControlThread`], acceptor and all), whose HelloVerifyRequests and
//! HelloRetryRequests come back as `Transmit` commands that the core puts in its transmit
//! batch. Measured with a counting allocator over the whole process; TESTING.md asks:
//!
//! - bytes sent to a source before its cookie checks out ≤ bytes it sent, for every size;
//! - zero heap allocations per spoofed hello once warm (the copies shard → control and the
//!   flights control → shard use the queues' preallocated buffer pool, the fragmented
//!   hellos the acceptor's preallocated hello pool);
//! - exactly one answer per hello while control keeps up, none per fragment; in an
//!   overload (more datagrams per turn than control takes) the fair stage drops the excess,
//!   counted, and each hello is answered at most once; every datagram is forwarded or
//!   counted; no retransmission of a HelloVerifyRequest or HelloRetryRequest (the server
//!   keeps no state: nothing to resend);
//! - a legitimate client of each version still completes its handshake afterwards.
//!
//! One test alone in its binary, so nothing else moves the counts while it measures; it
//! prints its figures (`--nocapture`).

mod common;

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{CipherSuite, Config, Connection};
use dtls_crypto::SeededRng;
use dtls_proto::{NamedGroup, ProtocolVersion};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use common::daemon::Daemon;
use common::{test_wall, verifier};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
/// Spoofed sources, one hello each (about 16 000 hellos, some 25 000 datagrams).
const SOURCES: u32 = 16_384;
/// Sources sending before the measured region (lazily built state settles).
const WARM_UP: u32 = 1024;
/// Sources whose hellos arrive in one turn of the shard and control while control keeps
/// up (fewer datagrams than the 256 it takes per turn): every hello is answered.
const STEADY_PER_TURN: u32 = 96;
/// Sources per turn in an overload: more datagrams than control takes per turn, so the
/// fair stage fills and drops the excess (counted), as under a real flood.
const OVERLOAD_PER_TURN: u32 = 320;

/// Both versions, as `dtlsd serve` runs by default.
fn server_config() -> Config {
    common::server_config(vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2])
}

/// A client of `version` whose hello carries `groups` and an ALPN list of about `alpn`
/// bytes (to vary the hello's size).
fn client_config(version: ProtocolVersion, groups: &[NamedGroup], alpn: usize) -> Config {
    Config {
        cipher_suites: vec![CipherSuite::EcdheEcdsaAes128GcmSha256],
        versions: vec![version],
        tls13_groups: groups.to_vec(),
        server_name: Some("localhost".into()),
        alpn_protocols: (0..alpn / 51).map(|i| vec![b'a' + i as u8; 50]).collect(),
        ..Config::new(verifier())
    }
}

fn client(config: Config, seed: u64, now: Instant) -> Connection {
    Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(seed)),
        now,
        SERVER,
        None,
    )
    .expect("client config is valid")
}

/// The datagrams of a client's first flight (its ClientHello, fragmented or not).
fn first_flight(config: Config, now: Instant) -> Vec<Vec<u8>> {
    let mut c = client(config, 7, now);
    let mut buf = vec![0u8; 4096];
    std::iter::from_fn(|| {
        c.poll_transmit(now, &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect()
}

/// Spoofed source `i`: 127.x.y.z (never 127.0.0.1, the legitimate client's), its own port.
fn source(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x7f00_0000 | (i + 2));
    SocketAddr::new(IpAddr::V4(ip), 10_000 + (i % 50_000) as u16)
}

/// The index of spoofed source `addr`, if it is one.
fn index(addr: SocketAddr) -> Option<usize> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let i = (u32::from(ip) & 0x00ff_ffff).checked_sub(2)?;
    (i < SOURCES).then_some(i as usize)
}

/// The hellos of the flood: (label, datagrams), each sent whole by one source.
fn hellos(now: Instant) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use NamedGroup::{X25519, X25519Mlkem768};
    use ProtocolVersion::{Dtls1_2, Dtls1_3};
    vec![
        ("1.2", first_flight(client_config(Dtls1_2, &[], 0), now)),
        (
            "1.2 +400 B",
            first_flight(client_config(Dtls1_2, &[], 400), now),
        ),
        (
            "1.2 +1000 B",
            first_flight(client_config(Dtls1_2, &[], 1000), now),
        ),
        (
            "1.3 x25519",
            first_flight(client_config(Dtls1_3, &[X25519], 0), now),
        ),
        (
            "1.3 x25519 +600 B",
            first_flight(client_config(Dtls1_3, &[X25519], 600), now),
        ),
        (
            "1.3 hybrid (fragmented)",
            first_flight(client_config(Dtls1_3, &[X25519Mlkem768, X25519], 0), now),
        ),
    ]
}

/// Per spoofed source: (datagrams received, bytes received, answers, bytes answered).
type Tally = Vec<(u32, u64, u32, u64)>;

fn flood(
    daemon: &mut Daemon,
    now: Instant,
    kinds: &[(&str, Vec<Vec<u8>>)],
    range: std::ops::Range<u32>,
    per_turn: u32,
    tally: &mut Tally,
) {
    let mut i = range.start;
    while i < range.end {
        let end = (i + per_turn).min(range.end);
        for s in i..end {
            let (_, datagrams) = &kinds[s as usize % kinds.len()];
            for d in datagrams {
                daemon.receive(now, source(s), d);
                let t = &mut tally[s as usize];
                t.0 += 1;
                t.1 += d.len() as u64;
            }
        }
        daemon.turn(now, |to, payload| {
            let t = &mut tally[index(to).expect("answers go to the flood's sources only")];
            t.2 += 1;
            t.3 += payload.len() as u64;
        });
        i = end;
    }
    // What waits in the stage and the queue is answered in the next turns.
    while daemon.queues.inbound_len() > 0 || daemon.staged() > 0 {
        daemon.turn(now, |to, payload| {
            let t = &mut tally[index(to).expect("answers go to the flood's sources only")];
            t.2 += 1;
            t.3 += payload.len() as u64;
        });
    }
}

/// A legitimate client of `version` from 127.0.0.1 completes through the same core and loop.
fn legitimate_handshake(daemon: &mut Daemon, version: ProtocolVersion, port: u16, now: Instant) {
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mut c = client(
        client_config(version, &[NamedGroup::X25519], 0),
        u64::from(port),
        now,
    );
    let mut buf = vec![0u8; 4096];
    let mut to_client = Vec::new();
    let sessions = daemon.ctl.installed_sessions();
    for _ in 0..16 {
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            daemon.receive(now, from, &buf[..t.len]);
        }
        daemon.turn(now, |to, payload| {
            assert_eq!(to, from, "only the legitimate client hears from us now");
            to_client.push(payload.to_vec());
        });
        for d in to_client.drain(..) {
            c.handle_datagram(now, test_wall(), SERVER, &d);
        }
        // Both ends done: the client has its keys, the server handed its own to the shard.
        if c.is_established() && daemon.ctl.installed_sessions() > sessions {
            return;
        }
    }
    panic!("{version:?} client from {from}: state {}", c.state_name());
}

#[test]
fn a_spoofed_hello_flood_allocates_nothing_amplifies_nothing_and_is_answered_at_most_once() {
    let now = Instant::now();
    let kinds = hellos(now);
    let fragmented = &kinds[kinds.len() - 1].1;
    assert!(fragmented.len() >= 2, "the hybrid 1.3 hello is fragmented");
    for (label, datagrams) in &kinds {
        let sizes: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        println!("hello {label}: datagrams {sizes:?}");
    }
    let mut daemon = Daemon::new(server_config(), now);
    let mut tally: Tally = vec![(0, 0, 0, 0); SOURCES as usize];

    // Warm-up in overload: the pool's buffers all go round once.
    flood(
        &mut daemon,
        now,
        &kinds,
        0..WARM_UP,
        OVERLOAD_PER_TURN,
        &mut tally,
    );
    let steady = WARM_UP..SOURCES / 2;
    let region = Region::new(GLOBAL);
    flood(
        &mut daemon,
        now,
        &kinds,
        steady.clone(),
        STEADY_PER_TURN,
        &mut tally,
    );
    flood(
        &mut daemon,
        now,
        &kinds,
        SOURCES / 2..SOURCES,
        OVERLOAD_PER_TURN,
        &mut tally,
    );
    let change = region.change();
    let measured = u64::from(SOURCES - WARM_UP);
    println!(
        "{measured} spoofed hellos after warm-up: {} allocations, {} bytes allocated, pool misses {}",
        change.allocations,
        change.bytes_allocated,
        daemon.queues.pool_misses()
    );
    assert_eq!(change.allocations, 0, "heap allocations during the flood");
    assert_eq!(change.reallocations, 0);
    assert_eq!(
        daemon.queues.pool_misses(),
        0,
        "every copy came from the pool"
    );
    assert_eq!(
        daemon.queues.pool_len(),
        daemon.queues.pool_capacity(),
        "every buffer came back"
    );

    // Every datagram went to control or was dropped in the fair stage, counted; nothing
    // else was dropped.
    daemon.core.publish(&daemon.counters);
    let stats = daemon.counters.snapshot();
    let datagrams: u64 = tally.iter().map(|t| u64::from(t.0)).sum();
    assert_eq!(stats.datagrams_in, datagrams);
    assert_eq!(
        stats.handshake_forwarded + stats.drop_handshake_overflow,
        datagrams,
        "{stats:?}"
    );
    assert_eq!(stats.drop_queue_full + stats.drop_tx_full, 0, "{stats:?}");
    assert!(
        stats.drop_handshake_overflow > 0,
        "the overload phase overflowed the stage"
    );
    let answered = tally.iter().filter(|t| t.2 == 1).count();
    println!(
        "{datagrams} datagrams, {} dropped in the fair stage under overload, {answered} hellos answered",
        stats.drop_handshake_overflow
    );
    // At most one answer per hello (none per fragment), exactly one while control keeps
    // up, and never more bytes than came in.
    for (label_index, (label, _)) in kinds.iter().enumerate() {
        let (mut worst, mut hellos) = (0.0f64, 0u32);
        for (s, &(datagrams, bytes_in, answers, bytes_out)) in tally.iter().enumerate() {
            if s % kinds.len() != label_index {
                continue;
            }
            let expected = if steady.contains(&(s as u32)) {
                1..=1
            } else {
                0..=1
            };
            assert!(
                expected.contains(&answers),
                "{label} from source {s}: {datagrams} datagrams got {answers} answers"
            );
            assert!(
                bytes_out <= bytes_in,
                "{label}: {bytes_out} B out for {bytes_in} B in"
            );
            worst = worst.max(bytes_out as f64 / bytes_in as f64);
            hellos += answers;
        }
        println!("{label}: {hellos} hellos answered, worst bytes out / bytes in {worst:.3}");
    }
    assert_eq!(
        daemon.ctl.handshakes(),
        0,
        "no engine for an unverified hello"
    );

    // Nothing is resent: the answers were stateless. Timers run for minutes of virtual time.
    for s in 1..=20 {
        daemon.turn(now + Duration::from_secs(s * 15), |to, _| {
            panic!("a datagram to {to} after the flood: a retransmission")
        });
    }

    // Legitimate clients of both versions still complete.
    let later = now + Duration::from_secs(301);
    legitimate_handshake(&mut daemon, ProtocolVersion::Dtls1_2, 5000, later);
    legitimate_handshake(&mut daemon, ProtocolVersion::Dtls1_3, 5001, later);
    assert_eq!(daemon.ctl.installed_sessions(), 2);
}
