//! B0 micro-benchmark: record seal and open per size, next to raw aws-lc-rs `LessSafeKey`
//! on the same buffers, grouped by configuration (`seal_aes128gcm`, `open_chacha20poly1305`,
//! ...), plus the null-protection baseline. After criterion's own report it prints the
//! ours/raw ratio of the median estimates, read back from criterion's output directory.
//! `dtls-bench records` measures the same ratios with interleaved runs (steadier on a
//! loaded machine).
//!
//! Run: `cargo bench -p dataplane --bench record`

use std::hint::black_box;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use std::path::PathBuf;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use dataplane::record::{Aead, ContentType, DTLS_1_2, Opener, RecordKey, ReplayWindow, Sealer};

const SIZES: [usize; 4] = [64, 256, 1200, 1400];
const AEADS: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305];

fn record_key(aead: Option<Aead>) -> RecordKey {
    match aead {
        None => RecordKey::null_baseline(),
        Some(a) => RecordKey::new(a, &vec![0x42; a.key_len()], &vec![0x24; a.fixed_iv_len()])
            .expect("valid key"),
    }
}

fn raw_key(aead: Aead) -> LessSafeKey {
    let alg = match aead {
        Aead::Aes128Gcm => &aead::AES_128_GCM,
        Aead::Aes256Gcm => &aead::AES_256_GCM,
        Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    };
    LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; aead.key_len()]).expect("valid key"))
}

/// Raw seal of `buf[off..off+len]`, tag written right after, constant nonce and AAD.
fn raw_seal(key: &LessSafeKey, buf: &mut [u8], off: usize, len: usize) {
    let (pt, tag) = buf[off..].split_at_mut(len);
    let t = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([7; 12]),
            Aad::from([9u8; 13]),
            pt,
        )
        .expect("seal");
    tag[..16].copy_from_slice(t.as_ref());
}

fn bench(c: &mut Criterion) {
    let configs: [Option<Aead>; 4] = [
        Some(Aead::Aes128Gcm),
        Some(Aead::Aes256Gcm),
        Some(Aead::ChaCha20Poly1305),
        None,
    ];
    for aead in configs {
        let name = aead.map_or("null", Aead::name);

        let mut g = c.benchmark_group(format!("seal_{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut sealer = Sealer::new(1, record_key(aead), 0).expect("sealer");
            let mut buf = vec![0u8; sealer.record_len(size)];
            g.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
                b.iter(|| {
                    sealer
                        .seal(
                            ContentType::ApplicationData,
                            DTLS_1_2,
                            black_box(&mut buf),
                            size,
                        )
                        .expect("seal")
                })
            });
            if let Some(a) = aead {
                let key = raw_key(a);
                let off = sealer.plaintext_offset();
                g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
                    b.iter(|| raw_seal(&key, black_box(&mut buf), off, size))
                });
            }
        }
        g.finish();

        let mut g = c.benchmark_group(format!("open_{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut sealer = Sealer::new(1, record_key(aead), 0).expect("sealer");
            let mut opener = Opener::new(1, record_key(aead), ReplayWindow::new(64));
            let len = sealer.record_len(size);
            g.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
                b.iter_batched_ref(
                    || {
                        let mut r = vec![0u8; len];
                        sealer
                            .seal(ContentType::ApplicationData, DTLS_1_2, &mut r, size)
                            .expect("seal");
                        r
                    },
                    |r| opener.open(black_box(r)).map(|o| o.plaintext.len()),
                    BatchSize::SmallInput,
                )
            });
            if let Some(a) = aead {
                let key = raw_key(a);
                let off = sealer.plaintext_offset();
                g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
                    b.iter_batched_ref(
                        || {
                            let mut r = vec![0u8; len];
                            raw_seal(&key, &mut r, off, size);
                            r
                        },
                        |r| {
                            let (ct, tag) = r[off..].split_at_mut(size);
                            key.open_in_place_separate_tag(
                                Nonce::assume_unique_for_key([7; 12]),
                                Aad::from([9u8; 13]),
                                tag,
                                black_box(ct),
                            )
                            .map(|p| p.len())
                        },
                        BatchSize::SmallInput,
                    )
                });
            }
        }
        g.finish();
    }
}

/// Criterion's output directory: `$CRITERION_HOME`, else `<target>/criterion`, where the
/// bench executable lives in `<target>/<profile>/deps/`.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.ancestors().nth(3)?.join("criterion"))
}

/// The median point estimate (ns) criterion saved for `group/function/size`.
fn median_ns(dir: &std::path::Path, group: &str, function: &str, size: usize) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join(size.to_string())
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints ours/raw for every pair criterion measured in this run (filtered runs print less).
fn print_ratios() {
    let Some(dir) = criterion_dir() else { return };
    println!("\nratio ours/raw (throughput; >= 0.95 at 1200 B is the goal)");
    println!(
        "{:<32} {:>10} {:>10} {:>7}",
        "group/size", "ours ns", "raw ns", "ratio"
    );
    for op in ["seal", "open"] {
        for aead in AEADS {
            let group = format!("{op}_{}", aead.name());
            for size in SIZES {
                let (Some(ours), Some(raw)) = (
                    median_ns(&dir, &group, "ours", size),
                    median_ns(&dir, &group, "raw", size),
                ) else {
                    continue;
                };
                println!(
                    "{:<32} {ours:>10.1} {raw:>10.1} {:>7.3}",
                    format!("{group}/{size}"),
                    raw / ours
                );
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    print_ratios();
}
