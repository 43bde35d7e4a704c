//! Per-instance I/O counters: relaxed atomics, updated once per batch (not per datagram), so a
//! metrics thread can read them through the shared [`std::sync::Arc`] while the shard runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one I/O instance. Every field only grows, except `kernel_drops` which mirrors
/// the kernel's own cumulative drop counter for the socket (SO_RXQ_OVFL).
#[derive(Debug, Default)]
pub struct IoCounters {
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
    recv_batches: AtomicU64,
    send_batches: AtomicU64,
    gso_sends: AtomicU64,
    gso_segments: AtomicU64,
    gro_datagrams: AtomicU64,
    gro_segments: AtomicU64,
    send_errors: AtomicU64,
    recv_buffer_exhausted: AtomicU64,
    recv_rearms: AtomicU64,
    recv_truncated: AtomicU64,
    kernel_drops: AtomicU64,
}

/// A plain copy of [`IoCounters`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Datagrams delivered to the caller (GRO segments counted one by one).
    pub datagrams_in: u64,
    /// Payload bytes delivered to the caller.
    pub bytes_in: u64,
    /// Datagrams the kernel accepted for sending (GSO segments counted one by one).
    pub datagrams_out: u64,
    /// Payload bytes the kernel accepted for sending.
    pub bytes_out: u64,
    /// Non-empty receive batches handed to the caller.
    pub recv_batches: u64,
    /// Flushes that sent at least one datagram.
    pub send_batches: u64,
    /// Send calls that carried a UDP_SEGMENT cmsg (a GSO super-datagram).
    pub gso_sends: u64,
    /// Datagrams sent inside GSO super-datagrams.
    pub gso_segments: u64,
    /// GRO super-datagrams received (more than one segment).
    pub gro_datagrams: u64,
    /// Datagrams received inside GRO super-datagrams.
    pub gro_segments: u64,
    /// Datagrams dropped because the kernel refused the send (counted per datagram).
    pub send_errors: u64,
    /// Times the receive path ran out of buffers (io_uring: multishot ended with ENOBUFS).
    pub recv_buffer_exhausted: u64,
    /// Times the multishot receive was armed again after it ended.
    pub recv_rearms: u64,
    /// Received datagrams dropped because they did not fit a receive buffer (MSG_TRUNC).
    pub recv_truncated: u64,
    /// The kernel's cumulative count of datagrams dropped on this socket (receive queue full),
    /// as last reported by SO_RXQ_OVFL.
    pub kernel_drops: u64,
}

/// Per-batch deltas, accumulated in plain integers and published once.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Delta {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub gso_sends: u64,
    pub gso_segments: u64,
    pub gro_datagrams: u64,
    pub gro_segments: u64,
    pub send_errors: u64,
    pub recv_buffer_exhausted: u64,
    pub recv_rearms: u64,
    pub recv_truncated: u64,
    pub kernel_drops: Option<u64>,
}

impl IoCounters {
    /// Reads every counter (each load is relaxed; the snapshot is not atomic as a whole).
    pub fn snapshot(&self) -> IoStats {
        IoStats {
            datagrams_in: self.datagrams_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            recv_batches: self.recv_batches.load(Relaxed),
            send_batches: self.send_batches.load(Relaxed),
            gso_sends: self.gso_sends.load(Relaxed),
            gso_segments: self.gso_segments.load(Relaxed),
            gro_datagrams: self.gro_datagrams.load(Relaxed),
            gro_segments: self.gro_segments.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            recv_buffer_exhausted: self.recv_buffer_exhausted.load(Relaxed),
            recv_rearms: self.recv_rearms.load(Relaxed),
            recv_truncated: self.recv_truncated.load(Relaxed),
            kernel_drops: self.kernel_drops.load(Relaxed),
        }
    }

    pub(crate) fn publish(&self, d: &Delta) {
        fn add(c: &AtomicU64, v: u64) {
            if v != 0 {
                c.fetch_add(v, Relaxed);
            }
        }
        add(&self.datagrams_in, d.datagrams_in);
        add(&self.bytes_in, d.bytes_in);
        add(&self.datagrams_out, d.datagrams_out);
        add(&self.bytes_out, d.bytes_out);
        add(&self.gso_sends, d.gso_sends);
        add(&self.gso_segments, d.gso_segments);
        add(&self.gro_datagrams, d.gro_datagrams);
        add(&self.gro_segments, d.gro_segments);
        add(&self.send_errors, d.send_errors);
        add(&self.recv_buffer_exhausted, d.recv_buffer_exhausted);
        add(&self.recv_rearms, d.recv_rearms);
        add(&self.recv_truncated, d.recv_truncated);
        if d.datagrams_in != 0 {
            self.recv_batches.fetch_add(1, Relaxed);
        }
        if d.datagrams_out != 0 {
            self.send_batches.fetch_add(1, Relaxed);
        }
        if let Some(k) = d.kernel_drops {
            self.kernel_drops.store(k, Relaxed);
        }
    }
}
