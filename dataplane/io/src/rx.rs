//! [`RecvBatch`]: the datagrams one receive call produced, with their source addresses, split
//! into GRO segments for the caller.
//!
//! The bytes live in an [`Arena`] allocated once per I/O instance. With io_uring the arena is
//! the provided-buffer pool, and the kernel writes into buffers that are *not* in the current
//! batch while the caller reads this one; that is why the batch hands out slices built from a
//! raw pointer per message instead of one `&mut [u8]` over the whole arena.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::net::{IpAddr, SocketAddr};
use std::ptr::NonNull;

use crate::Error;

/// A zeroed heap region with a stable address, shared with the kernel.
#[derive(Debug)]
pub(crate) struct Arena {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Arena {
    pub(crate) fn new(len: usize, align: usize) -> Result<Self, Error> {
        let layout = Layout::from_size_align(len.max(1), align).map_err(|_| Error::Config {
            what: "receive buffer arena size overflows",
        })?;
        // SAFETY: the layout has a non-zero size (len.max(1)).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(Self { ptr, layout })
    }

    /// A one-byte arena, to stand in for one that was leaked.
    pub(crate) fn placeholder() -> Self {
        let layout = Layout::new::<u8>();
        // SAFETY: non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout }
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Base address, for iovecs and buffer-ring entries.
    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Reads `len` bytes at `offset`, or `None` when out of bounds.
    ///
    /// # Safety
    /// The kernel must not be writing to this range while the slice lives (it is not in the
    /// provided-buffer ring and no receive syscall targeting it is in progress).
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: in bounds (checked above) of a live allocation; the caller guarantees no
        // concurrent kernel write; shared borrow of `self` prevents `&mut` access via safe APIs.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) })
    }

    /// Gives the allocation up without freeing it: used when the kernel might still write to
    /// it (a receive we could not confirm cancelled), where freeing would be unsound.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout and freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// One message as the kernel delivered it (a GRO super-datagram counts as one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    pub source: SocketAddr,
    pub local: Option<IpAddr>,
    pub offset: usize,
    pub len: usize,
    /// Segment size from UDP_GRO; equals `len` for a plain datagram.
    pub stride: usize,
}

/// The datagrams of one receive call. Obtained from [`crate::UdpIo::poll_recv`]; valid until
/// the next `poll_recv`, when its buffers go back to the kernel.
#[derive(Debug)]
pub struct RecvBatch {
    pub(crate) arena: Arena,
    pub(crate) metas: Vec<RecvMeta>,
    /// io_uring: buffer ids to return to the provided-buffer ring before the next receive.
    pub(crate) returns: Vec<u16>,
}

/// One received datagram (one GRO segment).
#[derive(Debug)]
pub struct Datagram<'a> {
    /// Where it came from.
    pub source: SocketAddr,
    /// The local address it was sent to (IP_PKTINFO), when known.
    pub local: Option<IpAddr>,
    /// Its bytes.
    pub payload: &'a [u8],
}

/// One received datagram with writable bytes, for in-place decryption.
#[derive(Debug)]
pub struct DatagramMut<'a> {
    /// Where it came from.
    pub source: SocketAddr,
    /// The local address it was sent to (IP_PKTINFO), when known.
    pub local: Option<IpAddr>,
    /// Its bytes.
    pub payload: &'a mut [u8],
}

/// One kernel message: a single datagram, or a GRO super-datagram of `len / stride` segments.
#[derive(Debug)]
pub struct RecvMessage<'a> {
    /// Where it came from (all segments share it).
    pub source: SocketAddr,
    /// The local address it was sent to, when known.
    pub local: Option<IpAddr>,
    /// Segment size; the last segment may be shorter. Equals `payload.len()` without GRO.
    pub stride: usize,
    /// All bytes of the message.
    pub payload: &'a [u8],
}

impl RecvBatch {
    /// `messages`: most messages per batch; `buffers`: most buffers one batch can hold back.
    pub(crate) fn new(arena: Arena, messages: usize, buffers: usize) -> Self {
        Self {
            arena,
            metas: Vec::with_capacity(messages),
            returns: Vec::with_capacity(buffers),
        }
    }

    /// Number of kernel messages in the batch (a GRO super-datagram counts once).
    pub fn message_count(&self) -> usize {
        self.metas.len()
    }

    /// Number of datagrams after splitting GRO super-datagrams.
    pub fn datagram_count(&self) -> usize {
        self.metas
            .iter()
            .map(|m| segment_count(m.len, m.stride))
            .sum()
    }

