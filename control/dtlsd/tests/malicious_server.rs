//! The client side of the Adversarial checklist (issue 18): `dtlsd connect` against a
//! malicious server written here, a UDP socket speaking just enough DTLS: endless
//! HelloVerifyRequests with changing cookies (DTLS 1.2), endless HelloRetryRequests with
//! changing cookies (DTLS 1.3), a ServerHello with a cipher suite (1.2) or a key-share group
//! (1.3) the client did not offer, and garbage.
//!
//! Each test attacks several local sources at once and asserts bounded work (the number of
//! ClientHellos each attacked session sends stays small and stops growing: the client gives
//! up), a clear `handshake failed` log line and the failure counter, resident memory that
//! does not grow with the attack (a coarse bound, printed), and that the next source is
//! served: once the test says so, the malicious server forwards new peers honestly to a
//! real `dtlsd serve`, and a fresh source's datagram comes back echoed.
//!
//! Every wait has a deadline only for liveness; daemons are killed on drop.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::mitm::{Rng, plaintext_record, split_records};
use common::probe::rss_kib;
use common::{Daemon, EchoBackend, TempDir, certs, wait_until};

/// Sources attacked at once.
const VICTIMS: usize = 16;
/// The most ClientHellos one attacked handshake may send: the engine follows at most four
/// HelloVerifyRequests (1.2) and one HelloRetryRequest (1.3); the rest is room for
/// retransmissions within the 3 s handshake timeout the tests configure.
const MAX_HELLOS_PER_VICTIM: usize = 10;
/// Resident memory the whole attack may add to `dtlsd connect` (coarse: a leak per
/// handshake this test could see would be far larger than its few kilobytes per session).
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// What the malicious server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// A HelloVerifyRequest with a new cookie to every ClientHello.
    EndlessHelloVerifyRequests,
    /// A HelloRetryRequest with a new cookie to every ClientHello.
    EndlessHelloRetryRequests,
    /// DTLS 1.2: a ServerHello choosing TLS_RSA_WITH_AES_256_CBC_SHA, never offered.
    SuiteNotOffered,
    /// DTLS 1.3: a ServerHello whose key share is for secp521r1, never offered.
    GroupNotOffered,
    /// Random bytes of random length to every datagram.
    Garbage,
}

/// The HelloRetryRequest's ServerHello.random (RFC 8446 §4.1.3: SHA-256 of
/// "HelloRetryRequest").
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// A ClientHello seen in a datagram: its message_seq and legacy_session_id.
struct Hello {
    message_seq: u16,
    session_id: Vec<u8>,
}

/// The first unfragmented ClientHello of `datagram`, if any.
fn client_hello(datagram: &[u8]) -> Option<Hello> {
    split_records(datagram, 0).into_iter().find_map(|r| {
        let b = &r.bytes;
        if b.first() != Some(&22) || r.protected || b.len() < 13 + 12 + 35 {
            return None;
        }
        let hs = &b[13..];
        if hs[0] != 1 || hs[6..9] != [0, 0, 0] {
            return None;
        }
        let message_seq = u16::from_be_bytes([hs[4], hs[5]]);
        let body = &hs[12..];
        let sid_len = usize::from(*body.get(34)?);
        let session_id = body.get(35..35 + sid_len)?.to_vec();
        Some(Hello {
            message_seq,
            session_id,
        })
    })
}

/// One unfragmented handshake message of `msg_type` with `message_seq` around `body`.
fn handshake(msg_type: u8, message_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("length").to_be_bytes();
    let mut m = vec![msg_type];
    m.extend(&len[1..]);
    m.extend(message_seq.to_be_bytes());
    m.extend([0, 0, 0]);
    m.extend(&len[1..]);
    m.extend(body);
    m
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend(u16::try_from(data.len()).expect("len").to_be_bytes());
    e.extend(data);
    e
}

/// A ServerHello body: `random`, the session ID echoed, `suite`, no compression, `exts`.
fn server_hello_body(random: &[u8], session_id: &[u8], suite: u16, exts: &[u8]) -> Vec<u8> {
    let mut b = vec![0xfe, 0xfd];
    b.extend(random);
    b.push(u8::try_from(session_id.len()).expect("sid"));
    b.extend(session_id);
    b.extend(suite.to_be_bytes());
    b.push(0);
    if !exts.is_empty() {
        b.extend(u16::try_from(exts.len()).expect("exts").to_be_bytes());
        b.extend(exts);
    }
    b
}

