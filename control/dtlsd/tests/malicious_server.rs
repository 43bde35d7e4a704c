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
    /// DTLS 1.2: a valid ServerHello, then a Certificate in many fragments that lie: each
    /// claims another total length (some far past any cap, up to 2^24 − 1), offsets
    /// anywhere, some past the length they claim. Never a whole message.
    LyingCertificateFragments,
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

/// Certificate fragments per ClientHello in [`Attack::LyingCertificateFragments`].
const LYING_FRAGMENTS: usize = 64;

/// DTLS 1.2 ServerHello extensions a client that requires them accepts: an empty
/// extended_master_secret (RFC 7627) and an empty renegotiation_info (RFC 5746).
fn server_hello_extensions12() -> Vec<u8> {
    let mut exts = extension(23, &[]);
    exts.extend(extension(0xff01, &[0]));
    exts
}

/// One handshake fragment (RFC 6347 §4.2.2) of a message of `msg_type` that claims
/// `length` bytes in all, at `offset`, carrying `body`.
fn fragment(msg_type: u8, message_seq: u16, length: u32, offset: u32, body: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type];
    m.extend(&length.to_be_bytes()[1..]);
    m.extend(message_seq.to_be_bytes());
    m.extend(&offset.to_be_bytes()[1..]);
    m.extend(&u32::try_from(body.len()).expect("len").to_be_bytes()[1..]);
    m.extend(body);
    m
}

