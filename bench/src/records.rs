//! B0: record seal and open per size and cipher, next to a baseline on the same buffers:
//! our DTLS 1.2 record layer next to raw aws-lc-rs `LessSafeKey` ([`Version::V12`], the
//! default), or our DTLS 1.3 record layer next to our DTLS 1.2 one ([`Version::V13`]).
//!
//! Method: an arena of `batch` record slots. Seal: time sealing every slot in place
//! (1.2: `Sealer::seal`; 1.3: `Sealer13::seal` with the default unified header, 16-bit
//! sequence number and length, no padding; raw: `LessSafeKey::seal_in_place_separate_tag`
//! with a constant nonce and AAD, tag copied behind the ciphertext). Open: seal every slot
//! untimed (fresh sequence numbers, in order, so the replay window accepts them all), then
//! time opening every slot (1.2: `Opener::open`, 1.3: `Opener13::open`, both with replay
//! check and update; raw: `open_in_place_separate_tag`). A run interleaves passes of the
//! subject and the baseline (alternating which goes first) until each has `min_run` of
//! timed work, so both see the same noise on a shared machine; a run's figure is its
//! median pass. One warm-up run is discarded. Reported: median ns/record over the runs
//! with min and max, and the median of the per-run ratios baseline ns / subject ns.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13, TrafficKeys13};
use dataplane::record::{
    Aead, ContentType, DTLS_1_2, MAX_PLAINTEXT_LEN, Opener, RecordKey, ReplayWindow, Sealer,
};

/// The record layer under test, and what it is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Version {
    /// Our DTLS 1.2 record layer (RFC 6347 §4.1) next to raw aws-lc-rs.
    #[default]
    #[value(name = "1.2")]
    V12,
    /// Our DTLS 1.3 record layer (RFC 9147 §4) next to our DTLS 1.2 record layer.
    #[value(name = "1.3")]
    V13,
}

impl Version {
    /// `1.2` / `1.3`.
    pub fn name(self) -> &'static str {
        match self {
            Version::V12 => "1.2",
            Version::V13 => "1.3",
        }
    }

    /// The ciphers measured when none are named: every AEAD, and for 1.2 the null
    /// baseline (which has no 1.3 form).
    pub fn default_ciphers(self) -> Vec<Cipher> {
        Cipher::ALL
            .into_iter()
            .filter(|&c| self.supports(c))
            .collect()
    }

    /// Whether `cipher` has a record format in this version.
    pub fn supports(self, cipher: Cipher) -> bool {
        self == Version::V12 || cipher != Cipher::None
    }
}

/// Record protection under test; `none` is the null baseline (no raw counterpart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Cipher {
    /// AES-128-GCM (RFC 5288 record format).
    Aes128gcm,
    /// AES-256-GCM (RFC 5288 record format).
    Aes256gcm,
    /// ChaCha20-Poly1305 (RFC 7905 record format).
    Chacha20poly1305,
    /// Null protection: header and plaintext only (baseline, never negotiable).
    None,
}

impl Cipher {
    /// Every cipher, AEADs first.
    pub const ALL: [Cipher; 4] = [
        Cipher::Aes128gcm,
        Cipher::Aes256gcm,
        Cipher::Chacha20poly1305,
        Cipher::None,
    ];

    /// The record layer's AEAD, `None` for the null baseline.
    pub fn aead(self) -> Option<Aead> {
        match self {
            Cipher::Aes128gcm => Some(Aead::Aes128Gcm),
            Cipher::Aes256gcm => Some(Aead::Aes256Gcm),
            Cipher::Chacha20poly1305 => Some(Aead::ChaCha20Poly1305),
            Cipher::None => None,
        }
    }

    /// Stable name used in tables and JSON.
    pub fn name(self) -> &'static str {
        self.aead().map_or("none", Aead::name)
    }
}

/// Seal or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Protect a record.
    Seal,
    /// Verify and decrypt a record.
    Open,
}

impl Op {
    /// `seal` / `open`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Seal => "seal",
            Op::Open => "open",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The record layer under test (and so the baseline).
    pub version: Version,
    /// Plaintext sizes in bytes.
    pub sizes: Vec<usize>,
    /// Ciphers.
    pub ciphers: Vec<Cipher>,
    /// Measured runs per figure (at least 5), after one warm-up run.
    pub runs: usize,
    /// Record slots per pass.
    pub batch: usize,
    /// Timed work per run.
    pub min_run: Duration,
}