/// What the server sends back to `datagram` from a victim, `n` being its running count of
/// answers to that victim.
fn answer(attack: Attack, datagram: &[u8], n: u64, rng: &mut Rng) -> Option<Vec<u8>> {
    if attack == Attack::Garbage {
        let len = 1 + rng.below(300);
        return Some(rng.bytes(len));
    }
    let hello = client_hello(datagram)?;
    let message = match attack {
        Attack::EndlessHelloVerifyRequests => {
            // RFC 6347 §4.2.1: HelloVerifyRequest { server_version, cookie<0..2^8-1> }, with
            // the message_seq of the ClientHello it answers (§4.2.2). A new cookie each time.
            let mut body = vec![0xfe, 0xff, 32];
            body.extend(rng.bytes(32));
            handshake(3, hello.message_seq, &body)
        }
        Attack::EndlessHelloRetryRequests => {
            let mut cookie = 32u16.to_be_bytes().to_vec();
            cookie.extend(rng.bytes(32));
            let mut exts = extension(43, &[0xfe, 0xfc]);
            exts.extend(extension(44, &cookie));
            let body = server_hello_body(&HRR_RANDOM, &hello.session_id, 0x1301, &exts);
            handshake(2, u16::try_from(n).unwrap_or(u16::MAX), &body)
        }
        Attack::SuiteNotOffered => {
            let body = server_hello_body(&rng.bytes(32), &hello.session_id, 0x0035, &[]);
            handshake(2, 0, &body)
        }
        Attack::GroupNotOffered => {
            let mut share = 0x0019u16.to_be_bytes().to_vec();
            share.extend(32u16.to_be_bytes());
            share.extend(rng.bytes(32));
            let mut exts = extension(43, &[0xfe, 0xfc]);
            exts.extend(extension(51, &share));
            let body = server_hello_body(&rng.bytes(32), &hello.session_id, 0x1301, &exts);
            handshake(2, 0, &body)
        }
        Attack::Garbage => unreachable!("handled above"),
    };
    Some(plaintext_record(22, 0, n, &message))
}

/// The malicious server: attacks every peer it hears from until [`Malicious::turn_honest`];
/// peers first heard after that are forwarded to `honest` (a real `dtlsd serve`).
struct Malicious {
    addr: SocketAddr,
    /// Datagrams (ClientHellos for the hello attacks) received from each attacked peer.
    received: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    honest_now: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Malicious {
    fn start(attack: Attack, seed: u64, honest: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind malicious server");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind forwarder");
        for s in [&sock, &back] {
            s.set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
        }
        let addr = sock.local_addr().expect("address");
        let received = Arc::new(Mutex::new(HashMap::new()));
        let honest_now = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (counts, flag, halt) = (
            Arc::clone(&received),
            Arc::clone(&honest_now),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut answers: HashMap<SocketAddr, u64> = HashMap::new();
            let mut forwarded: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            while !halt.load(Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let known = counts.lock().expect("lock").contains_key(&from);
                    if !known && (flag.load(Relaxed) || forwarded == Some(from)) {
                        forwarded = Some(from);
                        let _ = back.send_to(&buf[..n], honest);
                    } else {
                        let is_hello =
                            attack == Attack::Garbage || client_hello(&buf[..n]).is_some();
                        let mut c = counts.lock().expect("lock");
                        let count = c.entry(from).or_insert(0);
                        *count += usize::from(is_hello);
                        drop(c);
                        let k = answers.entry(from).or_insert(0);
                        if let Some(reply) = answer(attack, &buf[..n], *k, &mut rng) {
                            *k += 1;
                            let _ = sock.send_to(&reply, from);
                        }
                    }
                }
                if let (Some(to), Ok(n)) = (forwarded, back.recv(&mut buf)) {
                    let _ = sock.send_to(&buf[..n], to);
                }
            }
        });
        Self {
            addr,
            received,
            honest_now,
            stop,
            thread: Some(thread),
        }
    }

    fn hellos(&self) -> HashMap<SocketAddr, usize> {
        self.received.lock().expect("lock").clone()
    }

    fn turn_honest(&self) {
        self.honest_now.store(true, Relaxed);
    }
}

