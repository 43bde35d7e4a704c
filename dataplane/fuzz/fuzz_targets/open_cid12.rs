//! DTLS 1.2 records with connection ID (RFC 9146) on arbitrary bytes: the mixed-record
//! walker and `CidOpener::open` never panic; a failure never moves the replay window;
//! nothing forged opens. The first byte picks the AEAD and the CID length (1 to 64; the
//! CID is that many zero bytes).
#![no_main]

use dataplane::record::v13::{MixedKind, MixedRecordsMut};
use dataplane::record::{Aead, CidOpener, RecordKey, ReplayWindow};
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
    let cid = vec![0u8; 1 + usize::from(pick >> 2)];
    let key = RecordKey::new(
        aead,
        &vec![3; aead.key_len()],
        &vec![4; aead.fixed_iv_len()],
    )
    .expect("valid key");
    let mut opener = CidOpener::new(3, key, ReplayWindow::new(64), &cid).expect("valid CID");
    let mut buf = datagram.to_vec();
    for record in MixedRecordsMut::new(&mut buf, cid.len()) {
        if record.kind == MixedKind::Dtls12Cid {
            let before = opener.window().clone();
            let opened = opener.open(record.bytes);
            assert!(opened.is_err(), "a forged record opened under {aead:?}");
            assert_eq!(opener.window(), &before, "a failure moved the window");
        }
    }
});
