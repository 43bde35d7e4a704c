//! DTLSInnerPlaintext, shared by the DTLS 1.3 records (RFC 9147 §4, on RFC 8446 §5.2) and the
//! DTLS 1.2 records with a connection ID (RFC 9146 §4): the content, then the real content
//! type, then zero padding.

/// Writes the type byte and the zero padding after the `content_len` bytes of content
/// already at the start of `inner` (RFC 8446 §5.2: "content ‖ type ‖ zeros").
#[inline]
pub(crate) fn finish(inner: &mut [u8], content_len: usize, content_type: u8) {
    if let Some((ct, zeros)) = inner
        .get_mut(content_len..)
        .and_then(<[u8]>::split_first_mut)
    {
        *ct = content_type;
        zeros.fill(0);
    }
}

/// The content and the raw content type of a decrypted inner plaintext: the type is the
/// last non-zero byte and the zeros after it are padding (RFC 8446 §5.4). `None` when it is
/// all zeros (no content type: the caller's error).
#[inline]
pub(crate) fn split(inner: &mut [u8]) -> Option<(&mut [u8], u8)> {
    let type_at = inner.iter().rposition(|&b| b != 0)?;
    let (content, rest) = inner.split_at_mut(type_at);
    Some((content, rest.first().copied().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_padding_round_trip() {
        let mut inner = [7u8, 8, 9, 0xaa, 0xaa, 0xaa];
        finish(&mut inner, 2, 23);
        assert_eq!(inner, [7, 8, 23, 0, 0, 0]);
        let (content, ct) = split(&mut inner).expect("a type");
        assert_eq!((content.to_vec(), ct), (vec![7, 8], 23));
        assert!(split(&mut [0, 0, 0]).is_none());
        assert!(split(&mut []).is_none());
    }
}