/// The datagrams the server sends back to `datagram` from a victim; `n` is its running
/// count of records sent to that victim (their sequence numbers), advanced here.
fn answer(attack: Attack, datagram: &[u8], n: &mut u64, rng: &mut Rng) -> Vec<Vec<u8>> {
    if attack == Attack::Garbage {
        let len = 1 + rng.below(300);
        *n += 1;
        return vec![rng.bytes(len)];
    }
    let Some(hello) = client_hello(datagram) else {
        return Vec::new();
    };
    if attack == Attack::LyingCertificateFragments {
        // ECDHE-ECDSA-AES128-GCM-SHA256, offered by default.
        let body = server_hello_body(
            &rng.bytes(32),
            &hello.session_id,
            0xc02b,
            &server_hello_extensions12(),
        );
        let mut out = vec![plaintext_record(22, 0, *n, &handshake(2, 0, &body))];
        *n += 1;
        for i in 0..LYING_FRAGMENTS {
            let length: u32 = match i % 4 {
                0 => 0x00ff_ffff,
                1 => 65_537 + u32::try_from(rng.below(1 << 20)).expect("small"),
                _ => 4_000 + u32::try_from(rng.below(60_000)).expect("small"),
            };
            let len = 600 + rng.below(500);
            // Offsets anywhere up to past the claimed end.
            let offset = u32::try_from(rng.below(length as usize + 2_000)).expect("24 bits");
            let m = fragment(11, 1, length, offset.min(0x00ff_ffff), &rng.bytes(len));
            out.push(plaintext_record(22, 0, *n, &m));
            *n += 1;
        }
        return out;
    }
    let n_now = *n;
    *n += 1;
    let n = n_now;
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
        Attack::Garbage | Attack::LyingCertificateFragments => unreachable!("handled above"),
    };
    vec![plaintext_record(22, 0, n, &message)]
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
                        for reply in answer(attack, &buf[..n], k, &mut rng) {
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
fn connect_bounds_a_certificate_chain_of_many_lying_fragments() {
    // The client holds what fits its caps (a Certificate claiming more than 64 KiB is
    // never held, conflicting lengths are never merged), never completes the message, and
    // gives up when the handshake's time is up.
    attack_connect(
        Attack::LyingCertificateFragments,
        "1.2",
        "timeout",
        "handshake timed out in ExpectServerCertificate",
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

/// What the renegotiating server saw.
#[derive(Debug, Default, Clone)]
struct RenegotiationLog {
    /// Handshakes its acceptor let through (a new ClientHello with a valid cookie).
    handshakes: usize,
    /// Application records echoed.
    echoed: usize,
    /// HelloRequests sealed and sent.
    hello_requests: usize,
    /// no_renegotiation warning alerts from the client (RFC 5246 §7.2.2).
    no_renegotiation: usize,
    /// Any other alert from the client.
    other_alerts: Vec<[u8; 2]>,
}

/// HelloRequests the server sends after each echo: one, then (from the third echo on) a
/// flood, more than the client's engine can answer (it keeps 64 sequence numbers of the
/// session for its own records; past them it refuses silently).
const HELLO_REQUEST_FLOOD: usize = 150;

/// A DTLS 1.2 server of ours (our engine; `dtlsd connect` verifies its certificate) that
/// completes the handshake, echoes application data under the session's keys, and after
/// each echo asks the client to renegotiate: HelloRequests (RFC 5246 §7.4.1.1) sealed
/// under the session's keys, as only the real server can.
struct Renegotiating {
    addr: SocketAddr,
    log: Arc<Mutex<RenegotiationLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Renegotiating {
    fn start(pki: &TempDir) -> Self {
        use control::crypto::SystemRng;
        use control::crypto::pki_types::UnixTime;
        use control::{
            AcceptOutcome, Acceptor, AcceptorConfig, CertifiedKey, Config, Connection, Event,
            PeerVerifier, SigningKey,
        };
        use dataplane::record::{ContentType, DTLS_1_2, Opener, ReplayWindow, Sealer};

        let config = Arc::new(Config {
            certificate: Some(Arc::new(CertifiedKey {
                chain: dtls_crypto::pem::load_certificates(pki.file("server.pem")).expect("cert"),
                key: SigningKey::from_pem_file(pki.file("server.key")).expect("key"),
            })),
            rrc: false,
            ..Config::new(PeerVerifier::RejectAll)
        });
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind renegotiating server");
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let addr = sock.local_addr().expect("address");
        let log = Arc::new(Mutex::new(RenegotiationLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, halt) = (Arc::clone(&log), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut rng = SystemRng::new();
            let mut acceptor = Acceptor::new(
                Arc::clone(&config),
                AcceptorConfig::default(),
                &mut rng,
                Instant::now(),
            )
            .expect("acceptor");
            let mut engine: Option<(SocketAddr, Connection)> = None;
            let mut keys: Option<(Sealer, Opener)> = None;
            let (mut buf, mut out) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            let mut message_seq = 5u16;
            let seal = |sealer: &mut Sealer, content: ContentType, plaintext: &[u8]| {
                let mut record = vec![0u8; sealer.record_len(plaintext.len())];
                let at = sealer.plaintext_offset();
                record[at..at + plaintext.len()].copy_from_slice(plaintext);
                let n = sealer
                    .seal(content, DTLS_1_2, &mut record, plaintext.len())
                    .expect("seal");
                record.truncate(n);
                record
            };
            while !halt.load(Relaxed) {
                let now = Instant::now();
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let datagram = &buf[..n];
                    // Epoch 1, not handshake content: ours to open once the keys are here.
                    let protected =
                        datagram.len() > 13 && datagram[3..5] != [0, 0] && datagram[0] != 22;
                    let client = engine.as_ref().map(|(c, _)| *c);
                    if let (true, Some((sealer, opener)), Some(client)) =
                        (protected, keys.as_mut(), client)
                    {
                        for r in split_records(datagram, 0) {
                            let mut record = r.bytes.clone();
                            let Ok(opened) = opener.open(&mut record) else {
                                continue;
                            };
                            let mut log = seen.lock().expect("lock");
                            match opened.content_type {
                                ContentType::ApplicationData => {
                                    let echo = seal(
                                        sealer,
                                        ContentType::ApplicationData,
                                        opened.plaintext,
                                    );
                                    let _ = sock.send_to(&echo, client);
                                    log.echoed += 1;
                                    let requests = if log.echoed >= 3 {
                                        HELLO_REQUEST_FLOOD
                                    } else {
                                        1
                                    };
                                    for _ in 0..requests {
                                        // HelloRequest: type 0, empty body.
                                        let m = fragment(0, message_seq, 0, 0, &[]);
                                        message_seq = message_seq.wrapping_add(1);
                                        let r = seal(sealer, ContentType::Handshake, &m);
                                        let _ = sock.send_to(&r, client);
                                        log.hello_requests += 1;
                                    }
                                }
                                ContentType::Alert => match opened.plaintext {
                                    [1, 100] => log.no_renegotiation += 1,
                                    [a, b] => log.other_alerts.push([*a, *b]),
                                    _ => log.other_alerts.push([0, 0]),
                                },
                                _ => {}
                            }
                        }
                    } else if client == Some(from) {
                        if let Some((_, conn)) = engine.as_mut() {
                            conn.handle_datagram(now, UnixTime::now(), from, datagram);
                        }
                    } else {
                        match acceptor.handle_datagram(now, from, datagram, &mut out) {
                            AcceptOutcome::Reply(t) => {
                                let _ = sock.send_to(&out[..t.len], t.destination);
                            }
                            AcceptOutcome::Accept(hello) => {
                                seen.lock().expect("lock").handshakes += 1;
                                keys = None;
                                let conn = Connection::server(
                                    Arc::clone(&config),
                                    Box::new(SystemRng::new()),
                                    now,
                                    UnixTime::now(),
                                    hello,
                                )
                                .expect("server engine");
                                engine = Some((from, conn));
                            }
                            AcceptOutcome::Drop(_) => {}
                        }
                    }
                }
                if let Some((client, conn)) = &mut engine {
                    if conn.poll_timeout().is_some_and(|t| t <= now) {
                        conn.handle_timeout(now);
                    }
                    while let Some(t) = conn.poll_transmit(now, &mut out) {
                        let _ = sock.send_to(&out[..t.len], *client);
                    }
                    while let Some(event) = conn.poll_event() {
                        if let Event::KeysReady(k) = event {
                            let replay = ReplayWindow::new(k.replay_window.clamp(64, 4096));
                            let (read, write) = k.records.into_dtls12().expect("DTLS 1.2 keys");
                            keys = Some((
                                Sealer::new(write.epoch, write.key, write.next_sequence)
                                    .expect("sealer"),
                                Opener::new(read.epoch, read.key, replay),
                            ));
                        }
                    }
                }
            }
        });
        Self {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn log(&self) -> RenegotiationLog {
        self.log.lock().expect("lock").clone()
    }
}

impl Drop for Renegotiating {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn connect_refuses_renegotiation_requests_and_keeps_the_session() {
    let pki = TempDir::new("malicious-renegotiation");
    certs(&pki);
    let server = Renegotiating::start(&pki);
    let connect = Daemon::start_connect_with_metrics(
        server.addr,
        &pki,
        &["--versions", "1.2", "--shards", "1"],
    );
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind");
    source.connect(connect.listen).expect("connect");
    source
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let log = || format!("{:?}\n{}", server.log(), connect.log());
    let mut buf = [0u8; 256];
    // Each echo is followed by HelloRequests (a flood from the third on); the session
    // carries every later payload all the same.
    for i in 0..6 {
        let msg = format!("payload {i} across renegotiation requests");
        let deadline = Instant::now() + Duration::from_secs(20);
        source.send(msg.as_bytes()).expect("send");
        loop {
            if let Ok(n) = source.recv(&mut buf) {
                assert_eq!(&buf[..n], msg.as_bytes());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "payload {i} not echoed\n{}",
                log()
            );
            source.send(msg.as_bytes()).expect("send");
        }
    }
    wait_until("the client answers a HelloRequest", log, || {
        server.log().no_renegotiation >= 1
    });
    let seen = server.log();
    println!("{seen:?}");
    assert_eq!(seen.handshakes, 1, "no new handshake: {}", log());
    assert!(seen.other_alerts.is_empty(), "{}", log());
    // RFC 5246 §7.2.2: refused with a warning; never more answers than requests, and no
    // more than the engine's reserve of sequence numbers (the rest are refused silently).
    assert!(
        seen.no_renegotiation <= seen.hello_requests.min(64),
        "{}",
        log()
    );
    assert!(seen.hello_requests > 64, "the flood went out: {}", log());
    let lines: Vec<String> = connect
        .log()
        .lines()
        .filter(|l| l.contains("renegotiation refused") && l.contains(&server.addr.to_string()))
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty(), "no log line\n{}", log());
    println!("{}", lines[0]);
    // Rate-limited per source: a flood of requests is not a flood of lines.
    assert!(lines.len() < 20, "{} lines\n{}", lines.len(), log());
    assert_eq!(
        connect.metric("dtlsd_handshakes_completed_total"),
        Some(1),
        "{}",
        log()
    );
}
