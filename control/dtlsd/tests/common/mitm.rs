//! A record-level man in the middle: a UDP proxy between a real DTLS peer (`dtlsd connect`)
//! and `dtlsd serve` that splits each datagram into its records (the DTLS 1.2 header, with a
//! CID for `tls12_cid` records, and the DTLS 1.3 unified header, RFC 9147 §4) and, driven by
//! a seeded RNG, duplicates, delays and replays, reorders, flips bits in, truncates or injects
//! records in both directions.
//!
//! Every manipulation but [`Manipulation::Reorder`] still forwards each original datagram
//! unchanged (after its corrupted or extra twin), so an honest stack must deliver every
//! application payload exactly once; [`Manipulation::Reorder`] delays and shuffles records
//! but loses none. [`Mitm::replay_history`] sends every record seen so far once more, late.
//!
//! The proxy knows the CID length of each direction (what `serve` gives its clients toward
//! the server, none toward the client); a record whose header it cannot parse ends the
//! datagram's split and is treated as one opaque record.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The payload injected in plaintext application-data records: it must never reach a backend.
pub const CANARY: &[u8] = b"MITM-CANARY-PLAINTEXT-NEVER-FORWARD";

/// What the proxy does to the records passing through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manipulation {
    /// Forward untouched.
    None,
    /// Every record twice more, each in its own datagram, after the original datagram.
    Duplicate,
    /// Every datagram held back a random 0..40 ms, and now and then old records (from any
    /// earlier flight or epoch) sent again.
    DelayReplay,
    /// Records split into one datagram each and released in shuffled batches.
    Reorder,
    /// Before each protected record, a copy with one bit flipped in its body.
    FlipBits,
    /// Before each datagram, a copy cut short at a random byte.
    Truncate,
    /// Before each datagram, a forged one: random bytes, protected-looking records with
    /// random sequence numbers and bodies, or a plaintext application-data record holding
    /// [`CANARY`].
    Inject,
    /// Once [`Mitm::arm`]ed (the test arms it when the session is up), before each datagram
    /// a spoofed epoch-0 record: a fatal handshake_failure alert, or toward the client a
    /// HelloVerifyRequest.
    SpoofEpoch0,
}

/// Counters of what the proxy did, for the test to show the manipulation happened.
#[derive(Clone, Debug, Default)]
pub struct MitmStats {
    pub datagrams_in: u64,
    pub records_in: u64,
    pub protected_in: u64,
    pub duplicated: u64,
    pub replayed: u64,
    pub reordered_batches: u64,
    pub flipped: u64,
    pub truncated: u64,
    pub injected: u64,
    pub canaries: u64,
    pub spoofed: u64,
}

/// splitmix64: a small seeded generator (no dependency; the seed is printed by the tests).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// One record of a datagram.
#[derive(Clone, Debug)]
pub struct Record {
    pub bytes: Vec<u8>,
    /// Where the body (what follows the header) starts.
    pub body_at: usize,
    /// Protected by the AEAD: a DTLS 1.2 record of epoch > 0 or a DTLS 1.3 unified-header
    /// record.
    pub protected: bool,
}

/// DTLS 1.2 record header length without a CID (RFC 6347 §4.1).
const HEADER_12: usize = 13;
/// The RFC 9146 `tls12_cid` content type.
const TLS12_CID: u8 = 25;

/// Splits `datagram` into records; `cid_len` is the length of the CID records of this
/// direction carry. What cannot be parsed becomes one last opaque record.
pub fn split_records(datagram: &[u8], cid_len: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some((len, body_at, protected)) = record_extent(rest, cid_len) else {
            out.push(Record {
                bytes: rest.to_vec(),
                body_at: rest.len(),
                protected: false,
            });
            break;
        };
        out.push(Record {
            bytes: rest[..len].to_vec(),
            body_at,
            protected,
        });
        rest = &rest[len..];
    }
    out
}

