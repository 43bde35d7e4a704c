//! The measured workloads: each runs exactly `iters` iterations of one operation after a
//! setup whose cost does not depend on `iters`.
//!
//! Setup (keys, buffers, and for the open and per-packet workloads `prepared` records sealed
//! in advance) is identical for two runs with the same `prepared`, so the difference of two
//! runs' instruction totals divided by the difference of their iteration counts is the cost
//! of one iteration alone.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13, TrafficKeys13};
use dataplane::record::{
    Aead, CidSealer, ContentType, DTLS_1_2, Opener, RecordKey, ReplayWindow, Replayed, Sealer,
};
use dtls_io::{FramePath, NextHop};
use dtls_shard::{
    Effects, FlowRef, HeartbeatPolicy, OpenFlow, ReadKeys, ReadKeys13, SessionId, ShardCommand,
    ShardConfig, ShardCore, ShardQueues, UpstreamPrefix, WriteKeys, WriteKeys13,
};

/// Record protection of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128gcm,
    Aes256gcm,
    Chacha20,
    /// The null baseline: header and plaintext, no AEAD.
    None,
}

impl Cipher {
    #[cfg(test)]
    fn name(self) -> &'static str {
        match self {
            Cipher::Aes128gcm => "aes128gcm",
            Cipher::Aes256gcm => "aes256gcm",
            Cipher::Chacha20 => "chacha20",
            Cipher::None => "none",
        }
    }

    /// The AEAD, `None` for the null baseline.
    fn aead(self) -> Option<Aead> {
        match self {
            Cipher::Aes128gcm => Some(Aead::Aes128Gcm),
            Cipher::Aes256gcm => Some(Aead::Aes256Gcm),
            Cipher::Chacha20 => Some(Aead::ChaCha20Poly1305),
            Cipher::None => None,
        }
    }

    fn key(self) -> Result<RecordKey> {
        let (key, iv) = ([0x42u8; 32], [0x24u8; 12]);
        let Some(aead) = self.aead() else {
            return Ok(RecordKey::null_baseline());
        };
        Ok(RecordKey::new(
            aead,
            &key[..aead.key_len()],
            &iv[..aead.fixed_iv_len()],
        )?)
    }
}

/// What one iteration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Sealer::seal` of one record in place.
    Seal,
    /// `Opener::open` (replay check, AEAD open, window update) of one record sealed in setup.
    Open,
    /// The shard core's per-packet receive-and-relay-back path (see [`packet`]).
    Packet,
    /// The same through a DTLS 1.3 session (see [`packet13`]).
    Packet13,
    /// [`Kind::Packet`] with RFC 9146 connection IDs both ways: the session found by its
    /// CID instead of the peer's address (see [`packet_cid`]).
    PacketCid,
    /// `Sealer13::seal` of one record in place (see [`seal13`]).
    Seal13,
    /// `Opener13::open` of one in-order record sealed in setup (see [`open13`]).
    Open13,
    /// Replay-window check and update of six sequence numbers (see [`replay_window`]).
    Replay,
    /// [`Kind::Packet`] inside Ethernet/IP/UDP frames, as the AF_XDP backend handles them
    /// (see [`packet_xdp`]); `v6`: IPv6, else IPv4.
    PacketXdp {
        /// IPv6 addresses.
        v6: bool,
    },
}

/// One workload: its stable name and what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    name: &'static str,
    kind: Kind,
    cipher: Cipher,
    size: usize,
}

const fn w(name: &'static str, kind: Kind, cipher: Cipher, size: usize) -> Workload {
    Workload {
        name,
        kind,
        cipher,
        size,
    }
}

