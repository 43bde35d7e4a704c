//! B4: DTLS 1.2 handshakes per second on one core, in memory, next to the crypto-only bound
//! measured in the same run (BENCHMARKS.md: report the rate and its ratio to the bound).
//!
//! - `full_ecdhe_ecdsa_p256`: a complete client + server handshake through the stateless
//!   cookie acceptor (ClientHello, HelloVerifyRequest, ClientHello with cookie, server flight,
//!   client flight, server flight), ECDHE over X25519, ECDSA P-256 server certificate verified
//!   by WebPKI against the test CA, extended master secret, a session ticket issued.
//! - `resumed_ticket`: an abbreviated handshake with that ticket (cookie exchange included).
//! - `crypto_bound_full`: only the asymmetric operations a full handshake cannot avoid: two
//!   X25519 key generations, two agreements, one ECDSA P-256 signature, one ECDSA P-256
//!   verification (the ServerKeyExchange signature).
//!
//! After criterion's report the bench prints handshakes/s for each and the ratio to the bound,
//! timed again in this same process (median of 5 runs).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::crypto::pem::{parse_certificates, parse_private_key};
use control::crypto::pki_types::{CertificateDer, UnixTime};
use control::crypto::test_pki::TestPki;
use control::crypto::{
    CertificateVerifier, EphemeralKeyPair, PeerVerifier, SeededRng, SigningKey, TicketKeys,
    verify_signature,
};
use control::{
    AcceptOutcome, Acceptor, AcceptorConfig, CertifiedKey, CipherSuite, Config, Connection, Event,
    NamedGroup, SessionTicket, SignatureScheme,
};
use criterion::{BatchSize, Criterion, criterion_group};

const SUITE: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;

struct Setup {
    client: Arc<Config>,
    server: Arc<Config>,
    acceptor: Acceptor,
    server_key: SigningKey,
    server_cert: CertificateDer<'static>,
}

fn setup() -> Setup {
    let pki = TestPki::generate().expect("test PKI");
    let chain = parse_certificates(pki.server.cert_pem.as_bytes()).expect("server cert");
    let key_der = parse_private_key(pki.server.key_pem.as_bytes()).expect("server key");
    let roots = parse_certificates(pki.ca.cert_pem.as_bytes()).expect("CA");
    let verifier = PeerVerifier::WebPki(CertificateVerifier::new(&roots).expect("trust anchor"));
    let mut rng = SeededRng::new(1);
    let ticket_keys = TicketKeys::new(
        &mut rng,
        UnixTime::now(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
    .expect("ticket keys");
    let server = Config {
        cipher_suites: vec![SUITE],
        certificate: Some(Arc::new(CertifiedKey {
            chain: chain.clone(),
            key: SigningKey::from_der(&key_der).expect("signing key"),
        })),
        ticket_keys: Some(Arc::new(Mutex::new(ticket_keys))),
        ..Config::new(PeerVerifier::RejectAll)
    };
    let client = Config {
        cipher_suites: vec![SUITE],
        server_name: Some("localhost".into()),
        ..Config::new(verifier)
    };
    let server = Arc::new(server);
    let acceptor = Acceptor::new(
        Arc::clone(&server),
        AcceptorConfig::default(),
        &mut rng,
        Instant::now(),
    )
    .expect("acceptor");
    Setup {
        client: Arc::new(client),
        server,
        acceptor,
        server_key: SigningKey::from_der(&key_der).expect("signing key"),
        server_cert: chain[0].clone(),
    }
}

const CLIENT: &str = "10.0.0.1:40000";
const SERVER: &str = "10.0.0.2:4433";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address literal")
}

/// One handshake in memory, no loss; returns the client's ticket.
fn handshake(s: &mut Setup, seed: u64, ticket: Option<SessionTicket>) -> Option<SessionTicket> {
    let now = Instant::now();
    let wall = UnixTime::now();
    let (caddr, saddr) = (addr(CLIENT), addr(SERVER));
    let mut client = Connection::client(
        Arc::clone(&s.client),
        Box::new(SeededRng::new(seed)),
        now,
        saddr,
        ticket,
    )
    .expect("client");
    let mut server: Option<Connection> = None;
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let (mut c_done, mut s_done) = (false, false);
    let mut new_ticket = None;
    for _ in 0..32 {
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            let dg = &buf[..t.len];
            match server.as_mut() {
                Some(conn) => conn.handle_datagram(now, wall, caddr, dg),
                None => match s.acceptor.handle_datagram(now, caddr, dg, &mut out) {
                    AcceptOutcome::Reply(r) => {
                        client.handle_datagram(now, wall, saddr, &out[..r.len])
                    }
                    AcceptOutcome::Accept(hello) => {
                        server = Some(
                            Connection::server(
                                Arc::clone(&s.server),
                                Box::new(SeededRng::new(seed ^ 0xffff)),
                                now,
                                wall,
                                hello,
                            )
                            .expect("server"),
                        );
                    }
                    AcceptOutcome::Drop(r) => panic!("acceptor dropped the hello: {r:?}"),
                },
            }
        }
        if let Some(conn) = server.as_mut() {
            while let Some(t) = conn.poll_transmit(now, &mut buf) {
                client.handle_datagram(now, wall, saddr, &buf[..t.len]);
            }
            while let Some(ev) = conn.poll_event() {
                match ev {
                    Event::KeysReady(_) => s_done = true,
                    Event::HandshakeFailed(e) => panic!("server failed: {e}"),
                    _ => {}
                }
            }
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                Event::KeysReady(mut keys) => {
                    c_done = true;
                    new_ticket = keys.ticket.take();
                }
                Event::HandshakeFailed(e) => panic!("client failed: {e}"),
                _ => {}
            }
        }
        if c_done && s_done {
            return new_ticket;
        }
    }
    panic!("handshake did not complete in memory");
}

