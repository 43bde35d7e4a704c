//! The record splitter and header parser on arbitrary datagrams: no panic; every record
//! found lies inside the datagram, ranges are contiguous from 0; whatever parses
//! round-trips through emit; consumed + dropped bytes = datagram length.
#![no_main]

use dataplane::record::{HEADER_LEN, RecordHeader, RecordRepr, Records, RecordsMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut it = Records::new(data);
    let mut next = 0;
    for r in it.by_ref() {
        assert_eq!(r.range.start, next);
        assert!(r.range.end <= data.len());
        assert_eq!(r.header.total_len(), r.range.len());
        next = r.range.end;
        if let Ok(repr) = RecordRepr::parse(&r.header) {
            let mut out = [0u8; HEADER_LEN];
            repr.emit_into(&mut out).expect("13-byte buffer");
            assert_eq!(&out[..], &data[r.range.start..r.range.start + HEADER_LEN]);
        }
    }
    assert_eq!(it.consumed_bytes(), next);
    assert_eq!(it.consumed_bytes() + it.dropped_bytes(), data.len());

    let mut copy = data.to_vec();
    let mut m = RecordsMut::new(&mut copy);
    let total: usize = m.by_ref().map(|h| h.total_len()).sum();
    assert_eq!(total, next);
    assert_eq!(m.dropped_bytes(), it.dropped_bytes());

    let h = RecordHeader::new_unchecked(data);
    let _ = (h.content_type(), h.version(), h.epoch(), h.sequence(), h.payload());
});
