//! dtls-io: the UDP I/O layer of the DTLS data plane.
//!
//! What it does: moves batches of UDP datagrams between one socket and the caller, as fast as
//! the kernel allows, with two backends chosen at construction and dispatched statically:
//!
//! - **io_uring** ([`IoMode::Uring`]): one ring per instance (SINGLE_ISSUER + DEFER_TASKRUN
//!   when the kernel takes them, no SQPOLL), a multishot `recvmsg` into a provided-buffer ring,
//!   re-armed when the kernel ends it (e.g. ENOBUFS), `sendmsg` SQEs for sends;
//! - **mmsg** ([`IoMode::Mmsg`]): `poll` + `recvmmsg`, `sendmmsg`, batches of `batch` (32 by
//!   default).
//!
//! Both use UDP GRO on receive ([`RecvBatch`] splits a coalesced datagram back into its
//! segments) and UDP GSO on send ([`TxBatch`] groups consecutive equal-size datagrams to one
//! destination into one send; a run never spans two destinations). [`IoMode::Auto`] tries
//! io_uring and falls back to mmsg, keeping the typed reason ([`UringUnavailable`]) for the
//! caller's log. [`bind_udp`] creates shard sockets (SO_REUSEPORT, big buffers, GRO);
//! [`SteeringProgram`] is the classic BPF program that steers CID records to the shard socket
//! their connection ID names (`SO_ATTACH_REUSEPORT_CBPF`).
//!
//! A shard's loop turn is one call, [`UdpIo::flush_and_poll_recv`]: last turn's sends go out
//! and new datagrams come in; with io_uring that is a single `io_uring_enter` (sends carry
//! `MSG_DONTWAIT`, so they complete inside it and the [`TxBatch`] is free again on return).
//! [`UdpIo::flush`] and [`UdpIo::poll_recv`] are the two halves, for callers that need them
//! separately (`flush` is one `io_uring_enter` per `batch` sends and also collects ready
//! receive completions, so a following `poll_recv` often needs no syscall).
//!
//! A third backend, **AF_XDP** ([`XdpIo`], module `xdp`), is a separate type (the shard
//! driver holds either it or a [`UdpIo`]; it shares [`TxBatch`] and [`IoCounters`]): an XDP
//! program redirects UDP for the listen address and port from one NIC queue into a UMEM
//! shared with the kernel, and replies leave as whole Ethernet frames (see the module docs).
//!
//! What it does not do: no DTLS, no sessions, no threads, no clock beyond the caller's
//! timeouts, no logging (counters only: [`IoCounters`]). Buffers are allocated once per
//! instance; the per-packet path allocates nothing. An instance is not `Send`: the io_uring
//! ring is single-issuer, so build it on the shard thread that uses it.
//!
//! `unsafe` is denied crate-wide and allowed only in the modules that talk to the kernel
//! (`sys`, `rx` buffer arena, `mmsg`, `uring`, `steer`'s setsockopt, and in `xdp` the bpf()
//! calls, the UMEM and rings, and the interface ioctls); every block carries a `// SAFETY:` comment.

mod connected;
mod counters;
mod error;
mod mmsg;
mod rx;
mod send;
mod socket;
mod steer;
mod sys;
mod tx;
mod uring;
mod wire;
mod xdp;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

pub use connected::{CONNECTED_PER_ENTER, ConnectedSend, ConnectedSent};
pub use counters::{IoCounters, IoStats};
pub use error::{Error, TxError, UringUnavailable};
pub use rx::{Datagram, DatagramMut, Datagrams, DatagramsMut, RecvBatch, RecvMessage};
pub use socket::{
    BoundSocket, SocketConfig, bind_udp, buffer_sizes, check_transparent, connect_transparent,
    enable_gro, gro_enabled, set_buffer_sizes,
};
pub use steer::{CidSteering, FALLBACK, Insn, SteeringProgram, detach_steering};
pub use tx::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS, TxBatch, TxSend};
pub use xdp::{
    BpfInsn, XdpConfig, XdpFilter, XdpIo, XdpProgram, XdpStats, XdpUnavailable,
    check_interface as check_xdp_interface, disable_tx_checksum_offload, probe as probe_xdp,
};
/// The AF_XDP backend's per-frame work without rings or sockets (frame parsed and next hop
/// learned; next hop looked up and frame built), exactly as [`XdpIo`] runs it per datagram:
/// public for the instruction-count gate (`dtls-icount`), which cannot run AF_XDP under
/// valgrind. Not a stable API.
#[doc(hidden)]
pub use xdp::{FramePath, NextHop, RxDatagram, RxRefused, TxRefused};

