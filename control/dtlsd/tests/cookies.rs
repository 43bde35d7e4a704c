//! `dtlsd serve` and stateless cookies replayed from another address, over real loopback
//! sockets (issue 18; TESTING.md "DoS / amplification": forged, moved, altered, expired
//! cookies rejected; the DTLS 1.3 shape "HRR cookie replay from another address").
//!
//! A client of our own engine at address A (127.0.0.1) sends its ClientHello and gets the
//! daemon's stateless HelloRetryRequest (DTLS 1.3, RFC 9147 §5.1) or HelloVerifyRequest
//! (DTLS 1.2, RFC 6347 §4.2.1), whose cookie is bound to A. Its second ClientHello, with
//! the cookie, is sent from B (127.0.0.3) eight times. Asserted from the daemon's counters
//! and from what B receives: no handshake starts (`dtlsd_handshakes_started_total`: no
//! engine, so no key share, signature or certificate work; nothing but a fresh stateless
//! HelloRetryRequest or HelloVerifyRequest for B, never larger than what B sent), each
//! replay is counted (`dtlsd_cookies_rejected_total`); then the same ClientHello from A
//! completes the handshake and its session echoes.
//!
//! Every wait has a deadline; the daemon is killed on drop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, IO_TIMEOUT, TempDir, certs};
use control::crypto::SystemRng;
use control::crypto::pki_types::UnixTime;
use control::{Config, Connection, ProtocolVersion};

/// Replays of A's cookie-bearing ClientHello from B.
const REPLAYS: u64 = 8;
/// RFC 8446 §4.1.3: the random of a HelloRetryRequest (its first four bytes).
const HRR_RANDOM: [u8; 4] = [0xcf, 0x21, 0xad, 0x74];
/// Handshake message types (RFC 8446 §4, RFC 6347 §4.3.2).
const SERVER_HELLO: u8 = 2;
const HELLO_VERIFY_REQUEST: u8 = 3;

