//! Send policy shared by both backends: a [`crate::TxBatch`] becomes a queue of [`Unit`]s (one
//! `sendmsg` each), and a failed send is classified into retry, drop, or "GSO unsupported".

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::tx::TxBatch;

/// One `sendmsg`: a single datagram, or a GSO run when `segment_size` is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub dest: SocketAddr,
    pub offset: usize,
    pub len: usize,
    pub segments: usize,
    /// Set for a GSO send of more than one segment (the UDP_SEGMENT cmsg value).
    pub segment_size: Option<u16>,
}

impl Unit {
    /// The datagrams of a GSO unit, one unit each (for when GSO turns out to be unsupported).
    pub fn singles(self) -> impl Iterator<Item = Unit> {
        let seg = self.segment_size.map_or(self.len, usize::from).max(1);
        (0..self.segments).map(move |i| {
            let start = i * seg;
            Unit {
                dest: self.dest,
                offset: self.offset + start,
                len: seg.min(self.len.saturating_sub(start)),
                segments: 1,
                segment_size: None,
            }
        })
    }
}

/// Fills `queue` with the sends of `tx`; GSO runs are kept whole when `gso` is on and the run
/// has more than one segment, otherwise split into single datagrams.
pub(crate) fn build_queue(tx: &TxBatch, gso: bool, queue: &mut Vec<Unit>) {
    queue.clear();
    for r in tx.runs() {
        let unit = Unit {
            dest: r.dest,
            offset: r.offset,
            len: r.len,
            segments: r.segments,
            segment_size: u16::try_from(r.segment_size)
                .ok()
                .filter(|_| r.segments > 1),
        };
        if unit.segments == 1 || (gso && unit.segment_size.is_some()) {
            queue.push(unit);
        } else {
            queue.extend(unit.singles());
        }
    }
}

/// What to do after a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnError {
    /// Socket buffer full or interrupted: wait until writable (bounded) and try again.
    Retry,
    /// The device refuses UDP GSO (EIO: no checksum offload): turn GSO off for this
    /// instance and send the segments one by one.
    DisableGso,
    /// The kernel refused this GSO send (EINVAL: e.g. segment larger than the path's MTU
    /// allows for GSO): send this run's segments one by one, keep GSO on.
    SplitRun,
    /// Count the datagrams as send errors and move on.
    Drop,
}

pub(crate) fn classify(err: i32, unit: &Unit) -> OnError {
    match err {
        libc::EAGAIN | libc::ENOBUFS | libc::EINTR => OnError::Retry,
        libc::EIO if unit.segment_size.is_some() => OnError::DisableGso,
        libc::EINVAL if unit.segment_size.is_some() => OnError::SplitRun,
        _ => OnError::Drop,
    }
}

/// Bound on how long one flush waits for socket buffer space before dropping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendDeadline(Instant);

impl SendDeadline {
    pub fn after(wait: Duration) -> Self {
        Self(Instant::now() + wait)
    }

    /// Time left, or `None` once passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }
}

pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keeps_runs_whole_with_gso_and_splits_without() {
        let a: SocketAddr = "127.0.0.1:5".parse().expect("literal");
        let mut tx = TxBatch::new(8, 100, true);
        for n in [10, 10, 7] {
            tx.push(a, &vec![1; n]).expect("room");
        }
        let mut q = Vec::new();
        build_queue(&tx, true, &mut q);
        assert_eq!(q.len(), 1);
        assert_eq!(
            (q[0].len, q[0].segments, q[0].segment_size),
            (27, 3, Some(10))
        );
        build_queue(&tx, false, &mut q);
        let lens: Vec<_> = q
            .iter()
            .map(|u| (u.offset, u.len, u.segment_size))
            .collect();
        assert_eq!(lens, vec![(0, 10, None), (10, 10, None), (20, 7, None)]);
        assert_eq!(
            classify(
                libc::EIO,
                &Unit {
                    segment_size: Some(10),
                    ..q[0]
                }
            ),
            OnError::DisableGso
        );
        assert_eq!(
            classify(
                libc::EINVAL,
                &Unit {
                    segment_size: Some(10),
                    ..q[0]
                }
            ),
            OnError::SplitRun
        );
        assert_eq!(classify(libc::EIO, &q[0]), OnError::Drop);
        assert_eq!(classify(libc::EAGAIN, &q[0]), OnError::Retry);
    }
}
