//! DTLS 1.3 ClientHellos without a valid cookie cost the acceptor no heap (TESTING.md
//! "DoS"; RFC 9147 §5.1): each is answered with a stateless HelloRetryRequest written into
//! the caller's buffer, never larger than the datagrams that carried the hello, whether the
//! hello came whole (one X25519 share) or in fragments (the default X25519MLKEM768 share at
//! MTU 1200, put together in the preallocated hello pool). One test alone in its binary,
//! measured with a counting allocator.

mod support;

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{AcceptOutcome, Acceptor, AcceptorConfig, Config, Connection, NamedGroup};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::fixtures::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The datagrams of a DTLS 1.3 client's first flight.
fn first_flight(groups: &[NamedGroup]) -> Vec<Vec<u8>> {
    let config = Config {
        server_name: Some("localhost".into()),
        tls13_groups: groups.to_vec(),
        ..Config::new(ca_verifier()).dtls13_only()
    };
    let server: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
    let mut client = Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(9)),
        Instant::now(),
        server,
        None,
    )
    .expect("client");
    let mut buf = vec![0u8; 2048];
    std::iter::from_fn(|| {
        client
            .poll_transmit(Instant::now(), &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect()
}

#[test]
fn unverified_dtls13_hellos_get_a_bounded_hello_retry_request_and_allocate_nothing() {
    let now = Instant::now();
    let mut rng = SeededRng::new(1);
    let server = dtls13_server_config();
    let mut acc = Acceptor::new(Arc::new(server), AcceptorConfig::default(), &mut rng, now)
        .expect("valid config");
    let whole = first_flight(&[NamedGroup::X25519]);
    assert_eq!(whole.len(), 1, "an X25519 ClientHello fits one datagram");
    let fragmented = first_flight(&[NamedGroup::X25519Mlkem768, NamedGroup::X25519]);
    assert!(
        fragmented.len() >= 2,
        "the hybrid ClientHello is fragmented"
    );
    let fragmented_len: usize = fragmented.iter().map(Vec::len).sum();
    let mut buf = vec![0u8; 4096];
    let from = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 40_000);
    // Warm up (the pool and the HMAC contexts exist already; this only settles lazies).
    for i in 0..100 {
        acc.handle_datagram(now, from(i), &whole[0], &mut buf);
    }
    let region = Region::new(GLOBAL);
    for i in 100..10_100 {
        match acc.handle_datagram(now, from(i), &whole[0], &mut buf) {
            AcceptOutcome::Reply(t) => assert!(t.len <= whole[0].len(), "amplification"),
            other => panic!("expected a HelloRetryRequest, got {other:?}"),
        }
        let mut replied = false;
        for d in &fragmented {
            if let AcceptOutcome::Reply(t) = acc.handle_datagram(now, from(i), d, &mut buf) {
                assert!(t.len <= fragmented_len, "amplification");
                replied = true;
            }
        }
        assert!(replied, "the reassembled hybrid hello is answered");
    }
    let change = region.change();
    eprintln!(
        "10000 whole + 10000 fragmented unverified DTLS 1.3 hellos: {} allocations, {} bytes",
        change.allocations, change.bytes_allocated
    );
    assert_eq!(change.allocations, 0, "no heap per unverified hello");
    assert_eq!(change.reallocations, 0);
}
