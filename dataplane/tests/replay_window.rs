//! RFC 6347 §4.1.2.6 anti-replay window: a vector with gaps, large jumps, duplicates and
//! too-old numbers, at the smallest and a large window size.

use dataplane::record::{MAX_SEQUENCE, ReplayWindow, Replayed};

use Replayed::{Duplicate, TooOld};

/// Feeds `(seq, expected)` to a fresh window; accepted numbers are then marked received.
fn run_vector(size: usize, vector: &[(u64, Result<(), Replayed>)]) {
    let mut w = ReplayWindow::try_new(size).expect("valid size");
    for (step, &(seq, want)) in vector.iter().enumerate() {
        assert_eq!(w.check(seq), want, "size {size}, step {step}, seq {seq}");
        if want.is_ok() {
            w.update(seq);
            assert_eq!(w.check(seq), Err(Duplicate), "size {size}: {seq} now seen");
        }
    }
}

#[test]
fn vector_window_64() {
    let w = 64u64;
    run_vector(
        64,
        &[
            (0, Ok(())),
            (1, Ok(())),
            (2, Ok(())),
            (2, Err(Duplicate)),
            (5, Ok(())), // gap 3, 4
            (4, Ok(())), // fills the gap
            (3, Ok(())),
            (5, Err(Duplicate)),
            (70, Ok(())), // jump: window now 7..=70
            (6, Err(TooOld)),
            (7, Ok(())),
            (7, Err(Duplicate)),
            (69, Ok(())),
            (1_000_000, Ok(())), // large jump clears everything
            (70, Err(TooOld)),
            (1_000_000 - w, Err(TooOld)),
            (1_000_000 - w + 1, Ok(())),
            (1_000_000, Err(Duplicate)),
            (999_999, Ok(())),
            (1_000_064, Ok(())), // jump of exactly one window
            (1_000_001, Ok(())),
            (1_000_000, Err(TooOld)),
            (MAX_SEQUENCE - 63, Ok(())),
            (MAX_SEQUENCE, Ok(())),
            (MAX_SEQUENCE - 63, Err(Duplicate)),
            (MAX_SEQUENCE - 62, Ok(())),
            (MAX_SEQUENCE - 64, Err(TooOld)),
            (MAX_SEQUENCE, Err(Duplicate)),
        ],
    );
}

#[test]
fn vector_window_4096() {
    run_vector(
        4096,
        &[
            (10, Ok(())),
            (0, Ok(())),
            (4000, Ok(())),
            (10, Err(Duplicate)),
            (11, Ok(())),
            (4106, Ok(())), // window 11..=4106
            (10, Err(TooOld)),
            (11, Err(Duplicate)),
            (12, Ok(())),
            (4105, Ok(())),
            (8192 + 4106, Ok(())), // jump of two windows
            (4106, Err(TooOld)),
            (8192 + 11, Ok(())),
            (8192 + 4106 - 4095, Err(Duplicate)),
            (8192 + 4106 - 4096, Err(TooOld)),
            (1 << 40, Ok(())),
            ((1 << 40) - 4095, Ok(())),
            ((1 << 40) - 4096, Err(TooOld)),
        ],
    );
}

#[test]
fn every_slot_of_a_window_is_tracked() {
    for size in [64usize, 128, 256, 4096] {
        let mut w = ReplayWindow::try_new(size).expect("valid size");
        let top = 100_000u64;
        w.update(top);
        for seq in (top - size as u64 + 1..top).step_by(2) {
            assert_eq!(w.check(seq), Ok(()));
            w.update(seq);
        }
        for seq in top - size as u64 + 1..top {
            let want = if (seq - (top - size as u64 + 1)).is_multiple_of(2) {
                Err(Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(w.check(seq), want, "size {size} seq {seq}");
        }
        assert_eq!(w.check(top - size as u64), Err(TooOld));
    }
}

#[test]
fn update_is_bounded_for_huge_jumps() {
    // 200 000 jumps of 2^20 each would take forever if clearing were proportional to
    // the jump; a bounded ring makes this instant.
    let mut w = ReplayWindow::try_new(4096).expect("valid size");
    let mut seq = 0u64;
    for _ in 0..200_000 {
        seq += 1 << 20;
        assert_eq!(w.check(seq), Ok(()));
        w.update(seq);
    }
    assert_eq!(w.highest(), seq);
    assert_eq!(w.check(seq - 1), Ok(()));
    assert_eq!(w.check(seq - (1 << 20)), Err(TooOld));
}
