//! Many engines at once, as a control thread holds them half-open, and fragments that claim
//! more than they carry (for the memory and buffer-cap tests).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{AcceptOutcome, Acceptor, AcceptorConfig, Config, Connection};

use super::fixtures::test_wall;
use super::wire::{ClientHelloSpec, DTLS_1_2, RawFragment, handshake_datagram};

/// The address of the `i`-th engine's client.
pub fn peer(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i as u32)), 40_000)
}

/// `n` server engines (peers [`peer`]`(0..n)`) that answered a ClientHello with
/// message_seq 0 and now expect message 1. The acceptor's cookie check is off: a cookie is
/// what lets a client reach an engine (dos.rs tests that front); these tests are about the
/// engine behind it.
pub fn server_engines(config: &Arc<Config>, n: usize, now: Instant) -> Vec<Connection> {
    let mut acceptor = Acceptor::new(
        Arc::clone(config),
        AcceptorConfig {
            require_cookie: false,
            ..AcceptorConfig::default()
        },
        &mut SeededRng::new(1),
        now,
    )
    .expect("valid server config");
    let mut buf = vec![0u8; 16 * 1024];
    (0..n)
        .map(|i| {
            let hello = ClientHelloSpec::typical(i as u8).datagram(DTLS_1_2, 0, 0);
            let AcceptOutcome::Accept(hello) =
                acceptor.handle_datagram(now, peer(i), &hello, &mut buf)
            else {
                panic!("hello {i} not accepted");
            };
            let rng = Box::new(SeededRng::new(i as u64 + 10));
            let mut conn = Connection::server(Arc::clone(config), rng, now, test_wall(), hello)
                .expect("server engine");
            while conn.poll_transmit(now, &mut buf).is_some() {}
            while conn.poll_event().is_some() {}
            conn
        })
        .collect()
}

/// One epoch-0 record with one fragment: `data.len()` bytes at `offset` of a message of
/// type `msg_type` claiming `claimed` bytes.
pub fn claim(msg_type: u8, message_seq: u16, claimed: u32, offset: u32, data: usize) -> Vec<u8> {
    let fragment = RawFragment {
        msg_type,
        length: claimed,
        message_seq,
        fragment_offset: offset,
        body: vec![0x42; data],
    };
    handshake_datagram(1, DTLS_1_2, &[fragment])
}