/// The asymmetric operations of one full ECDHE-ECDSA handshake, nothing else.
fn crypto_bound(s: &Setup, rng: &mut SeededRng, msg: &[u8]) {
    let c = EphemeralKeyPair::generate(NamedGroup::X25519, rng).expect("keygen");
    let sv = EphemeralKeyPair::generate(NamedGroup::X25519, rng).expect("keygen");
    let c_pub = c.public_key().to_vec();
    let s_pub = sv.public_key().to_vec();
    let a = c.agree(&s_pub).expect("agree");
    let b = sv.agree(&c_pub).expect("agree");
    assert_eq!(a.as_bytes(), b.as_bytes());
    let sig = s
        .server_key
        .sign(SignatureScheme::EcdsaSecp256r1Sha256, msg)
        .expect("sign");
    verify_signature(
        SignatureScheme::EcdsaSecp256r1Sha256,
        &s.server_cert,
        msg,
        &sig,
    )
    .expect("verify");
}

fn benches(c: &mut Criterion) {
    let s = std::cell::RefCell::new(setup());
    let mut group = c.benchmark_group("handshake");
    let mut seed = 0u64;
    group.bench_function("full_ecdhe_ecdsa_p256", |b| {
        b.iter(|| {
            seed += 1;
            handshake(&mut s.borrow_mut(), seed, None)
        });
    });
    let next = std::cell::Cell::new(500_000u64);
    let bump = || {
        next.set(next.get() + 1);
        next.get()
    };
    group.bench_function("resumed_ticket", |b| {
        b.iter_batched(
            || handshake(&mut s.borrow_mut(), bump(), None).expect("ticket issued"),
            |ticket| handshake(&mut s.borrow_mut(), bump(), Some(ticket)),
            BatchSize::SmallInput,
        );
    });
    let mut rng = SeededRng::new(5);
    let msg = [0x42u8; 150];
    group.bench_function("crypto_bound_full", |b| {
        b.iter(|| crypto_bound(&s.borrow(), &mut rng, &msg));
    });
    group.finish();
}

criterion_group!(handshake_benches, benches);

/// Median per-operation time of `runs` runs of `n` operations.
fn median_time(runs: usize, n: u32, mut op: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                op();
            }
            t.elapsed() / n
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn print_ratios(quick: bool) {
    let s = std::cell::RefCell::new(setup());
    let (runs, n) = if quick { (1, 2) } else { (5, 200) };
    let mut seed = 1_000_000u64;
    let full = median_time(runs, n, || {
        seed += 1;
        handshake(&mut s.borrow_mut(), seed, None);
    });
    // Resumption: tickets made outside the timed region.
    let mut tickets: Vec<SessionTicket> = (0..(runs as u32 * n))
        .map(|i| handshake(&mut s.borrow_mut(), 2_000_000 + u64::from(i), None).expect("ticket"))
        .collect();
    let resumed = median_time(runs, n, || {
        seed += 1;
        let t = tickets.pop().expect("enough tickets");
        handshake(&mut s.borrow_mut(), seed, Some(t));
    });
    let mut rng = SeededRng::new(9);
    let msg = [0x42u8; 150];
    let bound = median_time(runs, n, || crypto_bound(&s.borrow(), &mut rng, &msg));
    let rate = |d: Duration| 1.0 / d.as_secs_f64();
    println!("B4 handshakes per second, one core, in memory (median of {runs} × {n}):");
    println!(
        "  crypto-only bound (2 X25519 keygen + 2 agree + ECDSA P-256 sign + verify): {:.0}/s ({bound:?})",
        rate(bound)
    );
    println!(
        "  full ECDHE-ECDSA with cookie: {:.0}/s ({full:?}), ratio to bound {:.3}",
        rate(full),
        bound.as_secs_f64() / full.as_secs_f64()
    );
    println!(
        "  resumed (ticket) with cookie: {:.0}/s ({resumed:?}), ratio to full-handshake bound {:.3}",
        rate(resumed),
        bound.as_secs_f64() / resumed.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (one quick pass then).
    let quick = !std::env::args().any(|a| a == "--bench");
    handshake_benches();
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|a| a == "--list") {
        print_ratios(quick);
    }
}