/// Every workload, in report order.
pub const ALL: [Workload; 35] = [
    w("seal-aes128gcm-1200", Kind::Seal, Cipher::Aes128gcm, 1200),
    w("open-aes128gcm-1200", Kind::Open, Cipher::Aes128gcm, 1200),
    w("seal-aes128gcm-64", Kind::Seal, Cipher::Aes128gcm, 64),
    w("open-aes128gcm-64", Kind::Open, Cipher::Aes128gcm, 64),
    w("seal-chacha20-1200", Kind::Seal, Cipher::Chacha20, 1200),
    w("open-chacha20-1200", Kind::Open, Cipher::Chacha20, 1200),
    w("seal-none-1200", Kind::Seal, Cipher::None, 1200),
    w("open-none-1200", Kind::Open, Cipher::None, 1200),
    w("replay-window", Kind::Replay, Cipher::None, 0),
    w(
        "packet-aes128gcm-1200",
        Kind::Packet,
        Cipher::Aes128gcm,
        1200,
    ),
    w("packet-chacha20-1200", Kind::Packet, Cipher::Chacha20, 1200),
    w("packet-none-1200", Kind::Packet, Cipher::None, 1200),
    w(
        "packet-cid-aes128gcm-1200",
        Kind::PacketCid,
        Cipher::Aes128gcm,
        1200,
    ),
    w(
        "packet13-aes128gcm-1200",
        Kind::Packet13,
        Cipher::Aes128gcm,
        1200,
    ),
    w(
        "packet13-chacha20-1200",
        Kind::Packet13,
        Cipher::Chacha20,
        1200,
    ),
    // Record protection of both versions side by side, every suite, small and MTU-sized.
    w("seal-aes256gcm-1200", Kind::Seal, Cipher::Aes256gcm, 1200),
    w("open-aes256gcm-1200", Kind::Open, Cipher::Aes256gcm, 1200),
    w("seal-aes256gcm-64", Kind::Seal, Cipher::Aes256gcm, 64),
    w("open-aes256gcm-64", Kind::Open, Cipher::Aes256gcm, 64),
    w("seal-chacha20-64", Kind::Seal, Cipher::Chacha20, 64),
    w("open-chacha20-64", Kind::Open, Cipher::Chacha20, 64),
    w(
        "seal13-aes128gcm-1200",
        Kind::Seal13,
        Cipher::Aes128gcm,
        1200,
    ),
    w(
        "open13-aes128gcm-1200",
        Kind::Open13,
        Cipher::Aes128gcm,
        1200,
    ),
    w("seal13-aes128gcm-64", Kind::Seal13, Cipher::Aes128gcm, 64),
    w("open13-aes128gcm-64", Kind::Open13, Cipher::Aes128gcm, 64),
    w(
        "seal13-aes256gcm-1200",
        Kind::Seal13,
        Cipher::Aes256gcm,
        1200,
    ),
    w(
        "open13-aes256gcm-1200",
        Kind::Open13,
        Cipher::Aes256gcm,
        1200,
    ),
    w("seal13-aes256gcm-64", Kind::Seal13, Cipher::Aes256gcm, 64),
    w("open13-aes256gcm-64", Kind::Open13, Cipher::Aes256gcm, 64),
    w("seal13-chacha20-1200", Kind::Seal13, Cipher::Chacha20, 1200),
    w("open13-chacha20-1200", Kind::Open13, Cipher::Chacha20, 1200),
    w("seal13-chacha20-64", Kind::Seal13, Cipher::Chacha20, 64),
    w("open13-chacha20-64", Kind::Open13, Cipher::Chacha20, 64),
    // The AF_XDP backend's frame path around the same relay as packet-aes128gcm-1200.
    w(
        "packet-xdp-aes128gcm-1200",
        Kind::PacketXdp { v6: false },
        Cipher::Aes128gcm,
        1200,
    ),
    w(
        "packet-xdp6-aes128gcm-1200",
        Kind::PacketXdp { v6: true },
        Cipher::Aes128gcm,
        1200,
    ),
];

impl Workload {
    /// The stable name used on the command line and in the baseline.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The workload called `name`.
    pub fn by_name(name: &str) -> Result<Self> {
        ALL.iter()
            .copied()
            .find(|w| w.name == name)
            .with_context(|| format!("unknown workload {name:?} (see `dtls-icount list`)"))
    }

