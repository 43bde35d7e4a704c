//! The backend learns who the client is, over real sockets: `dtlsd serve --proxy-protocol`
//! puts a PROXY v2 header (on the first or on every datagram) or a Simple Proxy Protocol
//! header in front of each session's plaintext; a test backend parses each format (written
//! here from the specifications' field layouts, not from the daemon's encoder), checks the
//! client's real address and port (the client binds a distinct 127.0.0.x) and its identity,
//! strips the header and echoes the payload, which reaches the client as it was sent.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Client, Daemon, TempDir, certs};
use control::{CertifiedKey, Config, PeerVerifier, Psk};
use dtls_crypto::CertificateVerifier;
use dtls_runtime::upstream_header::crc32c;

const PSK_HEX: &str = "00112233445566778899aabbccddeeff";

/// One parsed PROXY v2 header (§2.2 of HAProxy's proxy-protocol.txt).
#[derive(Debug, Default, PartialEq, Eq)]
struct V2 {
    family: u8,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    ssl_client: u8,
    ssl_verify: u32,
    ssl_version: Option<String>,
    ssl_cipher: Option<String>,
    ssl_cn: Option<String>,
    psk_identity: Option<Vec<u8>>,
    crc_ok: bool,
}

/// What one datagram at the backend held.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    None,
    V2(V2),
    /// SPP: client and proxy addresses.
    Spp(SocketAddr, SocketAddr),
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// TLVs: type, 2-byte length, value.
fn tlvs(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 3 {
        let len = usize::from(be16(&b[1..3]));
        assert!(b.len() >= 3 + len, "a TLV runs past its container");
        out.push((b[0], &b[3..3 + len]));
        b = &b[3 + len..];
    }
    assert!(b.is_empty(), "trailing bytes after the TLVs");
    out
}

/// A PROXY v2 header at the start of `d`, and the payload after it.
fn parse_v2(d: &[u8]) -> Option<(V2, &[u8])> {
    const SIG: &[u8] = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a";
    if d.len() < 16 || &d[..12] != SIG {
        return None;
    }
    assert_eq!(d[12], 0x21, "version 2, command PROXY");
    let len = 16 + usize::from(be16(&d[14..16]));
    assert!(d.len() >= len, "the header's length runs past the datagram");
    let (header, payload) = d.split_at(len);
    let mut v2 = V2 {
        family: d[13],
        ..V2::default()
    };
    let tlv_start = match d[13] {
        0x12 => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]));
            v2.source = Some(SocketAddr::new(ip(16), be16(&d[24..])));
            v2.destination = Some(SocketAddr::new(ip(20), be16(&d[26..])));
            28
        }
        0x22 => {
            let ip = |o: usize| {
                let octets: [u8; 16] = d[o..o + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            v2.source = Some(SocketAddr::new(ip(16), be16(&d[48..])));
            v2.destination = Some(SocketAddr::new(ip(32), be16(&d[50..])));
            52
        }
        other => panic!("unexpected family/protocol byte {other:#04x}"),
    };
    let mut offset = tlv_start;
    for (kind, value) in tlvs(&header[tlv_start..]) {
        match kind {
            0x20 => {
                v2.ssl_client = value[0];
                v2.ssl_verify = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
                for (sub, v) in tlvs(&value[5..]) {
                    let text = Some(String::from_utf8(v.to_vec()).expect("US-ASCII"));
                    match sub {
                        0x21 => v2.ssl_version = text,
                        0x22 => v2.ssl_cn = text,
                        0x23 => v2.ssl_cipher = text,
                        other => panic!("unexpected SSL sub-TLV {other:#04x}"),
                    }
                }
            }
            0xe0 => v2.psk_identity = Some(value.to_vec()),
            0x03 => {
                // §2.2.3: zero the field, compute the CRC32c of the whole header.
                let mut zeroed = header.to_vec();
                let at = offset + 3;
                zeroed[at..at + 4].fill(0);
                let got = u32::from_be_bytes(value.try_into().expect("4 bytes"));
                v2.crc_ok = crc32c(&zeroed) == got;
            }
            other => panic!("unexpected TLV {other:#04x}"),
        }
        offset += 3 + value.len();
    }
    Some((v2, payload))
}