/// Median, min and max of per-run ns/record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Median over runs.
    pub median_ns: f64,
    /// Fastest run.
    pub min_ns: f64,
    /// Slowest run.
    pub max_ns: f64,
}

impl Stat {
    fn from_runs(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median_ns = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median_ns,
            min_ns: v.first().copied().unwrap_or(f64::NAN),
            max_ns: v.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// Plaintext GB/s at the median.
    pub fn gbps(&self, size: usize) -> f64 {
        size as f64 / self.median_ns
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Cipher.
    pub cipher: Cipher,
    /// Plaintext size.
    pub size: usize,
    /// Seal or open.
    pub op: Op,
    /// Our record layer under test: DTLS 1.2, or DTLS 1.3 with [`Version::V13`].
    pub ours: Stat,
    /// The baseline on the same buffers: raw aws-lc-rs for DTLS 1.2 (`None` for the null
    /// cipher), our DTLS 1.2 record layer for DTLS 1.3.
    pub baseline: Option<Stat>,
    /// Per-run throughput ratio ours/baseline (baseline ns / ours ns of the same paired
    /// run); the "`_ns`" fields hold ratios here.
    pub ratio: Option<Stat>,
}

impl Row {
    /// Throughput ratio ours/baseline: the median of the per-run paired ratios.
    pub fn ratio(&self) -> Option<f64> {
        self.ratio.map(|r| r.median_ns)
    }
}

/// A contiguous arena of `count` record slots, each the longest record of the subjects
/// that share it rounded up to 64 bytes.
struct Arena {
    buf: Vec<u8>,
    slot: usize,
}

impl Arena {
    fn new(count: usize, max_record_len: usize) -> Self {
        let slot = max_record_len.next_multiple_of(64);
        Self {
            buf: vec![0x5a; slot * count],
            slot,
        }
    }

    fn count(&self) -> u64 {
        (self.buf.len() / self.slot) as u64
    }

    /// Every slot's first `record_len` bytes.
    fn records(&mut self, record_len: usize) -> impl Iterator<Item = &mut [u8]> {
        self.buf
            .chunks_exact_mut(self.slot)
            .map(move |s| &mut s[..record_len])
    }
}

/// One implementation under test: seals and opens whole arenas.
trait Subject {
    /// Bytes of one record of `size` plaintext bytes.
    fn record_len(&self) -> usize;
    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()>;
    fn open_all(&mut self, arena: &mut Arena, size: usize) -> Result<()>;
}

/// Our DTLS 1.2 record layer.
struct Ours {
    sealer: Sealer,
    opener: Opener,
    record_len: usize,
}

impl Subject for Ours {
    fn record_len(&self) -> usize {
        self.record_len
    }

    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let n = self
                .sealer
                .seal(ContentType::ApplicationData, DTLS_1_2, black_box(r), size)
                .context("seal")?;
            black_box(n);
        }
        Ok(())
    }

    fn open_all(&mut self, arena: &mut Arena, _size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let opened = self.opener.open(black_box(r)).context("open")?;
            black_box(opened.plaintext);
        }
        Ok(())
    }
}

/// Our DTLS 1.3 record layer: default unified header (no CID, 16-bit sequence number,
/// length present), application data, no padding.
struct Ours13 {
    sealer: Sealer13,
    opener: Opener13,
    form: HeaderForm<'static>,
    record_len: usize,
}

impl Subject for Ours13 {
    fn record_len(&self) -> usize {
        self.record_len
    }

    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let n = self
                .sealer
                .seal(
                    InnerContentType::ApplicationData,
                    &self.form,
                    black_box(r),
                    size,
                    0,
                )
                .context("seal")?;
            black_box(n);
        }
        Ok(())
    }

    fn open_all(&mut self, arena: &mut Arena, _size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let opened = self.opener.open(black_box(r), 0).context("open")?;
            black_box(opened.plaintext);
        }
        Ok(())
    }
}

/// Raw aws-lc-rs AEAD on a record of our DTLS 1.2 layout, constant nonce and AAD.
struct Raw {
    key: LessSafeKey,
    offset: usize,
    record_len: usize,
    nonce: [u8; 12],
    aad: [u8; 13],
}

