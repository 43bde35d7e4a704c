//! The shard core's datagram entry point ([`ShardCore::handle_datagram`], serve mode) on
//! arbitrary input, with one DTLS 1.2 and one DTLS 1.3 session (with a connection ID)
//! installed. Shared by the fuzz target `datagram` (`dataplane/shard/fuzz`) and the
//! `fuzz_seeds` test, which runs the checked-in seeds through it in every test run.
//!
//! The input is a list of operations `op, len, bytes[len]`. The op's low four bits say
//! what datagram `bytes` become: the bytes as they are (0..=9), or a record of one of the
//! sessions sealed under its real keys around them, as is or with a byte flipped, or
//! followed by garbage, or a forged 1.3 record under the session's CID (10..=15), so that
//! the fuzzer reaches the paths behind the AEAD. The top two bits pick the source: either
//! session's address or one of two strangers. Bits 4 and 5 make the core's turn end: its
//! stage goes to control (whose messages are taken and their buffers recycled) and time
//! moves on by up to 2 s.
//!
//! Invariants checked: no panic; no datagram creates a session (only control's keys do);
//! every handshake datagram control gets came from a stranger or a session's address; the
//! fair stage and the early-record budget stay within their caps; every datagram is
//! counted in.
#![allow(dead_code, reason = "each user takes what it needs")]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::record::v13::{HeaderForm, InnerContentType, Sealer13, TrafficKeys13};
use dataplane::record::{Aead, ContentType, DTLS_1_2, RecordKey, Sealer};
use dtls_shard::{
    ControlInbound, Effects, HeartbeatPolicy, OpenFlow, ReadKeys, ReadKeys13, RelayMode, SessionId,
    ShardCommand, ShardConfig, ShardCore, ShardCounters, ShardQueues, ShardStats, UpstreamPrefix,
    WriteKeys, WriteKeys13,
};

const PEER12: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    4001,
);
const PEER13: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)),
    4002,
);
const STRANGERS: [SocketAddr; 2] = [
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
        5000,
    ),
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 10)),
        5001,
    ),
];
/// The connection ID the 1.3 session's peer puts in its records.
const CID13: [u8; 4] = [0xc1, 0xd2, 0xe3, 0xf4];

/// Upstream flows are numbers.
struct Flows(u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: SocketAddr) -> io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

fn key12(seed: u8) -> RecordKey {
    RecordKey::new(Aead::Aes128Gcm, &[seed; 16], &[seed ^ 0x5a; 4]).expect("valid key sizes")
}

fn keys13(seed: u8) -> TrafficKeys13 {
    TrafficKeys13::new(
        Aead::Aes128Gcm,
        &[seed; 16],
        &[seed ^ 0x33; 12],
        &[seed ^ 0x77; 16],
    )
    .expect("valid key sizes")
}

