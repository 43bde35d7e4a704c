//! Per-instance I/O counters: relaxed atomics, updated once per batch (not per datagram), so a
//! metrics thread can read them through the shared [`std::sync::Arc`] while the shard runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one I/O instance. Every field only grows, except `kernel_drops` and the
/// `xdp_kernel_*` ones, which mirror the kernel's own cumulative counters for the socket
/// (SO_RXQ_OVFL, XDP_STATISTICS). The `xdp_*` fields stay zero on the socket backends.
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
    recv_calls: AtomicU64,
    recv_waits: AtomicU64,
    kernel_drops: AtomicU64,
    xdp_rx_frames: AtomicU64,
    xdp_rx_malformed: AtomicU64,
    xdp_rx_bad_checksum: AtomicU64,
    xdp_rx_not_udp: AtomicU64,
    xdp_rx_not_ours: AtomicU64,
    xdp_tx_too_big: AtomicU64,
    xdp_tx_no_neighbour: AtomicU64,
    xdp_umem_exhausted: AtomicU64,
    xdp_rx_kernel: AtomicU64,
    xdp_tx_kernel: AtomicU64,
    xdp_next_hop_routed: AtomicU64,
    xdp_kernel_fill_ring_empty: AtomicU64,
    xdp_kernel_rx_ring_full: AtomicU64,
    xdp_kernel_rx_dropped: AtomicU64,
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
    /// Kernel calls made to receive: with mmsg each `poll` and `recvmmsg`, with io_uring
    /// each `io_uring_enter` of a receive (which may also submit that turn's sends). Its
    /// ratio to `recv_batches` is the receive path's cost in calls.
    pub recv_calls: u64,
    /// Of `recv_calls`, those that asked the kernel to wait (a timeout above zero): with mmsg
    /// the `poll`, with io_uring an `io_uring_enter` waiting for completions. A receive
    /// with a zero timeout never waits, and arms no timer.
    pub recv_waits: u64,
    /// The kernel's cumulative count of datagrams dropped on this socket (receive queue full),
    /// as last reported by SO_RXQ_OVFL.
    pub kernel_drops: u64,
    /// Frames taken off the AF_XDP RX ring (each one delivered or dropped below).
    pub xdp_rx_frames: u64,
    /// AF_XDP frames dropped: too short, bad IP version or lengths.
    pub xdp_rx_malformed: u64,
    /// AF_XDP frames dropped: IPv4 header or UDP checksum wrong (or zero over IPv6).
    pub xdp_rx_bad_checksum: u64,
    /// AF_XDP frames dropped: not unfragmented UDP over IPv4/IPv6.
    pub xdp_rx_not_udp: u64,
    /// AF_XDP frames dropped: UDP to another port than the listen port.
    pub xdp_rx_not_ours: u64,
    /// AF_XDP sends refused: larger than the interface MTU (EMSGSIZE on the socket
    /// backends); also in `send_errors`.
    pub xdp_tx_too_big: u64,
    /// AF_XDP sends dropped: no MAC known for the destination; also in `send_errors`.
    pub xdp_tx_no_neighbour: u64,
    /// AF_XDP sends dropped: no free UMEM frame to send from; also in `send_errors`.
    pub xdp_umem_exhausted: u64,
    /// Datagrams read from the listen address's kernel socket beside an AF_XDP socket: what
    /// the XDP program passed to the kernel for our port (IP fragments the kernel reassembled,
    /// IPv4 options, IPv6 extension headers); also in `datagrams_in`.
    pub xdp_rx_kernel: u64,
    /// Datagrams sent through that kernel socket because no link-layer next hop was learned
    /// for the peer (the kernel's route and neighbour tables pick it); also in
    /// `datagrams_out`.
    pub xdp_tx_kernel: u64,
    /// Peers whose replies the kernel's route table sends elsewhere than to the MAC their
    /// frames came from (another gateway on the link, or another interface through the
    /// kernel socket): asymmetric routing, looked up once per peer.
    pub xdp_next_hop_routed: u64,
    /// The kernel's count of AF_XDP frames dropped for want of a fill-ring buffer
    /// (receive-side UMEM exhaustion), as last read (XDP_STATISTICS).
    pub xdp_kernel_fill_ring_empty: u64,
    /// The kernel's count of AF_XDP frames dropped because the RX ring was full, as last read.
    pub xdp_kernel_rx_ring_full: u64,
    /// The kernel's count of AF_XDP frames dropped for other reasons (e.g. too large for
    /// a frame), as last read.
    pub xdp_kernel_rx_dropped: u64,
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
    pub recv_calls: u64,
    pub recv_waits: u64,
    pub kernel_drops: Option<u64>,
    pub xdp_rx_frames: u64,
    pub xdp_rx_malformed: u64,
    pub xdp_rx_bad_checksum: u64,
    pub xdp_rx_not_udp: u64,
    pub xdp_rx_not_ours: u64,
    pub xdp_tx_too_big: u64,
    pub xdp_tx_no_neighbour: u64,
    pub xdp_umem_exhausted: u64,
    pub xdp_rx_kernel: u64,
    pub xdp_tx_kernel: u64,
    pub xdp_next_hop_routed: u64,
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
            recv_calls: self.recv_calls.load(Relaxed),
            recv_waits: self.recv_waits.load(Relaxed),
            kernel_drops: self.kernel_drops.load(Relaxed),
            xdp_rx_frames: self.xdp_rx_frames.load(Relaxed),
            xdp_rx_malformed: self.xdp_rx_malformed.load(Relaxed),
            xdp_rx_bad_checksum: self.xdp_rx_bad_checksum.load(Relaxed),
            xdp_rx_not_udp: self.xdp_rx_not_udp.load(Relaxed),
            xdp_rx_not_ours: self.xdp_rx_not_ours.load(Relaxed),
            xdp_tx_too_big: self.xdp_tx_too_big.load(Relaxed),
            xdp_tx_no_neighbour: self.xdp_tx_no_neighbour.load(Relaxed),
            xdp_umem_exhausted: self.xdp_umem_exhausted.load(Relaxed),
            xdp_rx_kernel: self.xdp_rx_kernel.load(Relaxed),
            xdp_tx_kernel: self.xdp_tx_kernel.load(Relaxed),
            xdp_next_hop_routed: self.xdp_next_hop_routed.load(Relaxed),
            xdp_kernel_fill_ring_empty: self.xdp_kernel_fill_ring_empty.load(Relaxed),
            xdp_kernel_rx_ring_full: self.xdp_kernel_rx_ring_full.load(Relaxed),
            xdp_kernel_rx_dropped: self.xdp_kernel_rx_dropped.load(Relaxed),
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
        add(&self.recv_calls, d.recv_calls);
        add(&self.recv_waits, d.recv_waits);
        add(&self.xdp_rx_frames, d.xdp_rx_frames);
        add(&self.xdp_rx_malformed, d.xdp_rx_malformed);
        add(&self.xdp_rx_bad_checksum, d.xdp_rx_bad_checksum);
        add(&self.xdp_rx_not_udp, d.xdp_rx_not_udp);
        add(&self.xdp_rx_not_ours, d.xdp_rx_not_ours);
        add(&self.xdp_tx_too_big, d.xdp_tx_too_big);
        add(&self.xdp_tx_no_neighbour, d.xdp_tx_no_neighbour);
        add(&self.xdp_umem_exhausted, d.xdp_umem_exhausted);
        add(&self.xdp_rx_kernel, d.xdp_rx_kernel);
        add(&self.xdp_tx_kernel, d.xdp_tx_kernel);
        add(&self.xdp_next_hop_routed, d.xdp_next_hop_routed);
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

    /// Mirrors the kernel's cumulative AF_XDP socket statistics (`XDP_STATISTICS`).
    pub(crate) fn store_xdp_kernel(&self, fill_ring_empty: u64, rx_ring_full: u64, dropped: u64) {
        self.xdp_kernel_fill_ring_empty
            .store(fill_ring_empty, Relaxed);
        self.xdp_kernel_rx_ring_full.store(rx_ring_full, Relaxed);
        self.xdp_kernel_rx_dropped.store(dropped, Relaxed);
    }
}
