//! Building one datagram of DTLS 1.3 records: [`DatagramWriter13`] seals records one after
//! another into a caller's buffer and keeps the one rule the header form alone cannot:
//! RFC 9147 §4: "Omitting the length field MUST only be used for the last record in a
//! datagram." After a record without length field the writer takes no more records.

use core::ops::Range;

use super::{HeaderForm, InnerContentType, Seal13Error, Sealer13};

/// Seals records back to back into one datagram buffer.
#[derive(Debug)]
pub struct DatagramWriter13<'b> {
    buf: &'b mut [u8],
    len: usize,
    closed: bool,
}

impl<'b> DatagramWriter13<'b> {
    /// An empty datagram over `buf` (its capacity is `buf.len()`).
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            closed: false,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still free in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Whether a record without length field ended the datagram.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Where the next record's content goes for `form`: write it there, then call
    /// [`Self::seal_written`]. Empty when the header alone does not fit.
    pub fn content_buf(&mut self, form: &HeaderForm<'_>) -> &mut [u8] {
        let at = self.len + form.header_len();
        self.buf.get_mut(at..).unwrap_or(&mut [])
    }

    /// Seals the next record, whose `content_len` bytes of content are already at the start
    /// of [`Self::content_buf`]. Returns the record's range in the datagram.
    pub fn seal_written(
        &mut self,
        sealer: &mut Sealer13,
        content_type: InnerContentType,
        form: &HeaderForm<'_>,
        content_len: usize,
        padding: usize,
    ) -> Result<Range<usize>, Seal13Error> {
        if self.closed {
            return Err(Seal13Error::DatagramClosed);
        }
        let start = self.len;
        let rest = self.buf.get_mut(start..).unwrap_or(&mut []);
        let len = sealer.seal(content_type, form, rest, content_len, padding)?;
        self.len = start + len;
        self.closed = !form.length;
        Ok(start..self.len)
    }

    /// Copies `content` into place and seals it as the next record. Returns the record's
    /// range in the datagram.
    pub fn seal(
        &mut self,
        sealer: &mut Sealer13,
        content_type: InnerContentType,
        form: &HeaderForm<'_>,
        content: &[u8],
        padding: usize,
    ) -> Result<Range<usize>, Seal13Error> {
        if self.closed {
            return Err(Seal13Error::DatagramClosed);
        }
        let need = sealer.record_len(form, content.len(), padding);
        let len = self.remaining();
        let slot = self
            .content_buf(form)
            .get_mut(..content.len())
            .ok_or(Seal13Error::BufferTooSmall { len, need })?;
        slot.copy_from_slice(content);
        self.seal_written(sealer, content_type, form, content.len(), padding)
    }

    /// The datagram written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The datagram's length, ending the writer.
    pub fn finish(self) -> usize {
        self.len
    }
}
