//! [`TxBatch`]: datagrams queued for one flush, grouped into GSO runs.
//!
//! A run is a sequence of consecutive datagrams to one destination where every datagram has the
//! run's segment size except possibly the last, which may be shorter and then closes the run.
//! Such a run goes out as one `sendmsg` with a `UDP_SEGMENT` cmsg and the kernel (or NIC)
//! splits it back into the original datagrams. A run never spans two destinations.

use std::net::SocketAddr;

use crate::error::TxError;

/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS` is 64 on older
/// kernels, 128 on newer ones; we stay at the lower bound).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send: an IPv4 datagram's 65535 bytes less 20 B IP and 8 B UDP
/// headers (the IPv6 limit is higher; one limit keeps runs valid on both).
pub const MAX_GSO_BYTES: usize = 65_507;

#[derive(Debug, Clone, Copy)]
pub(crate) struct TxRun {
    pub dest: SocketAddr,
    pub offset: usize,
    pub len: usize,
    pub segment_size: usize,
    pub segments: usize,
    closed: bool,
}

/// Datagrams queued for sending, in preallocated storage; see the module docs for grouping.
#[derive(Debug)]
pub struct TxBatch {
    buf: Vec<u8>,
    used: usize,
    runs: Vec<TxRun>,
    datagrams: usize,
    capacity: usize,
    max_datagram: usize,
    gso: bool,
}

/// A read-only view of one queued send (one run), for inspection and tests.
#[derive(Debug, Clone, Copy)]
pub struct TxSend<'a> {
    /// Where it goes.
    pub destination: SocketAddr,
    /// Size of each segment; the last may be shorter.
    pub segment_size: usize,
    /// Number of datagrams in this send.
    pub segment_count: usize,
    /// All bytes of the send, segments back to back.
    pub payload: &'a [u8],
}

impl TxBatch {
    /// A batch of at most `capacity` datagrams of at most `max_datagram` bytes each, all
    /// storage allocated now. With `gso` false every datagram is its own send.
    pub fn new(capacity: usize, max_datagram: usize, gso: bool) -> Self {
        let capacity = capacity.max(1);
        let max_datagram = max_datagram.clamp(1, MAX_GSO_BYTES);
        Self {
            buf: vec![0; capacity.saturating_mul(max_datagram)],
            used: 0,
            runs: Vec::with_capacity(capacity),
            datagrams: 0,
            capacity,
            max_datagram,
            gso,
        }
    }

    /// Most datagrams the batch holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest datagram accepted.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// True when the next push fails with [`TxError::Full`] regardless of its size.
    pub fn is_full(&self) -> bool {
        self.datagrams >= self.capacity
    }

    /// Whether consecutive equal-size datagrams to one destination are grouped.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Queues a copy of `datagram` for `dest`.
    pub fn push(&mut self, dest: SocketAddr, datagram: &[u8]) -> Result<(), TxError> {
        let len = datagram.len();
        self.push_with(dest, len, |buf| {
            buf[..len].copy_from_slice(datagram);
            len
        })
        .map(drop)
    }

    /// Queues a datagram written in place: `write` gets `max_len` bytes of batch storage and
    /// returns how many it used (clamped to `max_len`). Lets the record layer seal directly
    /// into the batch, without a copy.
    pub fn push_with(
        &mut self,
        dest: SocketAddr,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<usize, TxError> {
        if max_len > self.max_datagram {
            return Err(TxError::TooLarge {
                len: max_len,
                max: self.max_datagram,
            });
        }
        if self.is_full() || self.used + max_len > self.buf.len() {
            return Err(TxError::Full);
        }
        let offset = self.used;
        let len = write(&mut self.buf[offset..offset + max_len]).min(max_len);
        self.used += len;
        self.datagrams += 1;
        self.group(dest, offset, len);
        Ok(len)
    }

    fn group(&mut self, dest: SocketAddr, offset: usize, len: usize) {
        if self.gso
            && len > 0
            && let Some(run) = self.runs.last_mut()
            && !run.closed
            && run.dest == dest
            && len <= run.segment_size
            && run.segments < MAX_GSO_SEGMENTS
            && run.len + len <= MAX_GSO_BYTES
            && run.offset + run.len == offset
        {
            run.len += len;
            run.segments += 1;
            // A shorter datagram can only be the last of a run.
            run.closed = len < run.segment_size;
            return;
        }
        self.runs.push(TxRun {
            dest,
            offset,
            len,
            segment_size: len,
            segments: 1,
            closed: len == 0,
        });
    }

    /// The queued sends, in order.
    pub fn sends(&self) -> impl Iterator<Item = TxSend<'_>> {
        self.runs.iter().map(|r| TxSend {
            destination: r.dest,
            segment_size: r.segment_size,
            segment_count: r.segments,
            payload: self.run_bytes(r),
        })
    }

    /// Sends everything queued through `io` and empties the batch (same as
    /// [`crate::UdpIo::flush`]).
    pub fn flush(&mut self, io: &mut crate::UdpIo) -> Result<(), crate::Error> {
        io.flush(self)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.used = 0;
        self.datagrams = 0;
        self.runs.clear();
    }

    pub(crate) fn runs(&self) -> &[TxRun] {
        &self.runs
    }

    pub(crate) fn run_bytes(&self, r: &TxRun) -> &[u8] {
        self.run_bytes_at(r.offset, r.len)
    }

    pub(crate) fn run_bytes_at(&self, offset: usize, len: usize) -> &[u8] {
        self.buf
            .get(offset..offset.saturating_add(len))
            .unwrap_or(&[])
    }

    /// Hands the storage over (the kernel may still read it) and takes a fresh one; the
    /// batch is left empty. Only used when a send completion never arrived.
    pub(crate) fn orphan_storage(&mut self) -> Vec<u8> {
        let fresh = vec![0; self.buf.len()];
        self.clear();
        std::mem::replace(&mut self.buf, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn shape(b: &TxBatch) -> Vec<(u16, usize, usize, usize)> {
        b.sends()
            .map(|s| {
                (
                    s.destination.port(),
                    s.segment_size,
                    s.segment_count,
                    s.payload.len(),
                )
            })
            .collect()
    }

    #[test]
    fn equal_sizes_to_one_peer_form_one_run_and_short_last_closes_it() {
        let mut b = TxBatch::new(16, 1500, true);
        for _ in 0..3 {
            b.push(addr(1), &[7; 1200]).expect("room");
        }
        b.push(addr(1), &[8; 500]).expect("room");
        b.push(addr(1), &[9; 500]).expect("room");
        assert_eq!(shape(&b), vec![(1, 1200, 4, 4100), (1, 500, 1, 500)]);
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn a_run_never_spans_two_peers() {
        let mut b = TxBatch::new(16, 1500, true);
        for port in [1, 1, 2, 2, 1] {
            b.push(addr(port), &[port as u8; 100]).expect("room");
        }
        assert_eq!(
            shape(&b),
            vec![(1, 100, 2, 200), (2, 100, 2, 200), (1, 100, 1, 100)]
        );
        for s in b.sends() {
            assert!(s.payload.iter().all(|x| *x == s.destination.port() as u8));
        }
    }

    #[test]
    fn larger_datagram_starts_new_run_and_gso_off_never_groups() {
        let mut b = TxBatch::new(16, 1500, true);
        b.push(addr(1), &[1; 100]).expect("room");
        b.push(addr(1), &[1; 200]).expect("room");
        b.push(addr(1), &[]).expect("room");
        b.push(addr(1), &[]).expect("room");
        assert_eq!(
            shape(&b),
            vec![
                (1, 100, 1, 100),
                (1, 200, 1, 200),
                (1, 0, 1, 0),
                (1, 0, 1, 0)
            ]
        );
        let mut off = TxBatch::new(4, 1500, false);
        off.push(addr(1), &[1; 100]).expect("room");
        off.push(addr(1), &[1; 100]).expect("room");
        assert_eq!(shape(&off), vec![(1, 100, 1, 100), (1, 100, 1, 100)]);
    }

    #[test]
    fn limits_are_enforced_without_partial_state() {
        let mut b = TxBatch::new(2, 1000, true);
        assert_eq!(
            b.push(addr(1), &[0; 1001]),
            Err(TxError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
        b.push(addr(1), &[0; 1000]).expect("room");
        b.push(addr(1), &[0; 1000]).expect("room");
        assert_eq!(b.push(addr(1), &[0; 1]), Err(TxError::Full));
        assert_eq!(b.len(), 2);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.sends().count(), 0);
    }

    #[test]
    fn segment_and_byte_caps_split_runs() {
        let mut b = TxBatch::new(200, 1500, true);
        for _ in 0..(MAX_GSO_SEGMENTS + 1) {
            b.push(addr(1), &[0; 10]).expect("room");
        }
        assert_eq!(shape(&b), vec![(1, 10, 64, 640), (1, 10, 1, 10)]);
        let mut big = TxBatch::new(200, 1500, true);
        for _ in 0..50 {
            big.push(addr(1), &[0; 1400]).expect("room");
        }
        let runs = shape(&big);
        assert!(runs.iter().all(|r| r.3 <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|r| r.2).sum::<usize>(), 50);
        assert_eq!(runs[0].2, MAX_GSO_BYTES / 1400);
    }

    #[test]
    fn push_with_writes_in_place() {
        let mut b = TxBatch::new(4, 64, true);
        let n = b
            .push_with(addr(3), 64, |buf| {
                buf[..5].copy_from_slice(b"hello");
                5
            })
            .expect("room");
        assert_eq!(n, 5);
        assert_eq!(b.sends().next().map(|s| s.payload), Some(&b"hello"[..]));
    }
}
