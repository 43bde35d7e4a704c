//! A spoofed flood of ClientHello fragments costs the acceptor no heap (TESTING.md "DoS":
//! nothing allocated per unverified hello): the pool that puts fragmented hellos together is
//! allocated when the acceptor is built, and offering it fragments from any number of
//! sources allocates nothing. One test alone in its binary, measured with a counting
//! allocator.

mod support;

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{AcceptOutcome, Acceptor, AcceptorConfig, CipherSuite, DropReason};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::fixtures::*;
use support::wire::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn fragments_from_spoofed_sources_allocate_nothing() {
    let now = Instant::now();
    let mut rng = SeededRng::new(1);
    let mut acc = Acceptor::new(
        Arc::new(server_config(&[CipherSuite::EcdheEcdsaAes128GcmSha256])),
        AcceptorConfig::default(),
        &mut rng,
        now,
    )
    .expect("valid config");
    // The first fragment of a 1400-byte hello, 500 bytes of it.
    let mut spec = ClientHelloSpec::typical(1);
    let base = spec.body().len();
    spec.extensions.push((0xfe00, vec![0x5a; 1400 - base - 4]));
    let first = RawFragment::whole(HT_CLIENT_HELLO, 0, spec.body()).split(500);
    let datagram = handshake_datagram(0, DTLS_1_2, &first[..1]);
    let mut buf = vec![0u8; 4096];
    let from = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 40_000);
    // Fill the pool once, then measure a flood ten times its size.
    for i in 0..1000 {
        acc.handle_datagram(now, from(i), &datagram, &mut buf);
    }
    let region = Region::new(GLOBAL);
    for i in 1000..21_000 {
        let outcome = acc.handle_datagram(now, from(i), &datagram, &mut buf);
        assert!(matches!(
            outcome,
            AcceptOutcome::Drop(DropReason::Reassembling)
        ));
    }
    let change = region.change();
    eprintln!(
        "20000 spoofed fragments: {} allocations, {} bytes; pool: {:?}",
        change.allocations,
        change.bytes_allocated,
        acc.hello_pool_stats()
    );
    assert_eq!(change.allocations, 0, "no heap per unverified hello");
    assert_eq!(change.reallocations, 0);
    assert!(acc.hello_pool_stats().evicted >= 20_000);
}