/// A Simple Proxy Protocol header at the start of `d` (magic 0x56EC, 38 bytes).
fn parse_spp(d: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    if d.len() < 38 || be16(d) != 0x56ec {
        return None;
    }
    let ip = |o: usize| {
        let octets: [u8; 16] = d[o..o + 16].try_into().expect("16 bytes");
        let v6 = Ipv6Addr::from(octets);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    Some((
        SocketAddr::new(ip(2), be16(&d[34..])),
        SocketAddr::new(ip(18), be16(&d[36..])),
        &d[38..],
    ))
}

/// What the backend saw: each datagram's header and payload, in order.
type Seen = Vec<(Header, Vec<u8>)>;

/// A UDP backend that records each datagram's header, strips it and echoes the payload.
struct ParsingBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ParsingBackend {
    fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("backend address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                let (header, payload) = if let Some((v2, payload)) = parse_v2(d) {
                    (Header::V2(v2), payload)
                } else if let Some((client, proxy, payload)) = parse_spp(d) {
                    (Header::Spp(client, proxy), payload)
                } else {
                    (Header::None, d)
                };
                // Logged before the echo: a client that has its echo finds the header here.
                log.lock().expect("log").push((header, payload.to_vec()));
                let _ = sock.send_to(payload, from);
            }
        });
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The datagrams seen so far: header and payload.
    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().expect("log"))
    }
}

impl Drop for ParsingBackend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn psk_client() -> Arc<Config> {
    let key = (0..PSK_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PSK_HEX[i..i + 2], 16).expect("hex"))
        .collect();
    Arc::new(
        Config {
            psks: vec![Psk {
                identity: b"client1".to_vec(),
                key: zeroize::Zeroizing::new(key),
            }],
            ..Config::new(PeerVerifier::RejectAll)
        }
        .psk_suites_only(),
    )
}

fn cert_client(pki: &TempDir) -> Arc<Config> {
    let chain = dtls_crypto::pem::load_certificates(pki.file("client.pem")).expect("cert");
    let key = control::SigningKey::from_pem_file(pki.file("client.key")).expect("key");
    let ca = CertificateVerifier::from_pem_file(pki.file("ca.pem")).expect("ca");
    Arc::new(Config {
        certificate: Some(Arc::new(CertifiedKey { chain, key })),
        server_name: Some("localhost".into()),
        ..Config::new(PeerVerifier::WebPki(ca))
    })
}

/// Starts the daemon with `mode`, connects a client from `client_ip` with `config`, echoes
/// `payloads` one after another; returns what the backend saw and the client's and the
/// daemon's addresses.
fn run(
    mode: &str,
    client_ip: [u8; 4],
    config: impl FnOnce(&TempDir) -> Arc<Config>,
    payloads: &[&[u8]],
) -> (Seen, SocketAddr, SocketAddr) {
    let pki = TempDir::new(&format!("proxy-{mode}"));
    certs(&pki);
    let backend = ParsingBackend::start();
    let psk = format!("client1:{PSK_HEX}");
    let ca = pki.file("ca.pem");
    let mut daemon = Daemon::start_serve(
        backend.addr,
        &pki,
        &[
            "--shards",
            "1",
            "--proxy-protocol",
            mode,
            "--psk",
            &psk,
            "--client-ca",
            &ca,
        ],
    );
    let mut client = Client::connect_from(
        config(&pki),
        daemon.listen,
        IpAddr::from(client_ip),
        Duration::from_secs(15),
    );
    for p in payloads {
        // The echo arrives as the backend sent it: no header on the way back.
        client.echo(p);
    }
    let seen = backend.take();
    let client_addr = client.local_addr();
    assert!(daemon.terminate().success(), "{}", daemon.log());
    (seen, client_addr, daemon.listen)
}