    /// Whether setup seals records in advance (then `iters` may not exceed `prepared`).
    pub fn needs_prepared(&self) -> bool {
        matches!(
            self.kind,
            Kind::Open
                | Kind::Packet
                | Kind::Packet13
                | Kind::PacketCid
                | Kind::Open13
                | Kind::PacketXdp { .. }
        )
    }

    /// Runs setup (with `prepared` records sealed in advance where the workload opens
    /// records) and then exactly `iters` iterations. Every iteration checks its outcome, so
    /// a workload that silently stopped doing its work fails instead of getting cheaper.
    pub fn run(&self, iters: u64, prepared: u64) -> Result<()> {
        if self.needs_prepared() {
            ensure!(
                iters <= prepared,
                "{}: {iters} iterations need at least as many prepared records (got {prepared})",
                self.name
            );
        }
        match self.kind {
            Kind::Seal => seal(self.cipher, self.size, iters),
            Kind::Open => open(self.cipher, self.size, iters, prepared),
            Kind::Packet => packet(self.cipher, self.size, iters, prepared),
            Kind::Packet13 => packet13(self.cipher, self.size, iters, prepared),
            Kind::PacketCid => packet_cid(self.cipher, self.size, iters, prepared),
            Kind::Seal13 => seal13(self.cipher, self.size, iters),
            Kind::Open13 => open13(self.cipher, self.size, iters, prepared),
            Kind::Replay => replay_window(iters),
            Kind::PacketXdp { v6 } => packet_xdp(self.cipher, self.size, v6, iters, prepared),
        }
    }
}

/// Record slots in one contiguous buffer, 64-byte strided so that every record starts at
/// the same alignment relative to the buffer.
struct Slots {
    buf: Vec<u8>,
    stride: usize,
}

impl Slots {
    fn new(count: usize, record_len: usize) -> Self {
        let stride = record_len.next_multiple_of(64);
        Self {
            buf: vec![0x5a; stride * count],
            stride,
        }
    }

    fn slot(&mut self, i: usize) -> Result<&mut [u8]> {
        let at = i * self.stride;
        self.buf
            .get_mut(at..at + self.stride)
            .context("slot index out of range")
    }
}

fn sealer(cipher: Cipher) -> Result<Sealer> {
    Ok(Sealer::new(1, cipher.key()?, 0)?)
}

fn opener(cipher: Cipher) -> Result<Opener> {
    Ok(Opener::new(
        1,
        cipher.key()?,
        ReplayWindow::new(ReplayWindow::DEFAULT_SIZE),
    ))
}

/// `prepared` application-data records of `size` plaintext bytes, sealed in order with
/// sequence numbers 0, 1, ... under epoch 1.
fn sealed_records(cipher: Cipher, size: usize, prepared: u64) -> Result<(Slots, usize)> {
    let mut s = sealer(cipher)?;
    let record_len = s.record_len(size);
    let count = usize::try_from(prepared).context("prepared count")?;
    let mut slots = Slots::new(count, record_len);
    for i in 0..count {
        let n = s.seal(ContentType::ApplicationData, DTLS_1_2, slots.slot(i)?, size)?;
        ensure!(n == record_len, "sealed length {n} != {record_len}");
    }
    Ok((slots, record_len))
}

/// Seals one record per iteration in place, always in the same buffer (AEAD cost does not
/// depend on the bytes).
fn seal(cipher: Cipher, size: usize, iters: u64) -> Result<()> {
    let mut s = sealer(cipher)?;
    let record_len = s.record_len(size);
    let mut slots = Slots::new(1, record_len);
    let buf = slots.slot(0)?;
    for _ in 0..iters {
        let n = s.seal(
            ContentType::ApplicationData,
            DTLS_1_2,
            black_box(&mut *buf),
            size,
        )?;
        ensure!(black_box(n) == record_len, "sealed {n} bytes");
    }
    Ok(())
}