/// One datagram for `sock` within `wait`, if any.
fn recv(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    sock.set_read_timeout(Some(wait)).expect("read timeout");
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

/// The datagrams `conn` wants to send now (a flight: a ClientHello with a hybrid key share
/// spans two).
fn flight(conn: &mut Connection) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    let datagrams: Vec<Vec<u8>> = std::iter::from_fn(|| {
        conn.poll_transmit(Instant::now(), &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect();
    assert!(!datagrams.is_empty(), "a flight to send");
    datagrams
}

/// Sends every datagram of `flight` from `sock` to `to`.
fn send_all(sock: &UdpSocket, flight: &[Vec<u8>], to: SocketAddr) {
    for d in flight {
        sock.send_to(d, to).expect("send");
    }
}

/// The message type of a datagram's first record, a DTLSPlaintext handshake record
/// (13-byte record header, then the handshake header).
fn first_message_type(datagram: &[u8]) -> Option<u8> {
    (datagram.first() == Some(&22)).then(|| datagram.get(13).copied())?
}

/// `datagram` is the acceptor's stateless answer for `version`: a HelloRetryRequest (a
/// ServerHello with the HRR random) or a HelloVerifyRequest.
fn assert_stateless_cookie(datagram: &[u8], version: ProtocolVersion) {
    if version == ProtocolVersion::Dtls1_3 {
        assert_eq!(first_message_type(datagram), Some(SERVER_HELLO));
        assert_eq!(
            datagram.get(13 + 12 + 2..13 + 12 + 6),
            Some(&HRR_RANDOM[..]),
            "a HelloRetryRequest"
        );
    } else {
        assert_eq!(
            first_message_type(datagram),
            Some(HELLO_VERIFY_REQUEST),
            "a HelloVerifyRequest"
        );
    }
}

fn moved_cookie_is_refused_and_its_owner_completes(version: ProtocolVersion) {
    let pki = TempDir::new("cookies");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let server = daemon.listen;
    let metric = |name: &str| daemon.metric(name).unwrap_or(0);
    let mut config = (*Client::config(&pki)).clone();
    config.versions = vec![version];
    let config: Arc<Config> = Arc::new(config);

    let a = UdpSocket::bind("127.0.0.1:0").expect("bind A");
    let b = UdpSocket::bind("127.0.0.3:0").expect("bind B");
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
        a.local_addr().expect("A's address"),
        b.local_addr().expect("B's address"),
    );
    assert_ne!(a_addr.ip(), b_addr.ip());
    let mut conn = Connection::client(
        Arc::clone(&config),
        Box::new(SystemRng::new()),
        Instant::now(),
        server,
        None,
    )
    .expect("client config is valid");

    // A's cookie: its first ClientHello, the daemon's stateless answer.
    let first = flight(&mut conn);
    send_all(&a, &first, server);
    let answer = recv(&a, IO_TIMEOUT).expect("a cookie for A");
    assert_stateless_cookie(&answer, version);
    conn.handle_datagram(Instant::now(), UnixTime::now(), server, &answer);
    let second = flight(&mut conn);
    let second_len: usize = second.iter().map(Vec::len).sum();
    let before = [
        metric("dtlsd_handshakes_started_total"),
        metric("dtlsd_cookies_sent_total"),
        metric("dtlsd_cookies_rejected_total"),
        metric("dtlsd_handshakes_completed_total"),
    ];
    assert_eq!(before, [0, 1, 0, 0]);

    // B replays it.
    let (mut back, mut back_bytes) = (0u64, 0usize);
    for _ in 0..REPLAYS {
        send_all(&b, &second, server);
        while let Some(d) = recv(&b, Duration::from_millis(200)) {
            assert!(
                d.len() <= second_len,
                "{} bytes answered {second_len} from B",
                d.len()
            );
            // A fresh stateless cookie for B at most, never the handshake going on.
            assert_stateless_cookie(&d, version);
            back += 1;
            back_bytes += d.len();
        }
    }
    common::wait_until(
        "every replay counted",
        || daemon.log(),
        || metric("dtlsd_cookies_rejected_total") >= REPLAYS,
    );
    let after = [
        metric("dtlsd_handshakes_started_total"),
        metric("dtlsd_cookies_sent_total"),
        metric("dtlsd_cookies_rejected_total"),
        metric("dtlsd_handshakes_completed_total"),
    ];
    println!(
        "{version:?}: {REPLAYS} replays of A's {second_len}-byte ClientHello ({} datagrams) from B: {back} datagrams ({back_bytes} bytes) back to B; handshakes started {}, cookies sent +{}, cookies rejected +{}",
        second.len(),
        after[0],
        after[1] - before[1],
        after[2] - before[2]
    );
    assert_eq!(after[0], 0, "no engine for B: no asymmetric crypto");
    assert_eq!(after[2] - before[2], REPLAYS, "each replay counted");
    assert_eq!(after[1] - before[1], back, "B got only fresh cookies");
    assert_eq!(after[3], 0);
    assert_eq!(metric("dtlsd_sessions_active{shard=\"0\"}"), 0);

    // A, the cookie's owner, completes with the very same ClientHello.
    send_all(&a, &second, server);
    let mut owner = Client::complete(a, server, conn, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("A's handshake: {e}\n{}", daemon.log()));
    owner.echo(b"the cookie's owner");
    assert_eq!(metric("dtlsd_handshakes_started_total"), 1);
    assert_eq!(metric("dtlsd_handshakes_completed_total"), 1);
    assert_eq!(metric("dtlsd_cookies_rejected_total"), REPLAYS);
}

#[test]
fn hrr_cookie_replay_from_another_address_is_refused_and_its_owner_completes_dtls13() {
    moved_cookie_is_refused_and_its_owner_completes(ProtocolVersion::Dtls1_3);
}

#[test]
fn hello_verify_request_cookie_moved_to_another_address_is_refused_and_its_owner_completes_dtls12()
{
    moved_cookie_is_refused_and_its_owner_completes(ProtocolVersion::Dtls1_2);
}