/// The payloads the backend saw, in order, each once (the client resends on a silent
/// second, so a payload may arrive twice).
fn payloads(seen: &[(Header, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (_, p) in seen {
        if out.last() != Some(p) {
            out.push(p.clone());
        }
    }
    out
}

#[test]
fn v2_first_carries_the_psk_client_on_its_first_datagram_only() {
    let (seen, client, listen) = run(
        "v2-first",
        [127, 0, 0, 2],
        |_| psk_client(),
        &[b"one", b"two", b"three"],
    );
    assert_eq!(payloads(&seen), [&b"one"[..], b"two", b"three"]);
    let Header::V2(v2) = &seen[0].0 else {
        panic!("the first datagram has a PROXY v2 header: {seen:?}");
    };
    assert_eq!(v2.family, 0x12, "UDP over IPv4");
    assert_eq!(v2.source, Some(client));
    assert_eq!(client.ip(), IpAddr::from([127, 0, 0, 2]));
    assert_eq!(v2.destination, Some(listen));
    assert_eq!(v2.psk_identity.as_deref(), Some(&b"client1"[..]));
    assert_eq!(v2.ssl_version.as_deref(), Some("DTLSv1.2"));
    assert!(
        v2.ssl_cipher
            .as_deref()
            .is_some_and(|c| c.starts_with("PSK-") || c.starts_with("ECDHE-PSK-")),
        "{v2:?}"
    );
    assert_eq!(
        (v2.ssl_client, v2.ssl_verify),
        (0x01, 1),
        "TLS, no certificate"
    );
    assert_eq!(v2.ssl_cn, None);
    assert!(v2.crc_ok, "CRC32c checks out");
    assert!(
        seen[1..].iter().all(|(h, _)| *h == Header::None),
        "later datagrams carry no header: {seen:?}"
    );
}

#[test]
fn v2_every_carries_the_certificate_client_on_every_datagram() {
    let (seen, client, listen) = run(
        "v2-every",
        [127, 0, 0, 3],
        cert_client,
        &[b"one", b"two", b"three"],
    );
    assert_eq!(payloads(&seen), [&b"one"[..], b"two", b"three"]);
    for (header, _) in &seen {
        let Header::V2(v2) = header else {
            panic!("every datagram has a PROXY v2 header: {seen:?}");
        };
        assert_eq!(v2.source, Some(client));
        assert_eq!(client.ip(), IpAddr::from([127, 0, 0, 3]));
        assert_eq!(v2.destination, Some(listen));
        // The test PKI's client certificate: CN "client.test", verified by --client-ca.
        assert_eq!(v2.ssl_cn.as_deref(), Some("client.test"));
        assert_eq!((v2.ssl_client, v2.ssl_verify), (0x07, 0));
        assert!(
            v2.ssl_cipher
                .as_deref()
                .is_some_and(|c| c.starts_with("ECDHE-ECDSA-")),
            "{v2:?}"
        );
        assert_eq!(v2.psk_identity, None);
        assert!(v2.crc_ok);
    }
}

#[test]
fn spp_carries_the_client_on_every_datagram() {
    let (seen, client, listen) = run("spp", [127, 0, 0, 4], |_| psk_client(), &[b"one", b"two"]);
    assert_eq!(payloads(&seen), [&b"one"[..], b"two"]);
    assert_eq!(client.ip(), IpAddr::from([127, 0, 0, 4]));
    for (header, _) in &seen {
        assert_eq!(*header, Header::Spp(client, listen), "{seen:?}");
    }
}

#[test]
fn off_sends_the_plaintext_alone() {
    let (seen, _, _) = run("off", [127, 0, 0, 5], |_| psk_client(), &[b"one", b"two"]);
    assert_eq!(payloads(&seen), [&b"one"[..], b"two"]);
    assert!(seen.iter().all(|(h, _)| *h == Header::None), "{seen:?}");
}

/// With several listen addresses, the header names the one the client sent to: each
/// session's shard's own.
#[test]
fn each_listen_address_is_named_as_the_destination_of_its_sessions() {
    let pki = TempDir::new("proxy-two-listen");
    certs(&pki);
    let backend = ParsingBackend::start();
    let psk = format!("client1:{PSK_HEX}");
    let second = SocketAddr::from(([127, 0, 0, 3], common::free_udp_port()));
    let daemon = Daemon::start_serve(
        backend.addr,
        &pki,
        &[
            "--listen",
            &second.to_string(),
            "--shards",
            "2",
            "--proxy-protocol",
            "spp",
            "--psk",
            &psk,
        ],
    );
    for (listen, client_ip) in [(daemon.listen, [127, 0, 0, 6]), (second, [127, 0, 0, 7])] {
        let mut client = Client::connect_from(
            psk_client(),
            listen,
            IpAddr::from(client_ip),
            Duration::from_secs(15),
        );
        client.echo(b"which address?");
        let seen = backend.take();
        assert!(!seen.is_empty());
        for (header, _) in &seen {
            assert_eq!(
                *header,
                Header::Spp(client.local_addr(), listen),
                "{seen:?}"
            );
        }
    }
}