fn install12() -> ShardCommand {
    ShardCommand::InstallKeys {
        session: SessionId::new(1),
        peer: PEER12,
        read: ReadKeys {
            epoch: 1,
            key: key12(1),
            replay_window: 128,
        },
        write: WriteKeys {
            epoch: 1,
            key: key12(2),
            next_seq: 0,
        },
        heartbeat: HeartbeatPolicy {
            answer: true,
            probe: false,
        },
        cid: Vec::new(),
        peer_cid: Vec::new(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    }
}

fn install13() -> ShardCommand {
    ShardCommand::InstallKeys13 {
        session: SessionId::new(2),
        peer: PEER13,
        read: Some(Box::new(ReadKeys13 {
            epoch: 3,
            keys: keys13(3),
            replay_window: 128,
            next_expected: 0,
        })),
        write: Some(Box::new(WriteKeys13 {
            epoch: 3,
            keys: keys13(4),
            next_seq: 0,
        })),
        cid: CID13.to_vec(),
        peer_cid: Vec::new(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    }
}

/// The peers' write state: what they seal their records with.
struct Peers {
    sealer12: Sealer,
    sealer13: Sealer13,
}

impl Peers {
    fn new() -> Self {
        Self {
            sealer12: Sealer::new(1, key12(1), 0).expect("sealer"),
            sealer13: Sealer13::new(3, keys13(3)),
        }
    }

    /// A DTLS 1.2 record of the first session, its content type from `bytes[0]`.
    fn seal12(&mut self, bytes: &[u8]) -> Vec<u8> {
        let (content, plaintext) = match bytes.split_first() {
            Some((&t, rest)) => (
                ContentType::from_u8(t).unwrap_or(ContentType::ApplicationData),
                rest,
            ),
            None => (ContentType::ApplicationData, bytes),
        };
        let mut record = vec![0; self.sealer12.record_len(plaintext.len())];
        let at = self.sealer12.plaintext_offset();
        record[at..at + plaintext.len()].copy_from_slice(plaintext);
        match self
            .sealer12
            .seal(content, DTLS_1_2, &mut record, plaintext.len())
        {
            Ok(n) => record.truncate(n),
            Err(_) => record.clear(),
        }
        record
    }

    /// A DTLS 1.3 record of the second session under its CID, its inner content type
    /// from `bytes[0]`.
    fn seal13(&mut self, bytes: &[u8]) -> Vec<u8> {
        let (content, plaintext) = match bytes.split_first() {
            Some((&t, rest)) => (
                InnerContentType::from_u8(t).unwrap_or(InnerContentType::ApplicationData),
                rest,
            ),
            None => (InnerContentType::ApplicationData, bytes),
        };
        let form = HeaderForm::with_cid(&CID13);
        let mut record = vec![0; self.sealer13.record_len(&form, plaintext.len(), 0)];
        let at = self.sealer13.plaintext_offset(&form);
        record[at..at + plaintext.len()].copy_from_slice(plaintext);
        match self
            .sealer13
            .seal(content, &form, &mut record, plaintext.len(), 0)
        {
            Ok(n) => record.truncate(n),
            Err(_) => record.clear(),
        }
        record
    }
}

/// Flips one byte of `record`, chosen by `pick`.
fn flip(mut record: Vec<u8>, pick: u8) -> Vec<u8> {
    if !record.is_empty() {
        let at = usize::from(pick) % record.len();
        record[at] ^= 0x80 | pick;
    }
    record
}

/// Runs `data` (see the module documentation) through a fresh core; what it counted.
pub fn run(data: &[u8]) -> ShardStats {
    let queues = Arc::new(ShardQueues::new(64, 64));
    let backend = SocketAddr::from(([192, 0, 2, 200], 9));
    let mut config = ShardConfig::with_mode(RelayMode::Serve, backend);
    config.cid_len = CID13.len();
    let stage_cap = config.handshake_stage_bytes as u64;
    let early_cap = config.early_bytes as u64;
    let mut core = ShardCore::new(Arc::clone(&queues), config, 7, &[7; 32]);
    let mut fx = Effects::new(64, 1472, false);
    let mut flows = Flows(0);
    let counters = ShardCounters::default();
    let t0 = Instant::now();
    let mut now = t0;
    core.handle_command(now, install12(), &mut fx, &mut flows);
    core.handle_command(now, install13(), &mut fx, &mut flows);
    core.end_commands(&mut fx);
    assert_eq!(core.sessions().len(), 2);
    let mut peers = Peers::new();
    let mut rest = data;
    let mut datagrams = 0u64;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let source = match op >> 6 {
            0 => PEER12,
            1 => PEER13,
            s => STRANGERS[usize::from(s & 1)],
        };
        let pick = bytes.last().copied().unwrap_or(0);
        let mut datagram = match op & 0x0f {
            0..=9 => bytes.to_vec(),
            10 => peers.seal12(bytes),
            11 => flip(peers.seal12(bytes), pick),
            12 => peers.seal13(bytes),
            13 => flip(peers.seal13(bytes), pick),
            14 => {
                let mut d = peers.seal12(bytes);
                d.extend_from_slice(bytes);
                d
            }
            _ => {
                // A forged 1.3 record under the session's CID: C, S (16-bit), L, epoch 3.
                let mut d = vec![0x3f];
                d.extend_from_slice(&CID13);
                d.extend_from_slice(&[0, pick]);
                d.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
                d.extend_from_slice(bytes);
                d
            }
        };
        core.handle_datagram(now, source, &mut datagram, &mut fx, &mut flows);
        datagrams += 1;
        assert!(core.sessions().len() <= 2, "a datagram created a session");
        fx.net.clear();
        core.flush_flows(&mut fx, |_, payload, _| Ok(payload.len()));
        if op & 0x10 != 0 {
            core.pump();
            while let Some(message) = queues.poll_inbound() {
                if let ControlInbound::Handshake { peer, datagram } = message {
                    assert!(
                        [PEER12, PEER13].contains(&peer) || STRANGERS.contains(&peer),
                        "a datagram from nowhere: {peer}"
                    );
                    queues.recycle(datagram);
                }
            }
        }
        if op & 0x20 != 0 {
            now += Duration::from_millis(u64::from(pick) * 8);
            core.handle_timeout(now, &mut fx);
            fx.net.clear();
        }
        core.publish(&counters);
        let stats = counters.snapshot();
        assert!(stats.handshake_stage_bytes <= stage_cap, "{stats:?}");
        assert!(stats.early_bytes <= early_cap, "{stats:?}");
    }
    let stats = counters.snapshot();
    assert_eq!(
        stats.datagrams_in, datagrams,
        "every datagram is counted in"
    );
    stats
}
