//! B0: record seal and open per size and cipher, next to raw aws-lc-rs `LessSafeKey` on
//! the same buffers.
//!
//! Method: an arena of `batch` record slots. Seal: time sealing every slot in place
//! (ours: `Sealer::seal`; raw: `LessSafeKey::seal_in_place_separate_tag` with a constant
//! nonce and AAD, tag copied behind the ciphertext). Open: seal every slot untimed, then
//! time opening every slot (ours: `Opener::open` with replay check and update; raw:
//! `open_in_place_separate_tag`). A run interleaves passes of ours and raw (alternating
//! which goes first) until each has `min_run` of timed work, so both see the same noise
//! on a shared machine; a run's figure is its median pass. One warm-up run is discarded.
//! Reported: median ns/record over the runs with min and max, and the median of the
//! per-run ratios raw ns / ours ns.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use dataplane::record::{
    Aead, ContentType, DTLS_1_2, MAX_PLAINTEXT_LEN, Opener, RecordKey, ReplayWindow, Sealer,
};

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
    /// Our record layer.
    pub ours: Stat,
    /// Raw aws-lc-rs on the same buffers (`None` for the null baseline).
    pub raw: Option<Stat>,
    /// Per-run throughput ratio ours/raw (raw ns / ours ns of the same paired run); the
    /// "`_ns`" fields hold ratios here.
    pub ratio: Option<Stat>,
}

impl Row {
    /// Throughput ratio ours/raw: the median of the per-run paired ratios.
    pub fn ratio(&self) -> Option<f64> {
        self.ratio.map(|r| r.median_ns)
    }
}

/// A contiguous arena of `count` record slots of `slot` bytes each.
struct Arena {
    buf: Vec<u8>,
    slot: usize,
    record_len: usize,
}

impl Arena {
    fn new(count: usize, record_len: usize) -> Self {
        let slot = record_len.next_multiple_of(64);
        Self {
            buf: vec![0x5a; slot * count],
            slot,
            record_len,
        }
    }

    fn records(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let n = self.record_len;
        self.buf
            .chunks_exact_mut(self.slot)
            .map(move |s| &mut s[..n])
    }
}

/// One implementation under test: seals and opens whole arenas.
trait Subject {
    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()>;
    fn open_all(&mut self, arena: &mut Arena, size: usize) -> Result<()>;
}

struct Ours {
    sealer: Sealer,
    opener: Opener,
}

impl Subject for Ours {
    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records() {
            let n = self
                .sealer
                .seal(ContentType::ApplicationData, DTLS_1_2, black_box(r), size)
                .context("seal")?;
            black_box(n);
        }
        Ok(())
    }

    fn open_all(&mut self, arena: &mut Arena, _size: usize) -> Result<()> {
        for r in arena.records() {
            let opened = self.opener.open(black_box(r)).context("open")?;
            black_box(opened.plaintext);
        }
        Ok(())
    }
}

struct Raw {
    key: LessSafeKey,
    offset: usize,
    nonce: [u8; 12],
    aad: [u8; 13],
}

impl Subject for Raw {
    fn seal_all(&mut self, arena: &mut Arena, size: usize) -> Result<()> {
        for r in arena.records() {
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
        for r in arena.records() {
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

/// One run: passes of ours and raw interleaved (alternating which goes first) until each
/// has `min_run` of timed work, so both see the same machine. Returns the median per-pass
/// ns/record of each: a pass is short (tens of microseconds), so on a shared machine most
/// passes run undisturbed and the median ignores the ones a preemption landed in.
fn paired_run(
    ours: &mut Ours,
    mut raw: Option<&mut Raw>,
    arena: &mut Arena,
    size: usize,
    op: Op,
    min_run: Duration,
) -> Result<(f64, Option<f64>)> {
    let count = (arena.buf.len() / arena.slot) as u64;
    let (mut t_ours, mut t_raw) = (Duration::ZERO, Duration::ZERO);
    let (mut p_ours, mut p_raw) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    while t_ours < min_run || (raw.is_some() && t_raw < min_run) {
        for turn in 0..2 {
            if (turn == 0) == i.is_multiple_of(2) {
                let t = pass(ours, arena, size, op)?;
                t_ours += t;
                p_ours.push(t);
            } else if let Some(r) = raw.as_deref_mut() {
                let t = pass(r, arena, size, op)?;
                t_raw += t;
                p_raw.push(t);
            }
        }
        i += 1;
    }
    Ok((
        median_pass_ns(p_ours, count),
        raw.map(|_| median_pass_ns(p_raw, count)),
    ))
}

fn record_key(aead: Option<Aead>, key: &[u8], iv: &[u8]) -> Result<RecordKey> {
    Ok(match aead {
        None => RecordKey::null_baseline(),
        Some(a) => RecordKey::new(a, &key[..a.key_len()], &iv[..a.fixed_iv_len()])?,
    })
}

fn measure(config: &Config, cipher: Cipher, size: usize, op: Op) -> Result<Row> {
    let aead = cipher.aead();
    let key = [0x42u8; 32];
    let iv = [0x24u8; 12];
    let mut ours = Ours {
        sealer: Sealer::new(1, record_key(aead, &key, &iv)?, 0)?,
        opener: Opener::new(1, record_key(aead, &key, &iv)?, ReplayWindow::new(64)),
    };
    let record_len = ours.sealer.record_len(size);
    let offset = ours.sealer.plaintext_offset();
    let mut arena = Arena::new(config.batch, record_len);
    let mut raw = match aead {
        None => None,
        Some(a) => {
            let alg = match a {
                Aead::Aes128Gcm => &aead::AES_128_GCM,
                Aead::Aes256Gcm => &aead::AES_256_GCM,
                Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
            };
            let unbound = UnboundKey::new(alg, &key[..a.key_len()])
                .map_err(|_| anyhow::anyhow!("raw key rejected"))?;
            Some(Raw {
                key: LessSafeKey::new(unbound),
                offset,
                nonce: [7; 12],
                aad: [9; 13],
            })
        }
    };
    let (mut ours_runs, mut raw_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // Run 0 is the warm-up.
    for run in 0..=config.runs {
        let (o, r) = paired_run(
            &mut ours,
            raw.as_mut(),
            &mut arena,
            size,
            op,
            config.min_run,
        )?;
        if run > 0 {
            ours_runs.push(o);
            if let Some(r) = r {
                raw_runs.push(r);
                ratios.push(r / o);
            }
        }
    }
    Ok(Row {
        cipher,
        size,
        op,
        ours: Stat::from_runs(ours_runs),
        raw: raw.map(|_| Stat::from_runs(raw_runs)),
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
            assert_eq!(r.raw.is_some(), r.cipher != Cipher::None);
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
}