/// Sends `payload` on a connected UDP socket without blocking: one datagram, or with
/// `segment_size` a UDP GSO run of `segment_size`-byte datagrams, the last possibly shorter
/// (at most [`MAX_GSO_SEGMENTS`] segments and [`MAX_GSO_BYTES`] in all; only where the
/// kernel accepts GSO, see [`UdpIo::gso`]). Returns the bytes sent.
///
/// # Errors
/// The OS error of `sendmsg` (e.g. `WouldBlock` when the socket buffer is full).
pub fn send_segments(
    socket: &std::net::UdpSocket,
    payload: &[u8],
    segment_size: Option<u16>,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    sys::send_connected(socket.as_raw_fd(), payload, segment_size)
}

/// What [`recv_segments`] received: `len` bytes, one datagram or a UDP GRO batch of
/// `segment`-byte datagrams (the last possibly shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The GRO segment size when the kernel coalesced two or more datagrams (from the
    /// `UDP_GRO` cmsg), `None` for a single datagram.
    pub segment: Option<usize>,
    /// The datagram (or batch) did not fit the buffer and was cut: drop it.
    pub truncated: bool,
}

impl Received {
    /// The datagrams in `buf[..len]`: one, or each GRO segment in order.
    pub fn datagrams(self, buf: &mut [u8]) -> std::slice::ChunksMut<'_, u8> {
        let len = self.len.min(buf.len());
        let bytes = &mut buf[..len];
        // `chunks_mut` panics on 0 and yields nothing for an empty slice; an empty datagram
        // is one datagram too.
        let stride = self.segment.unwrap_or(self.len).max(1);
        bytes.chunks_mut(stride)
    }

    /// Datagrams in this receive (0 for an empty buffer: an empty datagram).
    pub fn count(self) -> usize {
        match self.segment {
            Some(s) if s > 0 => self.len.div_ceil(s),
            _ => 1,
        }
    }
}

/// One nonblocking receive on a connected UDP socket into `buf`; with UDP_GRO on (see
/// [`enable_gro`]) the kernel may hand over several datagrams of one flow at once, cut
/// apart again by [`Received::datagrams`] with the segment size from the `UDP_GRO` cmsg.
/// `buf` should hold 64 KiB, the largest GRO batch.
///
/// # Errors
/// The OS error of `recvmsg` (`WouldBlock` when nothing is queued).
pub fn recv_segments(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    use std::os::fd::AsRawFd;
    let (len, segment, truncated) = sys::recv_connected(socket.as_raw_fd(), buf)?;
    Ok(Received {
        len,
        segment: segment.filter(|s| *s < len),
        truncated,
    })
}
pub use uring::{UringFault, UringFeatures};

/// Raises the calling thread's nice value by `delta`, at most to 19 (`getpriority` and
/// `setpriority` on its thread id; Linux schedules threads by their own nice value), and
/// returns the new value. `dtlsd` raises its handshake workers' by
/// [`HANDSHAKE_WORKER_NICE`] so that shards win a shared core.
///
/// # Errors
/// The kernel refused.
pub fn raise_current_thread_nice(delta: i32) -> std::io::Result<i32> {
    sys::raise_thread_nice(delta)
}

/// Puts the calling thread in the real-time `SCHED_FIFO` class at `priority` (1..=99), so
/// that it runs the moment it is runnable, ahead of every ordinary thread of its CPU.
/// `dtls-bench`'s hiccup probes use it: what still delays them is the host (kernel work
/// that cannot be preempted, a hypervisor that did not run the vCPU), not other threads.
///
/// # Errors
/// The kernel refused (no `CAP_SYS_NICE`, or `priority` out of range).
pub fn set_current_thread_fifo(priority: i32) -> std::io::Result<()> {
    sys::set_thread_fifo(priority)
}

/// How much lower than the shards' `dtlsd` runs its handshake workers (their nice value
/// above the daemon's own). Where a worker shares a core with a shard (more shards than the
/// cores the defaults leave them, or a small host), the kernel's fair scheduler splits the
/// core by weight: 10 nice levels apart the shard gets about 90 % of it while both are
/// busy, so a handshake flood slows new handshakes, not the established sessions' records;
/// an idle shard leaves the worker the whole core.
pub const HANDSHAKE_WORKER_NICE: i32 = 10;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when it can be set up, else mmsg (the reason is kept, see
    /// [`UdpIo::fallback_reason`]).
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

/// The backend an instance ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// AF_XDP ([`XdpIo`]; never a [`UdpIo`]'s, named here for the shard that drives one).
    Xdp,
}

