//! `Opener::open` on arbitrary bytes for every protection: no panic; a failure never
//! moves the replay window; with a real AEAD nothing forged opens; the null baseline
//! opens exactly well-formed epoch-1 DTLS 1.2 records it has not seen.
#![no_main]

use dataplane::record::{Aead, Opener, RecordKey, ReplayWindow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, record)) = data.split_first() else {
        return;
    };
    let aead = match pick % 4 {
        0 => Some(Aead::Aes128Gcm),
        1 => Some(Aead::Aes256Gcm),
        2 => Some(Aead::ChaCha20Poly1305),
        _ => None,
    };
    let key = match aead {
        Some(a) => RecordKey::new(a, &vec![3; a.key_len()], &vec![4; a.fixed_iv_len()])
            .expect("valid key"),
        None => RecordKey::null_baseline(),
    };
    let mut opener = Opener::new(1, key, ReplayWindow::new(64));
    let mut buf = record.to_vec();
    let before = opener.window().clone();
    match opener.open(&mut buf) {
        Ok(opened) => {
            assert!(aead.is_none(), "forged record opened under {aead:?}");
            let seq = opened.sequence;
            assert!(opener.window().check(seq).is_err(), "window marks {seq}");
            let mut again = record.to_vec();
            assert!(opener.open(&mut again).is_err(), "replay accepted");
        }
        Err(_) => assert_eq!(opener.window(), &before),
    }
});