    /// True when the receive returned nothing (timeout).
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Kernel messages as delivered, GRO super-datagrams unsplit.
    pub fn messages(&self) -> impl Iterator<Item = RecvMessage<'_>> {
        self.metas.iter().map(|m| RecvMessage {
            source: m.source,
            local: m.local,
            stride: m.stride,
            payload: self.message_bytes(m),
        })
    }

    /// Every datagram, GRO super-datagrams split into their segments.
    pub fn iter(&self) -> Datagrams<'_> {
        Datagrams {
            batch: self,
            message: 0,
            pos: 0,
        }
    }

    /// Every datagram with writable bytes, GRO super-datagrams split into their segments.
    pub fn iter_mut(&mut self) -> DatagramsMut<'_> {
        DatagramsMut {
            batch: self,
            message: 0,
            pos: 0,
        }
    }

    fn message_bytes(&self, m: &RecvMeta) -> &[u8] {
        // SAFETY: a meta only exists for a buffer the kernel finished writing and that stays
        // out of the provided-buffer ring (listed in `returns`) until the batch is cleared.
        unsafe { self.arena.bytes(m.offset, m.len) }.unwrap_or(&[])
    }

    pub(crate) fn clear(&mut self) {
        self.metas.clear();
    }
}

fn segment_count(len: usize, stride: usize) -> usize {
    if len == 0 || stride == 0 {
        1
    } else {
        len.div_ceil(stride)
    }
}

/// Where the next segment of message `m` starts at `pos`: its length, or `None` when done.
fn next_segment(m: &RecvMeta, pos: usize) -> Option<usize> {
    if pos == 0 && m.len == 0 {
        return Some(0);
    }
    if pos >= m.len {
        return None;
    }
    let stride = if m.stride == 0 { m.len } else { m.stride };
    Some(stride.min(m.len - pos))
}

/// Iterator over a batch's datagrams; see [`RecvBatch::iter`].
#[derive(Debug)]
pub struct Datagrams<'a> {
    batch: &'a RecvBatch,
    message: usize,
    pos: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = Datagram<'a>;

    fn next(&mut self) -> Option<Datagram<'a>> {
        loop {
            let m = self.batch.metas.get(self.message)?;
            match next_segment(m, self.pos) {
                Some(n) => {
                    let all = self.batch.message_bytes(m);
                    let payload = all.get(self.pos..self.pos + n).unwrap_or(&[]);
                    self.pos += n.max(1);
                    return Some(Datagram {
                        source: m.source,
                        local: m.local,
                        payload,
                    });
                }
                None => {
                    self.message += 1;
                    self.pos = 0;
                }
            }
        }
    }
}

/// Mutable iterator over a batch's datagrams; see [`RecvBatch::iter_mut`].
#[derive(Debug)]
pub struct DatagramsMut<'a> {
    batch: &'a mut RecvBatch,
    message: usize,
    pos: usize,
}

impl<'a> Iterator for DatagramsMut<'a> {
    type Item = DatagramMut<'a>;

    fn next(&mut self) -> Option<DatagramMut<'a>> {
        loop {
            let m = *self.batch.metas.get(self.message)?;
            match next_segment(&m, self.pos) {
                Some(n) => {
                    let start = m.offset + self.pos;
                    self.pos += n.max(1);
                    if start
                        .checked_add(n)
                        .is_none_or(|end| end > self.batch.arena.len())
                    {
                        continue;
                    }
                    // SAFETY: in bounds (checked above). Messages of one batch occupy disjoint
                    // arena ranges (distinct mmsg slots / distinct provided buffers, none back
                    // in the ring while the batch lives), segments of a message are disjoint,
                    // and each is yielded once, so no two yielded slices alias. The iterator
                    // holds `&'a mut RecvBatch`, so no other access exists for `'a`.
                    let payload = unsafe {
                        std::slice::from_raw_parts_mut(self.batch.arena.base().add(start), n)
                    };
                    return Some(DatagramMut {
                        source: m.source,
                        local: m.local,
                        payload,
                    });
                }
                None => {
                    self.message += 1;
                    self.pos = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_with(messages: &[(&[u8], usize)]) -> RecvBatch {
        let arena = Arena::new(4096, 64).expect("small arena");
        let mut b = RecvBatch::new(arena, 8, 8);
        let mut off = 0;
        for (bytes, stride) in messages {
            // SAFETY: test-only write into a fresh arena no kernel knows about.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.arena.base().add(off), bytes.len())
            };
            b.metas.push(RecvMeta {
                source: "127.0.0.1:9".parse().expect("literal"),
                local: None,
                offset: off,
                len: bytes.len(),
                stride: *stride,
            });
            off += 1024;
        }
        b
    }

    #[test]
    fn gro_message_splits_into_segments_last_shorter() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut b = batch_with(&[(&data, 10), (b"xy", 2), (b"", 0)]);
        let got: Vec<Vec<u8>> = b.iter().map(|d| d.payload.to_vec()).collect();
        assert_eq!(
            got,
            vec![
                data[..10].to_vec(),
                data[10..20].to_vec(),
                data[20..].to_vec(),
                b"xy".to_vec(),
                vec![]
            ]
        );
        assert_eq!(b.datagram_count(), 5);
        assert_eq!(b.message_count(), 3);
        for d in b.iter_mut() {
            d.payload.iter_mut().for_each(|x| *x = x.wrapping_add(1));
        }
        let first: Vec<u8> = b.iter().next().expect("one").payload.to_vec();
        assert_eq!(first, (1..11u8).collect::<Vec<_>>());
    }
}
