//! The replay window against a reference set under arbitrary check/update sequences,
//! including huge jumps: same answers, no panic.
#![no_main]

use std::collections::BTreeSet;

use dataplane::record::{MAX_SEQUENCE, ReplayWindow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size_byte, ops)) = data.split_first() else {
        return;
    };
    let size = 64 * (1 + usize::from(size_byte % 64));
    let mut w = ReplayWindow::try_new(size).expect("multiple of 64 in range");
    let mut seen = BTreeSet::new();
    let mut top = 0u64;
    for chunk in ops.chunks_exact(9) {
        let op = chunk[0];
        let mut v = [0u8; 8];
        v.copy_from_slice(&chunk[1..]);
        let raw = u64::from_le_bytes(v);
        let seq = match op % 4 {
            0 => top.saturating_add(raw % 4096).min(MAX_SEQUENCE),
            1 => top.saturating_sub(raw % (2 * size as u64)),
            2 => raw & MAX_SEQUENCE,
            _ => top.saturating_add(raw % (1 << 30)).min(MAX_SEQUENCE),
        };
        let model = seq > top || (top - seq < size as u64 && !seen.contains(&seq));
        assert_eq!(w.check(seq).is_ok(), model, "seq {seq} top {top} size {size}");
        if model && op & 0x80 == 0 {
            w.update(seq);
            seen.insert(seq);
            top = top.max(seq);
            if seen.len() > 4 * size {
                // Keep the model small: forget what is left of the window.
                seen = seen.split_off(&top.saturating_sub(size as u64));
            }
        }
    }
});
