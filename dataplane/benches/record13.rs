//! DTLS 1.3 record seal and open per size (`seal13_aes128gcm`, `open13_chacha20poly1305`,
//! ...), next to the raw aws-lc-rs work the same record needs: one AEAD call on the same
//! buffer plus one record number mask (RFC 9147 §4.2.3). The difference is what
//! `Sealer13`/`Opener13` add (header, inner type byte, reconstruction, replay window).
//!
//! Run: `cargo bench -p dataplane --bench record13`

use std::hint::black_box;

use aws_lc_rs::aead::quic::{self, HeaderProtectionKey};
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13, TrafficKeys13};
use dataplane::record::{Aead, ReplayWindow};

const SIZES: [usize; 4] = [64, 256, 1200, 1400];
const HEADER: usize = 5;

fn keys(aead: Aead) -> TrafficKeys13 {
    TrafficKeys13::new(
        aead,
        &vec![0x42; aead.key_len()],
        &[0x24; 12],
        &vec![0x17; aead.key_len()],
    )
    .expect("valid keys")
}

fn raw_keys(aead: Aead) -> (LessSafeKey, HeaderProtectionKey) {
    let (alg, hp) = match aead {
        Aead::Aes128Gcm => (&aead::AES_128_GCM, &quic::AES_128),
        Aead::Aes256Gcm => (&aead::AES_256_GCM, &quic::AES_256),
        Aead::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, &quic::CHACHA20),
    };
    (
        LessSafeKey::new(UnboundKey::new(alg, &vec![0x42; aead.key_len()]).expect("valid key")),
        HeaderProtectionKey::new(hp, &vec![0x17; aead.key_len()]).expect("valid key"),
    )
}

/// Raw seal of `buf[HEADER..HEADER + len]` (tag right after) and the mask over it.
fn raw_seal(key: &LessSafeKey, hp: &HeaderProtectionKey, buf: &mut [u8], len: usize) -> u8 {
    let (header, body) = buf.split_at_mut(HEADER);
    let (pt, tag) = body.split_at_mut(len);
    let t = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([7; 12]),
            Aad::from(&*header),
            pt,
        )
        .expect("seal");
    tag[..16].copy_from_slice(t.as_ref());
    let mask = hp.new_mask(&body[..16]).expect("mask");
    header[1] ^= mask[0];
    mask[1]
}

fn bench(c: &mut Criterion) {
    let form = HeaderForm::default();
    for aead in [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
        let name = aead.name();
        let mut g = c.benchmark_group(format!("seal13_{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut sealer = Sealer13::new(3, keys(aead));
            let mut buf = vec![0u8; sealer.record_len(&form, size, 0)];
            g.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
                b.iter(|| {
                    sealer
                        .seal(
                            InnerContentType::ApplicationData,
                            &form,
                            black_box(&mut buf),
                            size,
                            0,
                        )
                        .expect("seal")
                })
            });
            let (key, hp) = raw_keys(aead);
            g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
                b.iter(|| raw_seal(&key, &hp, black_box(&mut buf), size + 1))
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("open13_{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut sealer = Sealer13::new(3, keys(aead));
            let mut opener = Opener13::new(3, keys(aead), ReplayWindow::new(64));
            let len = sealer.record_len(&form, size, 0);
            g.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
                b.iter_batched_ref(
                    || {
                        let mut r = vec![0u8; len];
                        sealer
                            .seal(InnerContentType::ApplicationData, &form, &mut r, size, 0)
                            .expect("seal");
                        r
                    },
                    |r| opener.open(black_box(r), 0).expect("opens").plaintext.len(),
                    BatchSize::SmallInput,
                )
            });
            let (key, hp) = raw_keys(aead);
            g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
                b.iter_batched_ref(
                    || {
                        let mut r = vec![0u8; len];
                        raw_seal(&key, &hp, &mut r, size + 1);
                        r
                    },
                    |r| {
                        let (header, body) = r.split_at_mut(HEADER);
                        let mask = hp.new_mask(&body[..16]).expect("mask");
                        header[1] ^= mask[0];
                        let (ct, tag) = body.split_at_mut(size + 1);
                        key.open_in_place_separate_tag(
                            Nonce::assume_unique_for_key([7; 12]),
                            Aad::from(&*header),
                            tag,
                            black_box(ct),
                        )
                        .expect("opens")
                        .len()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
