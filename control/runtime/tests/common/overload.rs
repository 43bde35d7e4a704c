//! What the overload tests share: DTLS 1.2 clients of our engine driven against the
//! [`Daemon`] on its virtual clock (real clients and established sessions), spoofed
//! 127.0.0.0/8 sources, and one daemon turn that hands each answer to its peer.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use control::{CipherSuite, Config, Connection, Event};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN, Sealer};
use dtls_crypto::SeededRng;
use dtls_proto::ProtocolVersion;

use super::daemon::Daemon;
use super::{test_wall, verifier};

/// The daemon's address as its clients see it.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);

/// A DTLS 1.2 client of ours (ECDHE-ECDSA, AES-128-GCM) toward [`SERVER`].
pub fn client(seed: u64, now: Instant) -> Connection {
    let config = Config {
        cipher_suites: vec![CipherSuite::EcdheEcdsaAes128GcmSha256],
        versions: vec![ProtocolVersion::Dtls1_2],
        server_name: Some("localhost".into()),
        ..Config::new(verifier())
    };
    Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(seed)),
        now,
        SERVER,
        None,
    )
    .expect("client config is valid")
}

/// A client of ours at `addr`; its record sealer once its handshake completed.
pub struct Peer {
    pub addr: SocketAddr,
    pub conn: Connection,
    pub sealer: Option<Sealer>,
    /// The overloaded turn in which it completed (`None`: before or after the overload).
    pub done_in: Option<u32>,
}

impl Peer {
    pub fn new(addr: SocketAddr, seed: u64, now: Instant) -> Self {
        Self {
            addr,
            conn: client(seed, now),
            sealer: None,
            done_in: None,
        }
    }

    /// Its datagrams (flights, retransmissions on its timer) into the shard.
    pub fn send(&mut self, daemon: &mut Daemon, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        let mut buf = vec![0u8; 4096];
        while let Some(t) = self.conn.poll_transmit(now, &mut buf) {
            daemon.receive(now, self.addr, &buf[..t.len]);
        }
    }

    pub fn handle(&mut self, now: Instant, datagram: &[u8], turn: Option<u32>) {
        self.conn
            .handle_datagram(now, test_wall(), SERVER, datagram);
        while let Some(event) = self.conn.poll_event() {
            if let Event::KeysReady(keys) = event {
                let (_, write) = keys.records.into_dtls12().expect("DTLS 1.2 keys");
                self.sealer = Some(
                    Sealer::new(write.epoch, write.key, write.next_sequence)
                        .expect("sealer from KeysReady"),
                );
                self.done_in = turn;
            }
        }
    }

    /// One application-data record of its session.
    pub fn record(&mut self, payload: &[u8]) -> Vec<u8> {
        let sealer = self.sealer.as_mut().expect("established");
        let offset = sealer.plaintext_offset();
        let mut record = vec![0u8; HEADER_LEN + sealer.overhead() + payload.len()];
        record[offset..offset + payload.len()].copy_from_slice(payload);
        let n = sealer
            .seal(
                ContentType::ApplicationData,
                DTLS_1_2,
                &mut record,
                payload.len(),
            )
            .expect("seal");
        record.truncate(n);
        record
    }
}

/// Spoofed source `i`: 127.x.y.z (never 127.0.0.1), its own port.
pub fn spoofed(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x7f00_0000 | (i % 0x00ff_fff0 + 2));
    SocketAddr::new(IpAddr::V4(ip), 10_000 + (i % 50_000) as u16)
}

/// One turn of the daemon; what it sends goes to the peer it is for (a spoofed source's
/// answers are counted and go nowhere).
pub fn turn(daemon: &mut Daemon, peers: &mut [Peer], now: Instant, at: Option<u32>) -> u64 {
    let mut to_peers = Vec::new();
    let mut to_spoofed = 0;
    daemon.turn(now, |to, payload| {
        match peers.iter().position(|p| p.addr == to) {
            Some(i) => to_peers.push((i, payload.to_vec())),
            None => to_spoofed += 1,
        }
    });
    for (i, d) in to_peers {
        peers[i].handle(now, &d, at);
    }
    to_spoofed
}
