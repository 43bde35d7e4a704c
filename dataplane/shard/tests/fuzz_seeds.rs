//! The seed corpus of the shard core's fuzz target (`fuzz/seeds/datagram/`, see
//! `fuzz/harness.rs`) run through the same harness, so every test run checks the seeds,
//! and the crashes kept there as regression inputs, without cargo-fuzz.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_seed_of_the_datagram_fuzz_target_runs_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/datagram");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "seeds in {}", dir.display());
    let (mut opened, mut forwarded, mut bad_tags) = (0, 0, 0);
    for seed in &seeds {
        let data = std::fs::read(seed).expect("read seed");
        let stats = harness::run(&data);
        eprintln!(
            "{}: {} bytes, {} datagrams, {} records opened, {} to control, {} bad tags",
            seed.display(),
            data.len(),
            stats.datagrams_in,
            stats.records_opened,
            stats.handshake_forwarded,
            stats.drop_bad_tag
        );
        opened += stats.records_opened;
        forwarded += stats.handshake_forwarded;
        bad_tags += stats.drop_bad_tag;
    }
    // The seeds reach past the AEAD (both versions' records open), to control and to the
    // tag check: the fuzzer starts from there.
    assert!(
        opened >= 4 && forwarded >= 1 && bad_tags >= 2,
        "{opened} {forwarded} {bad_tags}"
    );
}

#[test]
fn truncated_and_bit_flipped_seeds_run_clean_too() {
    // A cheap stand-in for the fuzzer in every run: each seed cut at every length and
    // with each byte flipped in turn.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/datagram");
    for entry in std::fs::read_dir(&dir).expect("seeds") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read seed");
        for cut in 0..data.len() {
            let _ = harness::run(&data[..cut]);
        }
        for at in 0..data.len() {
            let mut flipped = data.clone();
            flipped[at] ^= 0xff;
            let _ = harness::run(&flipped);
        }
    }
}
