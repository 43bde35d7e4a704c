//! Bounds-checked reading and length-prefixed writing of TLS presentation-language
//! vectors (RFC 5246 §4). Crate-internal: every parser in this crate is built on
//! [`Reader`], which never indexes out of bounds.

use crate::WireError;

/// Largest value a 24-bit length field can hold.
pub const U24_MAX: usize = 0x00ff_ffff;

/// A cursor over an input slice. Each read either succeeds or returns
/// [`WireError::Truncated`] naming `what`; nothing here can panic.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8], what: &'static str) -> Self {
        Reader { rest: input, what }
    }

    fn truncated(&self) -> WireError {
        WireError::Truncated { what: self.what }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(self.truncated());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, WireError> {
        let b = self.array::<3>()?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    /// `opaque x<0..2^8-1>`: a u8 length then that many bytes.
    pub(crate) fn vec8(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    /// `opaque x<0..2^16-1>`: a u16 length then that many bytes.
    pub(crate) fn vec16(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// `opaque x<0..2^24-1>`: a u24 length then that many bytes.
    pub(crate) fn vec24(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u24()?;
        // A u24 always fits in usize on the platforms we build for (>= 32 bit).
        let n = usize::try_from(n).map_err(|_| self.truncated())?;
        self.bytes(n)
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails with [`WireError::TrailingBytes`] unless the input is exhausted.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes { what: self.what })
        }
    }
}

/// Parses a vector of big-endian u16 codes (`T list<min..2^16-x>` with 2-byte elements):
/// the byte length must be even and at least `min_bytes`.
pub(crate) fn u16_list(
    data: &[u8],
    min_bytes: usize,
    what: &'static str,
) -> Result<Vec<u16>, WireError> {
    if !data.len().is_multiple_of(2) || data.len() < min_bytes {
        return Err(WireError::BadLength { what });
    }
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes the low 24 bits of `v`; callers check `v <= U24_MAX` first.
pub(crate) fn put_u24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes()[1..]);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes `opaque x<0..2^8-1>`.
pub(crate) fn put_vec8(
    out: &mut Vec<u8>,
    data: &[u8],
    what: &'static str,
) -> Result<(), WireError> {
    let n = u8::try_from(data.len()).map_err(|_| WireError::TooLong { what })?;
    out.push(n);
    out.extend_from_slice(data);
    Ok(())
}

/// Writes `opaque x<0..2^16-1>`.
pub(crate) fn put_vec16(
    out: &mut Vec<u8>,
    data: &[u8],
    what: &'static str,
) -> Result<(), WireError> {
    let n = u16::try_from(data.len()).map_err(|_| WireError::TooLong { what })?;
    put_u16(out, n);
    out.extend_from_slice(data);
    Ok(())
}

/// Writes `opaque x<0..2^24-1>`.
pub(crate) fn put_vec24(
    out: &mut Vec<u8>,
    data: &[u8],
    what: &'static str,
) -> Result<(), WireError> {
    if data.len() > U24_MAX {
        return Err(WireError::TooLong { what });
    }
    let n = u32::try_from(data.len()).map_err(|_| WireError::TooLong { what })?;
    put_u24(out, n);
    out.extend_from_slice(data);
    Ok(())
}

/// Length-prefix width for [`with_len_prefix`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Prefix {
    U8,
    U16,
    U24,
}

/// Writes a placeholder length prefix, lets `body` append the contents, then patches the
/// prefix. Fails with [`WireError::TooLong`] (and truncates `out` back) if the contents do
/// not fit the prefix.
pub(crate) fn with_len_prefix(
    out: &mut Vec<u8>,
    prefix: Prefix,
    what: &'static str,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let start = out.len();
    let (width, max) = match prefix {
        Prefix::U8 => (1, 0xff),
        Prefix::U16 => (2, 0xffff),
        Prefix::U24 => (3, U24_MAX),
    };
    out.extend_from_slice(&[0u8; 3][..width]);
    let result = body(out);
    let len = out.len() - start - width;
    if let Err(e) = result {
        out.truncate(start);
        return Err(e);
    }
    if len > max {
        out.truncate(start);
        return Err(WireError::TooLong { what });
    }
    let bytes = (len as u32).to_be_bytes(); // len <= U24_MAX, fits u32
    out[start..start + width].copy_from_slice(&bytes[4 - width..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_instead_of_panicking() {
        let mut r = Reader::new(&[0x00, 0x05, 1, 2], "t");
        assert_eq!(r.vec16(), Err(WireError::Truncated { what: "t" }));
        let mut r = Reader::new(&[0x00, 0x00, 0x02, 9, 8], "t");
        assert_eq!(r.vec24(), Ok(&[9u8, 8][..]));
        assert!(r.finish().is_ok());
        let r = Reader::new(&[1], "t");
        assert_eq!(r.finish(), Err(WireError::TrailingBytes { what: "t" }));
    }

    #[test]
    fn len_prefix_patches_and_rejects_overflow() {
        let mut out = vec![0xaa];
        with_len_prefix(&mut out, Prefix::U16, "x", |o| {
            o.extend_from_slice(&[1, 2, 3]);
            Ok(())
        })
        .expect("3 bytes fit a u16 prefix");
        assert_eq!(out, [0xaa, 0, 3, 1, 2, 3]);
        let err = with_len_prefix(&mut out, Prefix::U8, "x", |o| {
            o.extend_from_slice(&[0u8; 256]);
            Ok(())
        });
        assert_eq!(err, Err(WireError::TooLong { what: "x" }));
        assert_eq!(out, [0xaa, 0, 3, 1, 2, 3], "failed write is rolled back");
        assert_eq!(
            u16_list(&[0, 1, 0], 2, "l"),
            Err(WireError::BadLength { what: "l" })
        );
    }
}