impl Subject for Raw {
    fn record_len(&self) -> usize {
        self.record_len
    }

    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let (pt, tag) = black_box(r)[self.offset..].split_at_mut(size);
            let t = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(self.nonce),
                    Aad::from(&self.aad),
                    pt,
                )
                .map_err(|_| anyhow::anyhow!("raw seal failed"))?;
            tag.copy_from_slice(t.as_ref());
        }
        Ok(())
    }

    fn open_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records(self.record_len) {
            let (ct, tag) = black_box(r)[self.offset..].split_at_mut(size);
            let pt = self
                .key
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(self.nonce),
                    Aad::from(&self.aad),
                    tag,
                    ct,
                )
                .map_err(|_| anyhow::anyhow!("raw open failed"))?;
            black_box(pt);
        }
        Ok(())
    }
}

/// Timed nanoseconds of one pass over the arena.
fn pass(s: &mut dyn Subject, arena: &mut Arena, size: usize, op: Op) -> Result<Duration> {
    Ok(match op {
        Op::Seal => {
            let t = Instant::now();
            s.seal_all(arena, size)?;
            t.elapsed()
        }
        Op::Open => {
            // Fresh records (new sequence numbers) untimed, then the timed opens.
            s.seal_all(arena, size)?;
            let t = Instant::now();
            s.open_all(arena, size)?;
            t.elapsed()
        }
    })
}

/// Median of per-pass ns/record.
fn median_pass_ns(mut passes: Vec<Duration>, count: u64) -> f64 {
    passes.sort_unstable();
    let n = passes.len();
    let mid = if n % 2 == 1 {
        passes[n / 2].as_nanos() as f64
    } else {
        (passes[n / 2 - 1].as_nanos() + passes[n / 2].as_nanos()) as f64 / 2.0
    };
    mid / count as f64
}

/// One run: passes of ours and the baseline interleaved (alternating which goes first)
/// until each has `min_run` of timed work, so both see the same machine. Returns the
/// median per-pass ns/record of each: a pass is short (tens of microseconds), so on a
/// shared machine most passes run undisturbed and the median ignores the ones a
/// preemption landed in.
fn paired_run(
    ours: &mut dyn Subject,
    mut baseline: Option<&mut dyn Subject>,
    arena: &mut Arena,
    size: usize,
    op: Op,
    min_run: Duration,
) -> Result<(f64, Option<f64>)> {
    let count = arena.count();
    let (mut t_ours, mut t_base) = (Duration::ZERO, Duration::ZERO);
    let (mut p_ours, mut p_base) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    while t_ours < min_run || (baseline.is_some() && t_base < min_run) {
        for turn in 0..2 {
            if (turn == 0) == i.is_multiple_of(2) {
                let t = pass(ours, arena, size, op)?;
                t_ours += t;
                p_ours.push(t);
            } else if let Some(b) = baseline.as_deref_mut() {
                let t = pass(b, arena, size, op)?;
                t_base += t;
                p_base.push(t);
            }
        }
        i += 1;
    }
    Ok((
        median_pass_ns(p_ours, count),
        baseline.map(|_| median_pass_ns(p_base, count)),
    ))
}

fn record_key(aead: Option<Aead>, key: &[u8], iv: &[u8]) -> Result<RecordKey> {
    Ok(match aead {
        None => RecordKey::null_baseline(),
        Some(a) => RecordKey::new(a, &key[..a.key_len()], &iv[..a.fixed_iv_len()])?,
    })
}

/// Same-value key material for every subject of a figure.
const KEY: [u8; 32] = [0x42; 32];
const IV: [u8; 12] = [0x24; 12];
const SN_KEY: [u8; 32] = [0x35; 32];

fn ours12(aead: Option<Aead>, size: usize) -> Result<Ours> {
    let sealer = Sealer::new(1, record_key(aead, &KEY, &IV)?, 0)?;
    let record_len = sealer.record_len(size);
    Ok(Ours {
        sealer,
        opener: Opener::new(1, record_key(aead, &KEY, &IV)?, ReplayWindow::new(64)),
        record_len,
    })
}