impl Drop for Malicious {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `attack` against `dtlsd connect --versions <version>` and checks the outcome;
/// `reason` is the `dtlsd_handshakes_failed_total` label the failures count under, `says`
/// what the `handshake failed` line gives as the reason.
fn attack_connect(attack: Attack, version: &str, reason: &str, says: &str) {
    let pki = TempDir::new(&format!("malicious-{attack:?}"));
    certs(&pki);
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &pki, &["--shards", "1"]);
    let evil = Malicious::start(attack, 0x5eed_0018, serve.listen);
    let config = pki.file("connect.toml");
    std::fs::write(&config, "[connect]\n\n[limits]\nhandshake_timeout = 3\n").expect("write");
    let connect = Daemon::start_connect_with_metrics(
        evil.addr,
        &pki,
        &["--config", &config, "--versions", version, "--shards", "1"],
    );
    let rss_before = rss_kib(connect.pid());

    // Every victim source sends one datagram: its handshake meets the attack.
    let victims: Vec<UdpSocket> = (0..VICTIMS)
        .map(|i| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind victim");
            s.connect(connect.listen).expect("connect victim");
            s.send(format!("victim {i}").as_bytes()).expect("send");
            s
        })
        .collect();
    let failed_series = format!("dtlsd_handshakes_failed_total{{reason=\"{reason}\"}}");
    let log = || format!("{:?}\n{}", evil.hellos(), connect.log());
    wait_until("every attacked handshake fails", log, || {
        connect.metric(&failed_series).unwrap_or(0) >= VICTIMS as u64
    });
    // The client gave up: what each victim's session sent stays put.
    let first = evil.hellos();
    std::thread::sleep(Duration::from_secs(2));
    let second = evil.hellos();
    assert_eq!(
        first,
        second,
        "the client kept going after it failed\n{}",
        log()
    );
    assert_eq!(second.len(), VICTIMS, "{}", log());
    for (peer, n) in &second {
        assert!(
            (1..=MAX_HELLOS_PER_VICTIM).contains(n),
            "{peer}: {n} ClientHellos (at most {MAX_HELLOS_PER_VICTIM})\n{}",
            log()
        );
    }
    let lines: Vec<String> = connect
        .log()
        .lines()
        .filter(|l| l.contains("handshake failed") && l.contains(&format!("server={}", evil.addr)))
        .map(str::to_owned)
        .collect();
    // The lines are rate-limited per source (the server's address here): at least one, and
    // the counter above has every failure.
    assert!(!lines.is_empty(), "{}", log());
    println!("{attack:?}: {}", lines[0]);
    assert!(lines[0].contains(says), "expected {says:?}: {}", lines[0]);
    let rss_after = rss_kib(connect.pid());
    println!(
        "{attack:?}: hellos per victim {:?}; rss {rss_before} -> {rss_after} KiB",
        second.values().collect::<Vec<_>>()
    );
    assert!(
        rss_after <= rss_before + MAX_RSS_GROWTH_KIB,
        "rss {rss_before} -> {rss_after} KiB"
    );
    drop(victims);

    // The next source is served (the server behind the same address now honest).
    evil.turn_honest();
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind");
    source.connect(connect.listen).expect("connect");
    source
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 256];
    let msg = b"the next source after the attack";
    source.send(msg).expect("send");
    loop {
        if let Ok(n) = source.recv(&mut buf) {
            assert_eq!(&buf[..n], msg);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "next source not served\n{}",
            log()
        );
    }
}

#[test]
fn connect_bounds_endless_hello_verify_requests_with_changing_cookies() {
    attack_connect(
        Attack::EndlessHelloVerifyRequests,
        "1.2",
        "protocol",
        "unexpected message in state ExpectServerHello: handshake type 3",
    );
}

#[test]
fn connect_bounds_endless_hello_retry_requests_with_changing_cookies() {
    attack_connect(
        Attack::EndlessHelloRetryRequests,
        "1.3",
        "protocol",
        "unexpected message in state ExpectServerHello: handshake type 2",
    );
}

#[test]
fn connect_rejects_a_server_hello_with_a_suite_it_did_not_offer() {
    attack_connect(
        Attack::SuiteNotOffered,
        "1.2",
        "protocol",
        "server chose a suite we did not offer",
    );
}

#[test]
fn connect_rejects_a_server_hello_with_a_group_it_did_not_offer() {
    attack_connect(
        Attack::GroupNotOffered,
        "1.3",
        "protocol",
        "key_share group not offered",
    );
}

#[test]
fn connect_gives_up_on_a_server_answering_garbage_dtls12() {
    attack_connect(
        Attack::Garbage,
        "1.2",
        "timeout",
        "handshake timed out in ExpectServerHello",
    );
}

#[test]
fn connect_gives_up_on_a_server_answering_garbage_dtls13() {
    attack_connect(
        Attack::Garbage,
        "1.3",
        "timeout",
        "handshake timed out in ExpectServerHello",
    );
}