/// Construction parameters of a [`UdpIo`].
#[derive(Debug, Clone, Copy)]
pub struct IoConfig {
    /// Backend selection.
    pub mode: IoMode,
    /// Most messages per receive batch, and send slots per kernel call (32 by default).
    pub batch: usize,
    /// Payload bytes per receive buffer. A GRO super-datagram must fit one buffer or it is
    /// truncated and dropped, so with GRO on use 64 KiB; 2048 is enough without GRO.
    pub recv_buffer_size: usize,
    /// io_uring provided buffers (power of two, at least `batch`). Running out costs only a
    /// re-arm (datagrams wait in the socket buffer), while every buffer in rotation costs
    /// cache: 64 buffers of 64 KiB is the default; fewer is faster on loopback echo.
    pub uring_buffers: u16,
    /// Send GSO runs as one super-datagram (turned off at run time if the kernel refuses).
    pub gso: bool,
    /// How long one flush may wait for socket buffer space before dropping (counted).
    pub send_wait: Duration,
    /// Test hook: make io_uring setup fail this way (see [`UringFault`]).
    pub uring_fault: Option<UringFault>,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            mode: IoMode::Auto,
            batch: 32,
            recv_buffer_size: 65_535,
            uring_buffers: 64,
            gso: true,
            send_wait: Duration::from_millis(50),
            uring_fault: None,
        }
    }
}

/// Most messages per batch we accept in a configuration.
const MAX_BATCH: usize = 4096;

#[derive(Debug)]
enum Backend {
    Uring(Box<uring::UringIo>),
    Mmsg(Box<mmsg::MmsgIo>),
}

/// Batched UDP I/O on one socket; see the crate docs.
#[derive(Debug)]
pub struct UdpIo {
    backend: Backend,
    fallback: Option<UringUnavailable>,
    counters: Arc<IoCounters>,
}

impl UdpIo {
    /// Takes over `socket` (made nonblocking) with the backend `cfg.mode` selects.
    pub fn new(socket: UdpSocket, cfg: &IoConfig) -> Result<Self, Error> {
        if cfg.batch == 0 || cfg.batch > MAX_BATCH {
            return Err(Error::Config {
                what: "batch must be in 1..=4096",
            });
        }
        if cfg.recv_buffer_size == 0 || cfg.recv_buffer_size > 1 << 17 {
            return Err(Error::Config {
                what: "recv_buffer_size must be in 1..=131072",
            });
        }
        socket
            .set_nonblocking(true)
            .map_err(|source| Error::Socket {
                op: "O_NONBLOCK",
                source,
            })?;
        let counters = Arc::new(IoCounters::default());
        let (backend, fallback) = match cfg.mode {
            IoMode::Mmsg => (
                Backend::Mmsg(Box::new(mmsg::MmsgIo::new(socket, cfg, counters.clone())?)),
                None,
            ),
            IoMode::Uring => (
                Backend::Uring(Box::new(uring::UringIo::new(
                    socket,
                    cfg,
                    counters.clone(),
                )?)),
                None,
            ),
            IoMode::Auto => {
                // Keep a handle so the socket survives a failed io_uring attempt.
                let spare = socket
                    .try_clone()
                    .map_err(|source| Error::Socket { op: "dup", source })?;
                match uring::UringIo::new(socket, cfg, counters.clone()) {
                    Ok(u) => (Backend::Uring(Box::new(u)), None),
                    Err(Error::Uring(reason)) => (
                        Backend::Mmsg(Box::new(mmsg::MmsgIo::new(spare, cfg, counters.clone())?)),
                        Some(reason),
                    ),
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Self {
            backend,
            fallback,
            counters,
        })
    }

    /// Binds a new socket with [`bind_udp`] and wraps it.
    pub fn bind(
        addr: SocketAddr,
        socket_cfg: &SocketConfig,
        cfg: &IoConfig,
    ) -> Result<Self, Error> {
        Self::new(bind_udp(addr, socket_cfg)?.socket, cfg)
    }

    /// The backend in use.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Uring(_) => BackendKind::Uring,
            Backend::Mmsg(_) => BackendKind::Mmsg,
        }
    }

    /// Why `IoMode::Auto` did not get io_uring; `None` otherwise.
    pub fn fallback_reason(&self) -> Option<&UringUnavailable> {
        self.fallback.as_ref()
    }

    /// Setup flags and features of the io_uring backend.
    pub fn uring_features(&self) -> Option<&UringFeatures> {
        match &self.backend {
            Backend::Uring(u) => Some(u.features()),
            Backend::Mmsg(_) => None,
        }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        match &self.backend {
            Backend::Uring(u) => u.socket(),
            Backend::Mmsg(m) => m.socket(),
        }
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.socket().local_addr().map_err(|source| Error::Socket {
            op: "getsockname",
            source,
        })
    }

