//! The DTLS 1.3 record layer on arbitrary bytes: the mixed-record walker and
//! `Opener13::open` never panic; a failure never moves the replay window; nothing forged
//! opens. The first byte picks the AEAD and the CID length.
#![no_main]

use dataplane::record::v13::{MixedKind, MixedRecordsMut, Opener13, TrafficKeys13};
use dataplane::record::{Aead, ReplayWindow};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let aead = match pick % 3 {
        0 => Aead::Aes128Gcm,
        1 => Aead::Aes256Gcm,
        _ => Aead::ChaCha20Poly1305,
    };
    let cid_len = usize::from(pick >> 5);
    let keys = TrafficKeys13::new(
        aead,
        &vec![3; aead.key_len()],
        &[4; 12],
        &vec![5; aead.key_len()],
    )
    .expect("valid keys");
    let mut opener = Opener13::new(3, keys, ReplayWindow::new(64));
    let mut buf = datagram.to_vec();
    for record in MixedRecordsMut::new(&mut buf, cid_len) {
        if let MixedKind::Ciphertext(_) = record.kind {
            let before = opener.window().clone();
            let opened = opener.open(record.bytes, cid_len);
            assert!(opened.is_err(), "a forged record opened under {aead:?}");
            assert_eq!(opener.window(), &before, "a failure moved the window");
        }
    }
});