/// The length, body offset and protection of the record at the start of `d`.
fn record_extent(d: &[u8], cid_len: usize) -> Option<(usize, usize, bool)> {
    let first = *d.first()?;
    if first & 0xe0 == 0x20 {
        // RFC 9147 §4: 0 0 1 C S L E E, then the CID, 8 or 16 sequence bits, 16 length bits.
        let cid = if first & 0x10 != 0 { cid_len } else { 0 };
        let seq = if first & 0x08 != 0 { 2 } else { 1 };
        let at = 1 + cid + seq;
        if first & 0x04 == 0 {
            return (d.len() >= at).then_some((d.len(), at, true));
        }
        let len = usize::from(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?));
        let body_at = at + 2;
        return (d.len() >= body_at + len).then_some((body_at + len, body_at, true));
    }
    if !(20..=26).contains(&first) {
        return None;
    }
    let cid = if first == TLS12_CID { cid_len } else { 0 };
    let header = HEADER_12 + cid;
    let epoch = u16::from_be_bytes(d.get(3..5)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(
        d.get(header - 2..header)?.try_into().ok()?,
    ));
    (d.len() >= header + len).then_some((header + len, header, epoch != 0))
}

/// A DTLS 1.2-format plaintext record (also what DTLS 1.3 uses before its keys).
pub fn plaintext_record(content_type: u8, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xfe, 0xfd];
    r.extend(epoch.to_be_bytes());
    r.extend(&seq.to_be_bytes()[2..]);
    r.extend(
        u16::try_from(body.len())
            .expect("body length")
            .to_be_bytes(),
    );
    r.extend(body);
    r
}

/// One direction's state.
struct Direction {
    /// CID length of this direction's records.
    cid_len: usize,
    /// Every record seen, for replays.
    history: Vec<Vec<u8>>,
    /// Held records (reorder) or datagrams (delay) with the time they become due.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// The newest 1.2 epoch seen on a protected record (forged records use it).
    epoch: u16,
}

struct Shared {
    manipulation: Manipulation,
    /// [`Manipulation::SpoofEpoch0`] acts only once this is set.
    armed: bool,
    rng: Rng,
    stats: MitmStats,
    /// The client's address, once it has sent.
    client: Option<SocketAddr>,
    to_server: Direction,
    to_client: Direction,
}