    /// Whether GSO sends are on (false if configured off or the kernel refused them).
    pub fn gso(&self) -> bool {
        match &self.backend {
            Backend::Uring(u) => u.gso(),
            Backend::Mmsg(m) => m.gso(),
        }
    }

    /// Most messages per receive batch and send slots per kernel call ([`IoConfig::batch`]).
    pub fn batch(&self) -> usize {
        match &self.backend {
            Backend::Uring(u) => u.batch(),
            Backend::Mmsg(m) => m.batch(),
        }
    }

    /// The io_uring backend's provided buffers (entries of its buffer ring,
    /// [`IoConfig::uring_buffers`]); `None` with mmsg.
    pub fn provided_buffers(&self) -> Option<u16> {
        match &self.backend {
            Backend::Uring(u) => Some(u.buffers()),
            Backend::Mmsg(_) => None,
        }
    }

    /// Whether datagrams may wait that no readiness edge will announce: the last receive
    /// filled the batch (mmsg); or (io_uring) completions are left over, the multishot
    /// receive ended, the last receive reaped a whole multishot run, or a later call (a
    /// send's `io_uring_enter` also runs the deferred receive work) took receive
    /// completions off the ring. A caller that sleeps on the socket's readiness
    /// (edge-triggered epoll) between receives asks right before sleeping, and receives
    /// again without sleeping while this is true; when it is false the socket was found
    /// empty, so every datagram still to come raises a new edge, and sleeping loses nothing.
    pub fn recv_may_hold_more(&self) -> bool {
        match &self.backend {
            Backend::Uring(u) => u.recv_more(),
            Backend::Mmsg(m) => m.recv_more(),
        }
    }

    /// The live counters (shareable with a metrics thread).
    pub fn counters(&self) -> &Arc<IoCounters> {
        &self.counters
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> IoStats {
        self.counters.snapshot()
    }

    /// Waits up to `timeout` for datagrams and returns the batch received (possibly empty:
    /// timeout, or a wake-up with nothing to deliver; callers loop on their own deadline).
    /// Returns the previous batch's buffers to the kernel first.
    pub fn poll_recv(&mut self, timeout: Duration) -> Result<&mut RecvBatch, Error> {
        match &mut self.backend {
            Backend::Uring(u) => u.poll_recv(timeout),
            Backend::Mmsg(m) => m.poll_recv(timeout),
        }
    }

    /// One loop turn: sends everything in `tx` (emptying it), then waits up to `timeout` for
    /// datagrams, like [`Self::flush`] followed by [`Self::poll_recv`]. With io_uring and a
    /// `tx` of at most `batch` sends this is a single `io_uring_enter` (sends submitted in the
    /// call that waits); mmsg makes the same calls as the two methods.
    pub fn flush_and_poll_recv(
        &mut self,
        tx: &mut TxBatch,
        timeout: Duration,
    ) -> Result<&mut RecvBatch, Error> {
        match &mut self.backend {
            Backend::Uring(u) => u.flush_and_poll_recv(tx, timeout),
            Backend::Mmsg(m) => {
                m.flush(tx)?;
                m.poll_recv(timeout)
            }
        }
    }

    /// Sends `sends` on their own connected sockets (a shard's upstream flows), in as few
    /// kernel calls as the backend allows: with io_uring every send is one SQE and all go in
    /// one `io_uring_enter` (up to [`CONNECTED_PER_ENTER`] per call), with mmsg each run of
    /// consecutive sends on one socket is one `sendmmsg`. Never waits for buffer space: a
    /// send the socket has no room for is dropped and counted in the result. The payloads
    /// are not used after the call returns.
    pub fn send_connected<'a>(
        &mut self,
        sends: impl IntoIterator<Item = ConnectedSend<'a>>,
    ) -> Result<ConnectedSent, Error> {
        let mut sends = sends.into_iter();
        match &mut self.backend {
            Backend::Uring(u) => u.send_connected(&mut sends),
            Backend::Mmsg(m) => Ok(m.send_connected(&mut sends)),
        }
    }

    /// Sends everything in `tx` and empties it. Datagrams the kernel refuses (or that find no
    /// socket buffer space within `send_wait`) are dropped and counted in `send_errors`.
    pub fn flush(&mut self, tx: &mut TxBatch) -> Result<(), Error> {
        match &mut self.backend {
            Backend::Uring(u) => u.flush(tx),
            Backend::Mmsg(m) => m.flush(tx),
        }
    }
}