/// Opens one in-order record per iteration (replay check, AEAD open, window update).
fn open(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let (mut slots, record_len) = sealed_records(cipher, size, prepared)?;
    let mut o = opener(cipher)?;
    for i in 0..iters {
        let i = usize::try_from(i).context("iteration index")?;
        let record = &mut slots.slot(i)?[..record_len];
        let opened = o.open(black_box(record))?;
        ensure!(
            black_box(opened.plaintext).len() == size,
            "plaintext length"
        );
    }
    Ok(())
}

/// The per-packet path of a shard, measured on the real [`ShardCore`] (serve mode, one
/// session): per iteration, [`ShardCore::handle_datagram`] of one datagram carrying one
/// application-data record (the read-only scan, the session lookup by address, the epoch
/// and content-type checks, the replay check, AEAD open in place, window update, counters,
/// the plaintext staged for the session's upstream flow), [`ShardCore::flush_flows`]
/// handing the staged plaintext to the driver's send (here: copied into the reply buffer,
/// the backend echoing it), and [`ShardCore::handle_flow_datagram`] of the reply (sealed in
/// place into the transmit batch), then the batch cleared as the driver's send would.
///
/// Not covered: the system calls of the driver (recvmmsg/io_uring, the upstream `send`,
/// epoll) and the per-turn work (command queue, counters published to the atomics).
fn packet(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let (mut rx, record_len) = sealed_records(cipher, size, prepared)?;
    let peer = SocketAddr::from(([192, 0, 2, 1], 4433));
    let backend = SocketAddr::from(([192, 0, 2, 2], 9));
    // The core reads no clock: one instant for the whole run.
    let now = Instant::now();
    let config = ShardConfig::new(backend);
    let mut core = ShardCore::<()>::new(Arc::new(ShardQueues::new(16, 16)), config, 1, &[1; 32]);
    let mut fx = Effects::new(config.tx_batch, config.max_datagram, false);
    let install = install12(cipher, peer, &[], &[])?;
    core.handle_command(now, install, &mut fx, &mut UnitFlows);
    let id = core.sessions().lookup(&peer).context("session installed")?;
    let flow = FlowRef::Session(id);
    fx.opened.clear();
    let relay = Relay {
        peer,
        flow,
        size,
        record_len,
        now,
    };
    relay.run(&mut core, &mut fx, &mut UnitFlows, &mut rx, iters)
}