/// The proxy: listens on `addr`, forwards to the server from one upstream socket (one client
/// at a time). Stopped on drop.
pub struct Mitm {
    pub addr: SocketAddr,
    front: UdpSocket,
    back: UdpSocket,
    server: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Mitm {
    /// A proxy in front of `server` doing `manipulation` with `seed`; records toward the
    /// server carry a `cid_to_server`-byte CID once one is negotiated.
    pub fn start(
        server: SocketAddr,
        manipulation: Manipulation,
        seed: u64,
        cid_to_server: usize,
    ) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind mitm front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind mitm back");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(5)))
                .expect("read timeout");
        }
        let addr = front.local_addr().expect("mitm address");
        let direction = |cid_len| Direction {
            cid_len,
            history: Vec::new(),
            held: VecDeque::new(),
            epoch: 1,
        };
        let shared = Arc::new(Mutex::new(Shared {
            manipulation,
            armed: false,
            rng: Rng::new(seed),
            stats: MitmStats::default(),
            client: None,
            to_server: direction(cid_to_server),
            to_client: direction(0),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for toward_server in [true, false] {
            let (rx, tx) = if toward_server {
                (front.try_clone(), back.try_clone())
            } else {
                (back.try_clone(), front.try_clone())
            };
            let (rx, tx) = (rx.expect("clone socket"), tx.expect("clone socket"));
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                pump(&rx, &tx, server, toward_server, &shared, &stop);
            }));
        }
        Self {
            addr,
            front,
            back,
            server,
            shared,
            stop,
            threads,
        }
    }

    /// Arms [`Manipulation::SpoofEpoch0`].
    pub fn arm(&self) {
        self.shared.lock().expect("mitm lock").armed = true;
    }

    pub fn stats(&self) -> MitmStats {
        self.shared.lock().expect("mitm lock").stats.clone()
    }

    /// Sends every record seen so far, in both directions, once more (each in its own
    /// datagram): a late replay of the whole conversation. Returns how many.
    pub fn replay_history(&self) -> usize {
        let mut sh = self.shared.lock().expect("mitm lock");
        let mut n = 0;
        for r in &sh.to_server.history {
            let _ = self.back.send_to(r, self.server);
            n += 1;
        }
        if let Some(client) = sh.client {
            for r in &sh.to_client.history {
                let _ = self.front.send_to(r, client);
                n += 1;
            }
        }
        sh.stats.replayed += n as u64;
        n
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One direction's loop: receive, manipulate, send; release what is held when due.
fn pump(
    rx: &UdpSocket,
    tx: &UdpSocket,
    server: SocketAddr,
    toward_server: bool,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Relaxed) {
        let got = rx.recv_from(&mut buf);
        let mut sh = shared.lock().expect("mitm lock");
        if let (true, Ok((_, from))) = (toward_server, &got) {
            sh.client = Some(*from);
        }
        let Some(to) = (if toward_server {
            Some(server)
        } else {
            sh.client
        }) else {
            continue;
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        if let Ok((n, _)) = got {
            manipulate(&mut sh, toward_server, &buf[..n], &mut out);
        }
        release_due(&mut sh, toward_server, &mut out);
        drop(sh);
        for d in out {
            let _ = tx.send_to(&d, to);
        }
    }
}

fn direction(sh: &mut Shared, toward_server: bool) -> &mut Direction {
    if toward_server {
        &mut sh.to_server
    } else {
        &mut sh.to_client
    }
}

/// Held records of a reorder batch are released together once this old.
const REORDER_HOLD: Duration = Duration::from_millis(15);
/// Records in one reorder batch.
const REORDER_BATCH: usize = 4;

fn release_due(sh: &mut Shared, toward_server: bool, out: &mut Vec<Vec<u8>>) {
    let now = Instant::now();
    let reorder = sh.manipulation == Manipulation::Reorder;
    let Shared {
        rng,
        stats,
        to_server,
        to_client,
        ..
    } = sh;
    let dir = if toward_server { to_server } else { to_client };
    if reorder {
        let due = dir.held.front().is_some_and(|(t, _)| *t <= now);
        if due || dir.held.len() >= REORDER_BATCH {
            let mut batch: Vec<Vec<u8>> = dir.held.drain(..).map(|(_, d)| d).collect();
            rng.shuffle(&mut batch);
            stats.reordered_batches += 1;
            out.extend(batch);
        }
    } else {
        while dir.held.front().is_some_and(|(t, _)| *t <= now) {
            out.extend(dir.held.pop_front().map(|(_, d)| d));
        }
    }
}

fn manipulate(sh: &mut Shared, toward_server: bool, datagram: &[u8], out: &mut Vec<Vec<u8>>) {
    let cid_len = direction(sh, toward_server).cid_len;
    let records = split_records(datagram, cid_len);
    sh.stats.datagrams_in += 1;
    sh.stats.records_in += records.len() as u64;
    sh.stats.protected_in += records.iter().filter(|r| r.protected).count() as u64;
    for r in &records {
        if r.protected && r.bytes[0] & 0xe0 != 0x20 && r.bytes.len() >= 5 {
            let epoch = u16::from_be_bytes([r.bytes[3], r.bytes[4]]);
            let dir = direction(sh, toward_server);
            dir.epoch = dir.epoch.max(epoch);
        }
    }
    match sh.manipulation {
        Manipulation::None => out.push(datagram.to_vec()),
        Manipulation::Duplicate => {
            out.push(datagram.to_vec());
            for r in &records {
                out.push(r.bytes.clone());
                out.push(r.bytes.clone());
                sh.stats.duplicated += 2;
            }
        }
        Manipulation::DelayReplay => {
            let due = Instant::now() + Duration::from_millis(sh.rng.below(40) as u64);
            let dir = direction(sh, toward_server);
            dir.held.push_back((due, datagram.to_vec()));
            // Keep the held queue in due order (a later datagram may be due sooner: that is
            // the reordering a delay causes).
            dir.held.make_contiguous().sort_by_key(|(t, _)| *t);
            let len = direction(sh, toward_server).history.len();
            if len > 0 && sh.rng.chance(30) {
                let pick = sh.rng.below(len);
                out.push(direction(sh, toward_server).history[pick].clone());
                sh.stats.replayed += 1;
            }
        }
        Manipulation::Reorder => {
            let due = Instant::now() + REORDER_HOLD;
            let dir = direction(sh, toward_server);
            for r in &records {
                dir.held.push_back((due, r.bytes.clone()));
            }
        }
        Manipulation::FlipBits => {
            for r in &records {
                if r.protected && r.bytes.len() > r.body_at {
                    let mut bad = r.bytes.clone();
                    let at = r.body_at + sh.rng.below(bad.len() - r.body_at);
                    bad[at] ^= 1 << sh.rng.below(8);
                    out.push(bad);
                    sh.stats.flipped += 1;
                }
            }
            out.push(datagram.to_vec());
        }
        Manipulation::Truncate => {
            if datagram.len() > 1 {
                let cut = 1 + sh.rng.below(datagram.len() - 1);
                out.push(datagram[..cut].to_vec());
                sh.stats.truncated += 1;
            }
            out.push(datagram.to_vec());
        }
        Manipulation::SpoofEpoch0 => {
            if sh.armed {
                let seq = sh.rng.next_u64() & 0xffff;
                let spoof = if !toward_server && sh.rng.chance(50) {
                    // RFC 6347 §4.2.1 HelloVerifyRequest { server_version, cookie }.
                    let mut hvr = vec![3, 0, 0, 35, 0, 0, 0, 0, 0, 0, 0, 35, 0xfe, 0xff, 32];
                    hvr.extend(sh.rng.bytes(32));
                    plaintext_record(22, 0, seq, &hvr)
                } else {
                    plaintext_record(21, 0, seq, &[2, 40])
                };
                out.push(spoof);
                sh.stats.spoofed += 1;
            }
            out.push(datagram.to_vec());
        }
        Manipulation::Inject => {
            let forged = forge(sh, toward_server);
            out.push(forged);
            sh.stats.injected += 1;
            out.push(datagram.to_vec());
        }
    }
    let dir = direction(sh, toward_server);
    dir.history.extend(records.into_iter().map(|r| r.bytes));
}

/// A forged datagram: random bytes, a protected-looking 1.2 record of the current epoch, a
/// 1.3 unified-header record, or a plaintext application-data record with [`CANARY`].
fn forge(sh: &mut Shared, toward_server: bool) -> Vec<u8> {
    let epoch = direction(sh, toward_server).epoch;
    let cid_len = direction(sh, toward_server).cid_len;
    let rng = &mut sh.rng;
    match rng.below(5) {
        0 => {
            let n = 1 + rng.below(200);
            rng.bytes(n)
        }
        1 => {
            let seq = rng.next_u64() & 0xffff_ffff_ffff;
            let n = 17 + rng.below(100);
            let body = rng.bytes(n);
            plaintext_record(23, epoch, seq, &body)
        }
        2 => {
            // Unified header with the C bit when this direction carries CIDs, 16-bit sequence
            // number and length; random CID, sequence number and ciphertext.
            let c = if cid_len > 0 { 0x10 } else { 0 };
            let mut r = vec![0x2c | c | (rng.below(4) as u8)];
            r.extend(rng.bytes(cid_len + 2));
            let n = 17 + rng.below(100);
            r.extend(u16::try_from(n).expect("len").to_be_bytes());
            r.extend(rng.bytes(n));
            r
        }
        3 => {
            // The forged record of epoch 2^16-1 and sequence number 2^48-1.
            let body = rng.bytes(40);
            plaintext_record(23, u16::MAX, (1 << 48) - 1, &body)
        }
        _ => {
            sh.stats.canaries += 1;
            let seq = sh.rng.next_u64() & 0xffff;
            plaintext_record(23, 0, seq, CANARY)
        }
    }
}
