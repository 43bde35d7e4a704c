//! The measured workloads: each runs exactly `iters` iterations of one operation after a
//! setup whose cost does not depend on `iters`.
//!
//! Setup (keys, buffers, and for the open and per-packet workloads `prepared` records sealed
//! in advance) is identical for two runs with the same `prepared`, so the difference of two
//! runs' instruction totals divided by the difference of their iteration counts is the cost
//! of one iteration alone.

use std::hint::black_box;

use anyhow::{Context as _, Result, bail, ensure};
use dataplane::record::{
    Aead, ContentType, DTLS_1_2, Opener, RecordKey, Records, RecordsMut, ReplayWindow, Replayed,
    Sealer,
};

/// Record protection of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128gcm,
    Chacha20,
    /// The null baseline: header and plaintext, no AEAD.
    None,
}

impl Cipher {
    #[cfg(test)]
    fn name(self) -> &'static str {
        match self {
            Cipher::Aes128gcm => "aes128gcm",
            Cipher::Chacha20 => "chacha20",
            Cipher::None => "none",
        }
    }

    fn key(self) -> Result<RecordKey> {
        let (key, iv) = ([0x42u8; 32], [0x24u8; 12]);
        let aead = match self {
            Cipher::Aes128gcm => Aead::Aes128Gcm,
            Cipher::Chacha20 => Aead::ChaCha20Poly1305,
            Cipher::None => return Ok(RecordKey::null_baseline()),
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
    /// The shard's per-packet receive-and-reply path without sockets (see [`packet`]).
    Packet,
    /// Replay-window check and update of six sequence numbers (see [`replay_window`]).
    Replay,
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
pub const ALL: [Workload; 12] = [
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
        matches!(self.kind, Kind::Open | Kind::Packet)
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
            Kind::Replay => replay_window(iters),
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

/// The per-packet path of a shard, without sockets, session table or counters: what
/// `dtls-shard`'s `handle_datagram` and `seal_to_peer` do to one datagram carrying one
/// application-data record and to the reply it relays back:
///
/// 1. read-only walk of the datagram with [`Records`] (record count, whether any record is
///    for control: epoch 0 or handshake, trailing bytes);
/// 2. mutable walk with [`RecordsMut`], the epoch and content-type checks, and
///    [`Opener::open`] of the record in place;
/// 3. the reply: the sequence-space check, the plaintext copied into a transmit slot at the
///    sealer's plaintext offset and [`Sealer::seal`]ed there (the backend echoing the
///    payload).
///
/// Not covered: socket I/O (recvmmsg/io_uring, GSO/GRO), the session-table lookup by
/// address, the upstream `send`, counters and the transmit-batch bookkeeping.
fn packet(cipher: Cipher, size: usize, iters: u64, prepared: u64) -> Result<()> {
    let (mut rx, record_len) = sealed_records(cipher, size, prepared)?;
    let mut o = opener(cipher)?;
    let mut reply_sealer = sealer(cipher)?;
    let at = reply_sealer.plaintext_offset();
    let mut tx = Slots::new(1, reply_sealer.record_len(size));
    for i in 0..iters {
        let i = usize::try_from(i).context("iteration index")?;
        let datagram = &mut rx.slot(i)?[..record_len];
        // 1. Scan.
        let mut walk = Records::new(black_box(&*datagram));
        let (mut records, mut for_control) = (0usize, false);
        for r in walk.by_ref() {
            records += 1;
            for_control |=
                r.header.epoch() == 0 || r.header.content_type() == ContentType::Handshake as u8;
        }
        ensure!(
            records == 1 && !for_control && walk.dropped_bytes() == 0,
            "scan: {records} records, for_control {for_control}"
        );
        // 2. Open.
        let mut opened_len = 0;
        for header in RecordsMut::new(datagram) {
            let (epoch, content_type) = (header.epoch(), header.content_type());
            if epoch != o.epoch() || content_type != ContentType::ApplicationData as u8 {
                bail!("unexpected record: epoch {epoch}, type {content_type}");
            }
            let opened = o.open(header.into_inner())?;
            // 3. Reply.
            ensure!(
                reply_sealer.sequences_left() > 0,
                "sequence space exhausted"
            );
            let plaintext: &[u8] = opened.plaintext;
            let len = plaintext.len();
            let buf = tx.slot(0)?;
            buf.get_mut(at..at + len)
                .context("reply slot")?
                .copy_from_slice(plaintext);
            opened_len +=
                reply_sealer.seal(ContentType::ApplicationData, DTLS_1_2, black_box(buf), len)?;
        }
        ensure!(
            black_box(opened_len) == record_len,
            "reply of {opened_len} bytes"
        );
    }
    Ok(())
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
            if let Kind::Seal | Kind::Open | Kind::Packet = w.kind {
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