/// The command installing the packet workloads' DTLS 1.2 session with `peer` (epoch 1 both
/// ways), with our CID `cid` and the peer's `peer_cid` (empty: none).
fn install12(
    cipher: Cipher,
    peer: SocketAddr,
    cid: &[u8],
    peer_cid: &[u8],
) -> Result<ShardCommand> {
    Ok(ShardCommand::InstallKeys {
        session: SessionId::new(1),
        peer,
        read: ReadKeys {
            epoch: 1,
            key: cipher.key()?,
            replay_window: ReplayWindow::DEFAULT_SIZE,
        },
        write: WriteKeys {
            epoch: 1,
            key: cipher.key()?,
            next_seq: 0,
        },
        heartbeat: HeartbeatPolicy::default(),
        cid: cid.to_vec(),
        peer_cid: peer_cid.to_vec(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    })
}

/// Our CID in the [`packet_cid`] workload (the daemon's 8-octet QUIC-LB layout).
const CID: [u8; 8] = [7, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a];
/// The peer's CID in the [`packet_cid`] workload (put in the replies).
const PEER_CID: [u8; 8] = [0xc1; 8];

/// [`packet`] with RFC 9146 connection IDs both ways: each record in is a `tls12_cid`
/// record carrying our CID, found by [`ShardCore`] through its CID index (and then checked
/// to come from the session's address), opened with the RFC 9146 §5 AAD and the inner
/// plaintext's content type; each reply is sealed as a `tls12_cid` record with the peer's
/// CID. Its cost against [`packet`]'s is what a CID lookup and the CID record format add.
fn packet_cid(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let mut sealer = CidSealer::new(1, cipher.key()?, 0, &CID)?;
    let record_len = sealer.record_len(size, 0);
    let count = usize::try_from(prepared).context("prepared count")?;
    let mut rx = Slots::new(count, record_len);
    let at = sealer.plaintext_offset();
    for i in 0..count {
        let slot = rx.slot(i)?;
        slot[at..at + size].fill(0x5a);
        let n = sealer.seal(ContentType::ApplicationData, slot, size, 0)?;
        ensure!(n == record_len, "sealed length {n} != {record_len}");
    }
    let peer = SocketAddr::from(([192, 0, 2, 1], 4433));
    let backend = SocketAddr::from(([192, 0, 2, 2], 9));
    let now = Instant::now();
    let mut config = ShardConfig::new(backend);
    config.cid_len = CID.len();
    // Its own instantiation of the core (flows are `u16` here), as in [`packet13`].
    let mut core = ShardCore::<u16>::new(Arc::new(ShardQueues::new(16, 16)), config, 1, &[1; 32]);
    let mut fx = Effects::new(config.tx_batch, config.max_datagram, false);
    let install = install12(cipher, peer, &CID, &PEER_CID)?;
    core.handle_command(now, install, &mut fx, &mut WordFlows);
    let id = core
        .sessions()
        .lookup_cid(&CID)
        .context("session installed under its CID")?;
    let flow = FlowRef::Session(id);
    fx.opened.clear();
    let relay = Relay {
        peer,
        flow,
        size,
        record_len,
        now,
    };
    relay.run(&mut core, &mut fx, &mut WordFlows, &mut rx, iters)
}

/// The measured loop of the packet workloads: one prepared record in from `peer`, its
/// plaintext handed to the driver's send and echoed back by the backend, the reply sealed.
struct Relay {
    peer: SocketAddr,
    flow: FlowRef,
    size: usize,
    record_len: usize,
    now: Instant,
}

impl Relay {
    fn run<F>(
        &self,
        core: &mut ShardCore<F>,
        fx: &mut Effects,
        flows: &mut impl OpenFlow<F>,
        rx: &mut Slots,
        iters: u64,
    ) -> Result<()> {
        let Self {
            peer,
            flow,
            size,
            record_len,
            now,
        } = *self;
        let mut reply = vec![0u8; size];
        for i in 0..iters {
            let i = usize::try_from(i).context("iteration index")?;
            let datagram = &mut rx.slot(i)?[..record_len];
            core.handle_datagram(now, peer, black_box(datagram), fx, flows);
            let mut relayed = 0;
            core.flush_flows(fx, |_, payload, _| {
                let dst = reply
                    .get_mut(..payload.len())
                    .ok_or_else(|| std::io::Error::other("reply longer than the record"))?;
                dst.copy_from_slice(payload);
                relayed = payload.len();
                Ok(relayed)
            });
            ensure!(relayed == size, "relayed {relayed} bytes upstream");
            core.handle_flow_datagram(now, flow, &mut reply[..relayed], fx);
            let sent: usize = fx.net.sends().map(|s| s.payload.len()).sum();
            ensure!(black_box(sent) == record_len, "reply of {sent} bytes");
            fx.net.clear();
        }
        Ok(())
    }
}

/// DTLS 1.3 traffic keys of a workload (AEAD suites only: 1.3 has no null baseline).
fn keys13(cipher: Cipher) -> Result<TrafficKeys13> {
    let Some(aead) = cipher.aead() else {
        bail!("DTLS 1.3 has no null cipher");
    };
    let key_len = aead.key_len();
    Ok(TrafficKeys13::new(
        aead,
        &[0x42; 32][..key_len],
        &[0x24; 12],
        &[0x17; 32][..key_len],
    )?)
}

/// `prepared` DTLS 1.3 application-data records of `size` plaintext bytes (the default
/// header form: 16-bit sequence number, length, no CID), sealed in order with sequence
/// numbers 0, 1, ... under epoch 3.
fn sealed_records13(cipher: Cipher, size: usize, prepared: u64) -> Result<(Slots, usize)> {
    let mut s = Sealer13::new(3, keys13(cipher)?);
    let form = HeaderForm::default();
    let record_len = s.record_len(&form, size, 0);
    let count = usize::try_from(prepared).context("prepared count")?;
    let mut slots = Slots::new(count, record_len);
    for i in 0..count {
        let n = s.seal(
            InnerContentType::ApplicationData,
            &form,
            slots.slot(i)?,
            size,
            0,
        )?;
        ensure!(n == record_len, "sealed length {n} != {record_len}");
    }
    Ok((slots, record_len))
}

/// [`seal`] for DTLS 1.3: one `Sealer13::seal` per iteration (default header form, no
/// padding) in the same buffer; the record-number mask is part of it.
fn seal13(cipher: Cipher, size: usize, iters: u64) -> Result<()> {
    let mut s = Sealer13::new(3, keys13(cipher)?);
    let form = HeaderForm::default();
    let record_len = s.record_len(&form, size, 0);
    let mut slots = Slots::new(1, record_len);
    let buf = slots.slot(0)?;
    for _ in 0..iters {
        let n = s.seal(
            InnerContentType::ApplicationData,
            &form,
            black_box(&mut *buf),
            size,
            0,
        )?;
        ensure!(black_box(n) == record_len, "sealed {n} bytes");
    }
    Ok(())
}

/// [`open`] for DTLS 1.3: one `Opener13::open` per iteration of an in-order record (header
/// parse, record-number unmasking and reconstruction, replay check, AEAD open, window
/// update, inner content type).
fn open13(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let (mut slots, record_len) = sealed_records13(cipher, size, prepared)?;
    let mut o = Opener13::new(
        3,
        keys13(cipher)?,
        ReplayWindow::new(ReplayWindow::DEFAULT_SIZE),
    );
    for i in 0..iters {
        let i = usize::try_from(i).context("iteration index")?;
        let record = &mut slots.slot(i)?[..record_len];
        let opened = o.open(black_box(record), 0)?;
        ensure!(
            black_box(opened.plaintext).len() == size,
            "plaintext length"
        );
    }
    Ok(())
}

/// [`packet`] through a DTLS 1.3 session of the real [`ShardCore`]: the records have a
/// unified header (16-bit sequence number, length), their record numbers are encrypted, the
/// epoch is found from the header's two bits; the reply is sealed the same way.
fn packet13(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let (mut rx, record_len) = sealed_records13(cipher, size, prepared)?;
    let addr = SocketAddr::from(([192, 0, 2, 1], 4433));
    let backend = SocketAddr::from(([192, 0, 2, 2], 9));
    let now = Instant::now();
    let config = ShardConfig::new(backend);
    // Its own instantiation of the core (flows are `u8` here): the 1.2 workload's copy is
    // compiled and inlined as if this one did not exist.
    let mut core = ShardCore::<u8>::new(Arc::new(ShardQueues::new(16, 16)), config, 1, &[1; 32]);
    let mut fx = Effects::new(config.tx_batch, config.max_datagram, false);
    let install = ShardCommand::InstallKeys13 {
        session: SessionId::new(1),
        peer: addr,
        read: Some(Box::new(ReadKeys13 {
            epoch: 3,
            keys: keys13(cipher)?,
            replay_window: ReplayWindow::DEFAULT_SIZE,
            next_expected: 0,
        })),
        write: Some(Box::new(WriteKeys13 {
            epoch: 3,
            keys: keys13(cipher)?,
            next_seq: 0,
        })),
        cid: Vec::new(),
        peer_cid: Vec::new(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    };
    core.handle_command(now, install, &mut fx, &mut ByteFlows);
    let id = core.sessions().lookup(&addr).context("session installed")?;
    let flow = FlowRef::Session(id);
    fx.opened.clear();
    let relay = Relay {
        peer: addr,
        flow,
        size,
        record_len,
        now,
    };
    relay.run(&mut core, &mut fx, &mut ByteFlows, &mut rx, iters)
}

/// Our MAC in the [`packet_xdp`] workloads.
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The peer's (its router's) MAC in the [`packet_xdp`] workloads.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// [`packet`] as the AF_XDP backend runs it: each record arrives inside an Ethernet/IPv4
/// (`v6`: IPv6)/UDP frame built in setup with correct checksums. Per iteration,
/// [`FramePath::receive`] (Ethernet/IP/UDP parse, IPv4 header checksum and UDP checksum over
/// the pseudo-header and 1200+ bytes verified, the sender's MAC learned as the next hop),
/// the same shard-core relay as [`packet`] on the datagram in place in its frame, then for
/// the reply [`FramePath::next_hop`] (MTU check, next-hop lookup) and [`FramePath::build`]
/// (headers, IPv4 header checksum, UDP checksum) into a transmit frame. Its cost against
/// [`packet`]'s is what framing adds per packet; the rings (fill, RX, TX, completion) and the
/// `sendto` wake-up are not in it, nor is anything the kernel does.
fn packet_xdp(cipher: Cipher, size: usize, v6: bool, iters: u64, prepared: u64) -> Result<()> {
    let (mut records, record_len) = sealed_records(cipher, size, prepared)?;
    let (peer, ours, backend) = if v6 {
        (
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 40000)),
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x443], 4433)),
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 9)),
        )
    } else {
        (
            SocketAddr::from(([192, 0, 2, 1], 40000)),
            SocketAddr::from(([198, 51, 100, 1], 4433)),
            SocketAddr::from(([192, 0, 2, 2], 9)),
        )
    };
    // The frames as the peer's side would put them on the wire (full UDP checksums).
    let client = FramePath::new(PEER_MAC, peer.port(), 1500);
    let to_us = NextHop {
        mac: OUR_MAC,
        local: peer.ip(),
    };
    let frame_len = FramePath::header_len(&ours) + record_len;
    let count = usize::try_from(prepared).context("prepared count")?;
    let mut rx = Slots::new(count, frame_len);
    for i in 0..count {
        let record = &records.slot(i)?[..record_len];
        let n = client
            .build(rx.slot(i)?, to_us, ours, record)
            .context("frame of a prepared record")?;
        ensure!(n == frame_len, "frame of {n} bytes");
    }
    drop(records);
    let mut path = FramePath::new(OUR_MAC, ours.port(), 1500);
    let now = Instant::now();
    let config = ShardConfig::new(backend);
    // Its own instantiation of the core (flows are `u32` here), as in [`packet13`].
    let mut core = ShardCore::<u32>::new(Arc::new(ShardQueues::new(16, 16)), config, 1, &[1; 32]);
    let mut fx = Effects::new(config.tx_batch, config.max_datagram, false);
    let install = install12(cipher, peer, &[], &[])?;
    core.handle_command(now, install, &mut fx, &mut DwordFlows);
    let id = core.sessions().lookup(&peer).context("session installed")?;
    let flow = FlowRef::Session(id);
    fx.opened.clear();
    let mut reply = vec![0u8; size];
    let mut tx = vec![0u8; 2048];
    for i in 0..iters {
        let i = usize::try_from(i).context("iteration index")?;
        let frame = &mut rx.slot(i)?[..frame_len];
        let d = path
            .receive(black_box(&*frame))
            .map_err(|e| anyhow::anyhow!("frame refused: {e:?}"))?;
        ensure!(d.source == peer && d.payload_len == record_len, "{d:?}");
        let datagram = &mut frame[d.payload_offset..d.payload_offset + d.payload_len];
        core.handle_datagram(now, d.source, datagram, &mut fx, &mut DwordFlows);
        let mut relayed = 0;
        core.flush_flows(&mut fx, |_, payload, _| {
            let dst = reply
                .get_mut(..payload.len())
                .ok_or_else(|| std::io::Error::other("reply longer than the record"))?;
            dst.copy_from_slice(payload);
            relayed = payload.len();
            Ok(relayed)
        });
        ensure!(relayed == size, "relayed {relayed} bytes upstream");
        core.handle_flow_datagram(now, flow, &mut reply[..relayed], &mut fx);
        let mut sent = 0;
        for send in fx.net.sends() {
            let hop = path
                .next_hop(&send.destination, send.payload.len())
                .map_err(|e| anyhow::anyhow!("reply not framed: {e:?}"))?;
            sent += path
                .build(&mut tx, hop, send.destination, send.payload)
                .context("reply frame")?;
        }
        ensure!(black_box(sent) == frame_len, "reply frame of {sent} bytes");
        fx.net.clear();
    }
    Ok(())
}