fn ours13(aead: Aead, size: usize) -> Result<Ours13> {
    let keys = || TrafficKeys13::new(aead, &KEY[..aead.key_len()], &IV, &SN_KEY[..aead.key_len()]);
    let sealer = Sealer13::new(3, keys()?);
    let form = HeaderForm::default();
    let record_len = sealer.record_len(&form, size, 0);
    Ok(Ours13 {
        sealer,
        opener: Opener13::new(3, keys()?, ReplayWindow::new(64)),
        form,
        record_len,
    })
}

fn raw(a: Aead, ours: &Ours) -> Result<Raw> {
    let alg = match a {
        Aead::Aes128Gcm => &aead::AES_128_GCM,
        Aead::Aes256Gcm => &aead::AES_256_GCM,
        Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    };
    let unbound = UnboundKey::new(alg, &KEY[..a.key_len()])
        .map_err(|_| anyhow::anyhow!("raw key rejected"))?;
    Ok(Raw {
        key: LessSafeKey::new(unbound),
        offset: ours.sealer.plaintext_offset(),
        record_len: ours.record_len,
        nonce: [7; 12],
        aad: [9; 13],
    })
}

fn measure(config: &Config, cipher: Cipher, size: usize, op: Op) -> Result<Row> {
    let aead = cipher.aead();
    let (mut ours, mut baseline): (Box<dyn Subject>, Option<Box<dyn Subject>>) =
        match config.version {
            Version::V12 => {
                let ours = ours12(aead, size)?;
                let raw = aead.map(|a| raw(a, &ours)).transpose()?;
                (Box::new(ours), raw.map(|r| Box::new(r) as Box<dyn Subject>))
            }
            Version::V13 => {
                let a = aead.context("the null cipher has no DTLS 1.3 record format")?;
                (
                    Box::new(ours13(a, size)?),
                    Some(Box::new(ours12(aead, size)?)),
                )
            }
        };
    let max_record_len = baseline
        .as_ref()
        .map_or(0, |b| b.record_len())
        .max(ours.record_len());
    let mut arena = Arena::new(config.batch, max_record_len);
    let (mut ours_runs, mut base_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // Run 0 is the warm-up.
    for run in 0..=config.runs {
        let (o, b) = paired_run(
            ours.as_mut(),
            baseline.as_mut().map(|b| &mut **b as &mut dyn Subject),
            &mut arena,
            size,
            op,
            config.min_run,
        )?;
        if run > 0 {
            ours_runs.push(o);
            if let Some(b) = b {
                base_runs.push(b);
                ratios.push(b / o);
            }
        }
    }
    Ok(Row {
        cipher,
        size,
        op,
        ours: Stat::from_runs(ours_runs),
        baseline: baseline.map(|_| Stat::from_runs(base_runs)),
        ratio: (!ratios.is_empty()).then(|| Stat::from_runs(ratios)),
    })
}

/// Runs every (cipher, size, op) of `config`.
pub fn run(config: &Config, mut progress: impl FnMut(&Row)) -> Result<Vec<Row>> {
    ensure!(config.runs >= 5, "at least 5 measured runs are required");
    ensure!(config.batch >= 1, "batch must be at least 1");
    if let Some(&s) = config.sizes.iter().find(|&&s| s > MAX_PLAINTEXT_LEN) {
        bail!("size {s} exceeds the 2^14 plaintext limit");
    }
    if let Some(&c) = config
        .ciphers
        .iter()
        .find(|&&c| !config.version.supports(c))
    {
        bail!(
            "cipher {} has no DTLS {} record format (the null baseline is DTLS 1.2 only)",
            c.name(),
            config.version.name()
        );
    }
    let mut rows = Vec::new();
    for &cipher in &config.ciphers {
        for &size in &config.sizes {
            for op in [Op::Seal, Op::Open] {
                let row = measure(config, cipher, size, op)
                    .with_context(|| format!("{} {size} B {}", cipher.name(), op.name()))?;
                progress(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_min_max() {
        let s = Stat::from_runs(vec![5.0, 1.0, 3.0, 4.0, 2.0]);
        assert_eq!((s.median_ns, s.min_ns, s.max_ns), (3.0, 1.0, 5.0));
        let s = Stat::from_runs(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.median_ns, 2.5);
        assert!((s.gbps(10) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn tiny_run_measures_every_cipher() {
        let config = Config {
            version: Version::V12,
            sizes: vec![64],
            ciphers: Cipher::ALL.to_vec(),
            runs: 5,
            batch: 4,
            min_run: Duration::from_micros(50),
        };
        let rows = run(&config, |_| {}).expect("benchmark runs");
        assert_eq!(rows.len(), 8);
        for r in &rows {
            assert!(r.ours.median_ns > 0.0 && r.ours.median_ns.is_finite());
            assert_eq!(r.baseline.is_some(), r.cipher != Cipher::None);
            if let Some(ratio) = r.ratio() {
                assert!(ratio > 0.0 && ratio.is_finite());
            }
        }
        let bad = Config {
            runs: 4,
            ..config.clone()
        };
        assert!(run(&bad, |_| {}).is_err());
        let big = Config {
            sizes: vec![MAX_PLAINTEXT_LEN + 1],
            ..config
        };
        assert!(run(&big, |_| {}).is_err());
    }

    #[test]
    fn tiny_records_v13_run_measures_every_cipher_against_v12() {
        let config = Config {
            version: Version::V13,
            sizes: vec![64, 1200],
            ciphers: Version::V13.default_ciphers(),
            runs: 5,
            batch: 4,
            min_run: Duration::from_micros(50),
        };
        assert_eq!(
            config.ciphers,
            [
                Cipher::Aes128gcm,
                Cipher::Aes256gcm,
                Cipher::Chacha20poly1305
            ]
        );
        let rows = run(&config, |_| {}).expect("benchmark runs");
        assert_eq!(rows.len(), 3 * 2 * 2);
        for (r, (cipher, size, op)) in rows.iter().zip(
            config
                .ciphers
                .iter()
                .flat_map(|&c| [64, 1200].map(move |s| (c, s)))
                .flat_map(|(c, s)| [Op::Seal, Op::Open].map(move |o| (c, s, o))),
        ) {
            assert_eq!((r.cipher, r.size, r.op), (cipher, size, op));
            assert!(r.ours.median_ns > 0.0 && r.ours.median_ns.is_finite());
            let base = r.baseline.expect("the 1.2 layer ran beside");
            assert!(base.median_ns > 0.0 && base.median_ns.is_finite());
            let ratio = r.ratio().expect("paired ratio");
            assert!(ratio > 0.0 && ratio.is_finite(), "{r:?}");
        }
    }

    #[test]
    fn records_v13_refuses_the_null_cipher() {
        let config = Config {
            version: Version::V13,
            sizes: vec![64],
            ciphers: vec![Cipher::Aes128gcm, Cipher::None],
            runs: 5,
            batch: 4,
            min_run: Duration::from_micros(50),
        };
        let e = run(&config, |_| panic!("nothing is measured")).expect_err("none refused");
        assert!(e.to_string().contains("no DTLS 1.3 record format"), "{e}");
        assert!(Version::V12.default_ciphers().contains(&Cipher::None));
    }

    /// Open passes seal fresh records first: the sequence numbers keep rising and every
    /// record passes the replay window, pass after pass.
    #[test]
    fn records_v13_open_passes_use_fresh_sequence_numbers() {
        let mut ours = ours13(Aead::Aes128Gcm, 100).expect("keys");
        let mut base = ours12(Some(Aead::Aes128Gcm), 100).expect("keys");
        let mut arena = Arena::new(8, ours.record_len().max(base.record_len()));
        for _ in 0..3 {
            pass(&mut base, &mut arena, 100, Op::Open).expect("1.2 opens");
            pass(&mut ours, &mut arena, 100, Op::Open).expect("1.3 opens");
        }
        assert_eq!(ours.sealer.next_sequence(), 24);
        assert_eq!(ours.opener.next_expected(), 24);
        assert_eq!(base.sealer.next_sequence(), 24);
        // The same records opened twice: the replay window refuses the second time.
        ours.seal_all(&mut arena, 100).expect("seal");
        let sealed = arena.buf.clone();
        ours.open_all(&mut arena, 100).expect("first open");
        arena.buf.copy_from_slice(&sealed);
        let e = ours.open_all(&mut arena, 100).expect_err("replay refused");
        assert!(format!("{e:#}").contains("replayed"), "{e:#}");
    }
}