/// Upstream flows of the AF_XDP packet workloads.
struct DwordFlows;

impl OpenFlow<u32> for DwordFlows {
    fn open_flow(&mut self, _peer: std::net::SocketAddr) -> std::io::Result<u32> {
        Ok(0)
    }
}

/// Upstream flows of the packet workload: nothing (the workload plays the driver).
struct UnitFlows;

impl OpenFlow<()> for UnitFlows {
    fn open_flow(&mut self, _peer: std::net::SocketAddr) -> std::io::Result<()> {
        Ok(())
    }
}

/// Upstream flows of the CID packet workload.
struct WordFlows;

impl OpenFlow<u16> for WordFlows {
    fn open_flow(&mut self, _peer: std::net::SocketAddr) -> std::io::Result<u16> {
        Ok(0)
    }
}

/// Upstream flows of the DTLS 1.3 packet workload.
struct ByteFlows;

impl OpenFlow<u8> for ByteFlows {
    fn open_flow(&mut self, _peer: std::net::SocketAddr) -> std::io::Result<u8> {
        Ok(0)
    }
}

/// Per iteration, eight fresh sequence numbers `b..b+8` (`b = 1000 + 8i`) and the
/// opener's order of operations (check before, update after authentication):
/// `b+1`, `b` (one behind the top), `b+3`, `b+2`, `b+7` (a jump of four) with `b+4..b+7`
/// left as holes that the next iterations never fill; then `b+1` again (duplicate) and
/// `b - 500` (left of the 128-wide window). Seven checks, five updates.
fn replay_window(iters: u64) -> Result<()> {
    let mut w = ReplayWindow::new(ReplayWindow::DEFAULT_SIZE);
    for i in 0..iters {
        let b = 1000 + 8 * i;
        for seq in [b + 1, b, b + 3, b + 2, b + 7] {
            w.check(black_box(seq))?;
            w.update(seq);
        }
        ensure!(
            w.check(black_box(b + 1)) == Err(Replayed::Duplicate),
            "duplicate accepted"
        );
        ensure!(
            w.check(black_box(b - 500)) == Err(Replayed::TooOld),
            "old sequence accepted"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_and_names_are_unique() {
        for (i, w) in ALL.iter().enumerate() {
            w.run(5, 5).unwrap_or_else(|e| panic!("{}: {e:#}", w.name));
            assert_eq!(Workload::by_name(w.name).expect("known").name(), w.name);
            assert!(ALL[..i].iter().all(|o| o.name != w.name), "{}", w.name);
            if w.kind != Kind::Replay {
                assert!(w.name.contains(w.cipher.name()), "{}", w.name);
            }
        }
        assert!(Workload::by_name("nope").is_err());
    }

    #[test]
    fn open_workloads_refuse_more_iterations_than_prepared_records() {
        let w = Workload::by_name("open-aes128gcm-64").expect("known");
        assert!(w.run(6, 5).is_err());
        let w = Workload::by_name("packet-none-1200").expect("known");
        assert!(w.run(6, 5).is_err());
    }
}
