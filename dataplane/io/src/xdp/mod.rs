//! The AF_XDP backend: UDP datagrams for our address and port go from the NIC queue straight
//! into a UMEM we share with the kernel, skipping the IP/UDP socket layer, and our replies go
//! back out as whole Ethernet frames.
//!
//! Pieces:
//! - [`XdpProgram`] (`prog`): the hand-assembled XDP program that redirects matching UDP to
//!   the queue's AF_XDP socket through an XSKMAP and passes everything else to the kernel,
//!   loaded with `bpf(BPF_PROG_LOAD)` and attached with a bpf_link (detached when the last
//!   [`XdpIo`] using it drops, or when the process exits).
//! - the socket (`umem`): one UMEM of `frames` frames, half for receiving (on the fill ring or
//!   in the caller's batch), half for sending (free, on the TX ring or on the completion
//!   ring); bound with `XDP_USE_NEED_WAKEUP`, zero-copy when the driver supports it, else copy
//!   mode with the refusal kept ([`XdpIo::copy_reason`]; veth has copy mode only).
//! - framing (`frame`): Ethernet/IPv4/IPv6/UDP parsed with lengths and checksums checked
//!   (counted drops), and built with checksums for sends.
//!
//! **Next-hop MAC.** A reply goes to the MAC address the peer's last datagram came from, for
//! the local address it was sent to (a small table keyed by peer IP, learned on receive).
//! That is right when the frame's sender is the next hop back to the peer: the peer itself
//! on the same link, or the one router in front of us. For asymmetric routing, each new
//! peer's next hop is also read from the kernel's tables (`route`: `RTM_GETROUTE` for the
//! peer, `RTM_GETNEIGH` for the gateway's MAC, or the peer's on-link), after the receive batch
//! that brought it, a few peers per call; where it names another MAC than the frames' sender
//! it replaces it (`next_hop_routed`), a route out of another interface sends through the
//! kernel socket, and a gateway the kernel has not resolved yet is sent to through the kernel
//! socket and looked up again later. A peer we hold no frame from (it was
//! heard only through the kernel socket below, or never: a CID session's owner answering a
//! client whose new address reached another node first) is sent to through the listen
//! address's kernel UDP socket instead, so the kernel's route and neighbour tables pick the
//! next hop (`tx_kernel`); without that socket ([`XdpIo::set_kernel_socket`]) such sends are
//! dropped and counted (`tx_no_neighbour`).
//!
//! **What the program passes to the kernel for our port** (IP fragments, which the kernel
//! reassembles, IPv4 options, IPv6 extension headers) arrives on that same kernel socket, and
//! [`XdpIo::recv_kernel`] reads it (`rx_kernel`): a datagram larger than the path MTU is
//! served like any other, not lost in an unread socket.
//!
//! **Checksums on veth.** Frames from a local socket through a veth pair carry a partial UDP
//! checksum (the sender relies on offload), which we count as `rx_bad_checksum`; real NICs
//! and routed traffic carry complete ones. Tests turn transmit checksum offload off on the
//! sending veth.
//!
//! **MTU.** A datagram whose IP packet would exceed the interface MTU is dropped and counted
//! (`tx_too_big` and `send_errors`), as the socket backends count the kernel's EMSGSIZE.

mod frame;
mod netdev;
mod path;
mod prog;
mod route;
mod umem;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use path::{FramePath, NextHop, RxDatagram, RxRefused, TxRefused};
pub use prog::{BpfInsn, XdpFilter, XdpProgram};

use crate::counters::Delta;
use crate::{Datagram, DatagramMut, Error, IoCounters, IoStats, TxBatch};
use umem::Xsk;

/// Why the AF_XDP backend cannot be set up. Each names its reason, for `--io xdp` to report.
#[derive(Debug, thiserror::Error)]
pub enum XdpUnavailable {
    /// No interface of that name in this network namespace.
    #[error("interface {name:?} not found")]
    InterfaceMissing {
        /// The name asked for.
        name: String,
    },
    /// The interface is not Ethernet (AF_XDP framing here is Ethernet only).
    #[error("interface {name:?} is not an Ethernet interface")]
    NotEthernet {
        /// The name asked for.
        name: String,
    },
    /// bpf() or the AF_XDP socket needs CAP_NET_ADMIN and CAP_BPF (or root).
    #[error("{op} denied: needs CAP_NET_ADMIN and CAP_BPF (or root)")]
    PermissionDenied {
        /// The call that was refused.
        op: &'static str,
    },
    /// The kernel has no bpf() syscall (or a seccomp filter answers ENOSYS).
    #[error("bpf() not available (ENOSYS)")]
    NoBpf,
    /// The kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS off).
    #[error("AF_XDP sockets not supported by this kernel (EAFNOSUPPORT)")]
    NoXdpSockets,
    /// A bpf() call failed.
    #[error("{op} failed: {source}")]
    Bpf {
        /// The command.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The verifier rejected the program.
    #[error("the kernel rejected the XDP program ({source}); verifier log: {log}")]
    Rejected {
        /// The load error.
        source: io::Error,
        /// The verifier's log.
        log: String,
    },
    /// Attaching to the interface failed (EBUSY: another XDP program is attached).
    #[error("attaching the XDP program to interface {ifindex} failed: {source}")]
    Attach {
        /// The interface index.
        ifindex: u32,
        /// The OS error.
        source: io::Error,
    },
    /// Binding the socket to the queue failed in copy mode too.
    #[error("binding the AF_XDP socket to interface {ifindex} queue {queue} failed: {source}")]
    Bind {
        /// The interface index.
        ifindex: u32,
        /// The queue.
        queue: u32,
        /// The OS error.
        source: io::Error,
    },
    /// Another setup step failed.
    #[error("AF_XDP setup failed at {op}: {source}")]
    Setup {
        /// The step.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The listen address is not one of the interface's addresses, so the program on that
    /// interface would never see its datagrams.
    #[error("listen address {addr} is not an address of interface {name:?}")]
    NotOnInterface {
        /// The listen address.
        addr: IpAddr,
        /// The interface.
        name: String,
    },
    /// The interface has fewer receive queues than there are shards (one socket per queue).
    #[error(
        "interface {name:?} has {queues} receive queue(s), fewer than the {needed} shards \
         (shard i serves queue i): use --shards {queues} or add queues (ethtool -L)"
    )]
    TooFewQueues {
        /// The interface.
        name: String,
        /// Its receive queues.
        queues: u32,
        /// The shards asking for one each.
        needed: u32,
    },
    /// The configuration cannot work.
    #[error("invalid AF_XDP configuration: {what}")]
    Config {
        /// What is wrong.
        what: &'static str,
    },
}

/// Checks, before anything is attached, that `shards` AF_XDP sockets serving `listen` can
/// work on `interface`: it exists (in this network namespace), `listen` is one of its
/// addresses (or unspecified: any), and it has a receive queue for every shard (when sysfs
/// tells; else binding the socket reports the missing queue). Returns the interface's
/// receive queues when known: with more queues than shards, frames the NIC puts on the
/// others pass to the kernel and are not served (the caller warns).
///
/// # Errors
/// [`XdpUnavailable::InterfaceMissing`], [`XdpUnavailable::NotEthernet`],
/// [`XdpUnavailable::NotOnInterface`] or [`XdpUnavailable::TooFewQueues`].
pub fn check_interface(
    interface: &str,
    listen: IpAddr,
    shards: u32,
) -> Result<Option<u32>, XdpUnavailable> {
    netdev::interface(interface)?;
    if !listen.is_unspecified() && !netdev::addresses(interface)?.contains(&listen) {
        return Err(XdpUnavailable::NotOnInterface {
            addr: listen,
            name: interface.to_owned(),
        });
    }
    let queues = netdev::rx_queues(interface);
    if let Some(queues) = queues
        && queues < shards
    {
        return Err(XdpUnavailable::TooFewQueues {
            name: interface.to_owned(),
            queues,
            needed: shards,
        });
    }
    Ok(queues)
}

/// Tries the whole AF_XDP set-up once on `interface`'s receive queue 0 and undoes it: the
/// XDP program loaded and attached through a bpf_link, an AF_XDP socket with a shard's
/// UMEM (so the locked-memory limit is tried too) bound to the queue. For `--io auto`,
/// which must know before any shard starts whether AF_XDP will work (privileges, kernel
/// support, locked memory, another XDP program already attached, the driver), so that it
/// can fall back to the socket backends with the reason. The probe's program redirects only
/// UDP to 255.255.255.255 port 0, which no peer sends, and is detached when this returns.
///
/// # Errors
/// Whatever [`XdpIo::new`] reports for this interface.
pub fn probe(interface: &str) -> Result<(), Error> {
    let mut cfg = XdpConfig::new(
        interface,
        // A program must redirect something to pass the verifier (with no address family
        // its redirect is unreachable code): UDP to the broadcast address on port 0.
        XdpFilter {
            port: 0,
            v4: Some(std::net::Ipv4Addr::BROADCAST),
            v6: None,
        },
    );
    cfg.queues = 1;
    XdpIo::new(&cfg).map(drop)
}

/// Turns transmit checksum offload off on interface `name`, as `ethtool -K NAME tx off`
/// would: for lab and test setups where local sockets send through a veth pair into an
/// AF_XDP socket (their frames would otherwise carry partial UDP checksums, dropped as
/// `xdp_rx_bad_checksum`). Needs CAP_NET_ADMIN.
///
/// # Errors
/// The ioctl's OS error (e.g. ENODEV, EPERM, EOPNOTSUPP).
pub fn disable_tx_checksum_offload(name: &str) -> io::Result<()> {
    netdev::disable_tx_checksum_offload(name)
}

/// Construction parameters of an [`XdpIo`].
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// The interface (in the caller's network namespace).
    pub interface: String,
    /// The receive queue this socket serves.
    pub queue: u32,
    /// What the program redirects (port and addresses).
    pub filter: XdpFilter,
    /// UMEM frames (a power of two, 64..=65536); half receive, half send. 4096 by default.
    pub frames: u32,
    /// Bytes per frame: 2048 or 4096 (the default); must hold the MTU plus 14 + 256.
    pub frame_size: u32,
    /// Most frames taken off the RX ring per [`XdpIo::poll_recv`] (64 by default).
    pub batch: usize,
    /// Skip the zero-copy attempt (tests, or drivers whose zero-copy misbehaves).
    pub force_copy: bool,
    /// Slots in the program's XSKMAP (the highest queue id plus one that may get a socket).
    pub queues: u32,
}

impl XdpConfig {
    /// Defaults for `interface`, queue 0, redirecting `filter`.
    pub fn new(interface: impl Into<String>, filter: XdpFilter) -> Self {
        Self {
            interface: interface.into(),
            queue: 0,
            filter,
            frames: 4096,
            frame_size: 4096,
            batch: 64,
            force_copy: false,
            queues: 64,
        }
    }
}

/// The AF_XDP view of an [`XdpIo`]'s [`IoCounters`] plus the kernel's socket statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames taken off the RX ring.
    pub rx_frames: u64,
    /// Datagrams delivered to the caller.
    pub datagrams_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// Frames dropped: too short, bad version or lengths.
    pub rx_malformed: u64,
    /// Frames dropped: IPv4 header or UDP checksum wrong (or zero over IPv6).
    pub rx_bad_checksum: u64,
    /// Frames dropped: not unfragmented UDP over IPv4/IPv6.
    pub rx_not_udp: u64,
    /// Frames dropped: UDP to another port than the filter's.
    pub rx_not_ours: u64,
    /// Datagrams put on the TX ring.
    pub datagrams_out: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Datagrams dropped on send, all reasons (the socket backends' `send_errors`).
    pub send_errors: u64,
    /// Of those: larger than the interface MTU (EMSGSIZE on the socket backends).
    pub tx_too_big: u64,
    /// Of those: no MAC known for the destination (we never heard from it).
    pub tx_no_neighbour: u64,
    /// Of those: no free UMEM frame to send from (the kernel has not completed earlier sends).
    pub umem_exhausted: u64,
    /// Datagrams read from the kernel socket (what the program passed for our port, such as
    /// reassembled IP fragments); also in `datagrams_in`.
    pub rx_kernel: u64,
    /// Datagrams sent through the kernel socket (no next hop learned for the peer); also in
    /// `datagrams_out`.
    pub tx_kernel: u64,
    /// Peers whose replies the route table sends elsewhere than to their frames' sender.
    pub next_hop_routed: u64,
    /// Kernel: frames dropped for want of a fill-ring buffer (receive-side UMEM exhaustion).
    pub kernel_fill_ring_empty: u64,
    /// Kernel: frames dropped because the RX ring was full.
    pub kernel_rx_ring_full: u64,
    /// Kernel: frames dropped for other reasons (e.g. too large for a frame).
    pub kernel_rx_dropped: u64,
}

impl XdpStats {
    fn from_io(s: &IoStats) -> Self {
        Self {
            rx_frames: s.xdp_rx_frames,
            datagrams_in: s.datagrams_in,
            bytes_in: s.bytes_in,
            rx_malformed: s.xdp_rx_malformed,
            rx_bad_checksum: s.xdp_rx_bad_checksum,
            rx_not_udp: s.xdp_rx_not_udp,
            rx_not_ours: s.xdp_rx_not_ours,
            datagrams_out: s.datagrams_out,
            bytes_out: s.bytes_out,
            send_errors: s.send_errors,
            tx_too_big: s.xdp_tx_too_big,
            tx_no_neighbour: s.xdp_tx_no_neighbour,
            umem_exhausted: s.xdp_umem_exhausted,
            rx_kernel: s.xdp_rx_kernel,
            tx_kernel: s.xdp_tx_kernel,
            next_hop_routed: s.xdp_next_hop_routed,
            kernel_fill_ring_empty: s.xdp_kernel_fill_ring_empty,
            kernel_rx_ring_full: s.xdp_kernel_rx_ring_full,
            kernel_rx_dropped: s.xdp_kernel_rx_dropped,
        }
    }
}

/// Most peers waiting for their route lookup; more new peers keep their frames' MAC.
const MAX_UNRESOLVED: usize = 1024;
/// Route lookups (each one `RTM_GETROUTE` and one `RTM_GETNEIGH`) per receive call at most.
const ROUTE_LOOKUPS_PER_TURN: usize = 4;
/// A gateway whose MAC the kernel has not resolved yet is looked up again after this (then
/// twice as long each time), up to [`ROUTE_TRIES`] times; meanwhile replies to its peers
/// leave through the kernel socket, whose sends make the kernel resolve it.
const ROUTE_RETRY: Duration = Duration::from_millis(10);
const ROUTE_TRIES: u32 = 8;

/// What one route lookup decided.
enum Resolved {
    /// Done; true when replies now go elsewhere than to the frames' sender.
    Done(bool),
    /// The gateway's MAC is not known yet: look again later.
    Retry,
}

/// The next hop of `peer` from the kernel's tables (see [`XdpIo`]'s module docs): the route's
/// gateway (or the peer, on-link) and its MAC on interface `ifindex`.
fn resolve(
    routes: &mut route::RouteTable,
    path: &mut FramePath,
    ifindex: u32,
    peer: IpAddr,
) -> Resolved {
    let Ok(Some(r)) = routes.route(peer) else {
        // No route (or no answer): the frames' sender stays the next hop.
        return Resolved::Done(false);
    };
    if r.oif != 0 && r.oif != ifindex {
        // The kernel would send it out of another interface: let it.
        path.route_via(peer, None);
        return Resolved::Done(true);
    }
    match routes.neighbour(ifindex, r.gateway.unwrap_or(peer)) {
        Ok(Some(mac)) => Resolved::Done(path.route_via(peer, Some(mac))),
        // On-link, not in the neighbour table: its own frames' MAC is the right one.
        Ok(None) if r.gateway.is_none() => Resolved::Done(false),
        Ok(None) => {
            path.route_via(peer, None);
            Resolved::Retry
        }
        Err(_) => Resolved::Done(false),
    }
}

/// Kernel headroom in front of a received frame in copy mode (`XDP_PACKET_HEADROOM`).
const XDP_HEADROOM: usize = 256;

#[derive(Debug, Clone, Copy)]
struct RxMeta {
    source: SocketAddr,
    local: IpAddr,
    addr: u64,
    len: usize,
}

/// AF_XDP datagram I/O on one interface queue; see the module docs.
#[derive(Debug)]
pub struct XdpIo {
    xsk: Xsk,
    program: Arc<XdpProgram>,
    queue: u32,
    /// Framing and the next hop learned per peer (the per-datagram work off the rings).
    path: FramePath,
    batch: usize,
    /// Send frames not on the TX or completion ring.
    free_tx: Vec<u64>,
    /// Receive frames of the current batch, back to the fill ring on the next receive.
    held: Vec<u64>,
    metas: Vec<RxMeta>,
    counters: Arc<IoCounters>,
    /// The listen address's kernel UDP socket (nonblocking): what the program passes for our
    /// port arrives there, and sends to peers with no learned next hop leave through it.
    kernel: Option<UdpSocket>,
    /// The interface's index (for neighbour lookups).
    ifindex: u32,
    /// The kernel's route and neighbour tables (netlink); `None` when the socket could not
    /// be opened (then the frames' sender is every peer's next hop).
    routes: Option<route::RouteTable>,
    /// New peers waiting for their route lookup.
    unresolved: VecDeque<IpAddr>,
    /// Peers whose gateway's MAC was not known yet: when to look again, and how often tried.
    retries: Vec<(IpAddr, Instant, u32)>,
}

impl XdpIo {
    /// Attaches a program for `cfg.filter` to `cfg.interface` and opens the socket for
    /// `cfg.queue`.
    ///
    /// # Errors
    /// [`Error::Xdp`] with the reason AF_XDP cannot be used; [`Error::Config`] for values out
    /// of range.
    pub fn new(cfg: &XdpConfig) -> Result<Self, Error> {
        let ifc = netdev::interface(&cfg.interface)?;
        let program = Arc::new(XdpProgram::attach(ifc.index, cfg.filter, cfg.queues)?);
        Self::with_program(cfg, program)
    }

    /// Opens the socket for `cfg.queue` under an already attached `program` (one program per
    /// interface, shared by the shards that serve its queues).
    pub fn with_program(cfg: &XdpConfig, program: Arc<XdpProgram>) -> Result<Self, Error> {
        let ifc = netdev::interface(&cfg.interface)?;
        if !cfg.frames.is_power_of_two() || !(64..=65_536).contains(&cfg.frames) {
            return Err(Error::Config {
                what: "AF_XDP frames must be a power of two in 64..=65536",
            });
        }
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(Error::Config {
                what: "AF_XDP frame size must be 2048 or 4096",
            });
        }
        if ifc.mtu + frame::ETH_LEN + XDP_HEADROOM > cfg.frame_size as usize {
            return Err(Error::Config {
                what: "interface MTU too large for the AF_XDP frame size",
            });
        }
        if cfg.batch == 0 || cfg.batch > (cfg.frames / 2) as usize {
            return Err(Error::Config {
                what: "AF_XDP batch must be in 1..=frames/2",
            });
        }
        if ifc.index != program.ifindex() {
            return Err(Error::Config {
                what: "the XDP program is attached to another interface",
            });
        }
        let ring = cfg.frames / 2;
        let mut xsk = Xsk::open(
            ifc.index,
            cfg.queue,
            cfg.frames,
            cfg.frame_size,
            ring,
            cfg.force_copy,
        )?;
        let fs = u64::from(cfg.frame_size);
        // Receive frames [0, ring) all go on the fill ring; the fill ring has `ring` slots.
        let free = xsk.fill.free(ring);
        for i in 0..u64::from(free.min(ring)) {
            xsk.fill.push(i * fs);
        }
        xsk.fill.submit();
        let free_tx = (u64::from(ring)..u64::from(cfg.frames))
            .rev()
            .map(|i| i * fs)
            .collect();
        program.register(cfg.queue, xsk.fd())?;
        Ok(Self {
            xsk,
            program,
            queue: cfg.queue,
            path: FramePath::new(ifc.mac, cfg.filter.port, ifc.mtu),
            batch: cfg.batch,
            free_tx,
            held: Vec::with_capacity(cfg.batch),
            metas: Vec::with_capacity(cfg.batch),
            counters: Arc::new(IoCounters::default()),
            kernel: None,
            ifindex: ifc.index,
            routes: route::RouteTable::open().ok(),
            unresolved: VecDeque::new(),
            retries: Vec::new(),
        })
    }

    /// The program this socket is registered with.
    pub fn program(&self) -> &Arc<XdpProgram> {
        &self.program
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.xsk.zero_copy
    }

    /// Why zero-copy bind failed (copy mode is in use), when it was tried.
    pub fn copy_reason(&self) -> Option<&io::Error> {
        self.xsk.copy_reason.as_ref()
    }

    /// The interface MTU the sends are checked against.
    pub fn mtu(&self) -> usize {
        self.path.mtu()
    }

    /// The socket's file descriptor (for the caller's own poll).
    pub fn fd(&self) -> RawFd {
        self.xsk.fd()
    }

    /// Gives this queue the listen address's kernel UDP socket (bound to the filter's address
    /// and port, nonblocking; a `try_clone` of the caller's is fine): [`XdpIo::recv_kernel`]
    /// reads what the program passed to the kernel for our port, and [`XdpIo::flush`] sends
    /// through it to peers with no learned next hop instead of dropping those sends.
    pub fn set_kernel_socket(&mut self, socket: UdpSocket) {
        self.kernel = Some(socket);
    }

    /// The kernel socket's file descriptor, if one was given (for the caller's poll: readable
    /// when the kernel delivered a datagram for our port).
    pub fn kernel_fd(&self) -> Option<RawFd> {
        self.kernel.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads one datagram the kernel delivered to the listen socket (see the module docs)
    /// into `buf`: its length and source, or `None` when there is none (or no socket was
    /// given). Counted in `datagrams_in` and `xdp_rx_kernel`. `buf` should hold a whole UDP
    /// payload (65 507 bytes): a longer datagram is dropped and counted as `recv_truncated`.
    ///
    /// # Errors
    /// [`Error::Recv`] for an unexpected OS error.
    pub fn recv_kernel(&mut self, buf: &mut [u8]) -> Result<Option<(usize, SocketAddr)>, Error> {
        let Some(socket) = &self.kernel else {
            return Ok(None);
        };
        loop {
            match socket.recv_from(buf) {
                Ok((n, _)) if n >= buf.len() && !buf.is_empty() => {
                    // std's recv_from truncates silently: a full buffer may be a cut datagram.
                    self.counters.publish(&Delta {
                        recv_truncated: 1,
                        ..Delta::default()
                    });
                }
                Ok((n, source)) => {
                    self.counters.publish(&Delta {
                        datagrams_in: 1,
                        bytes_in: n as u64,
                        xdp_rx_kernel: 1,
                        ..Delta::default()
                    });
                    return Ok(Some((n, source)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error queued on the socket (a peer we sent to through it is gone)
                // comes back once on a receive: not a datagram, and not the socket's failure.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
                    ) => {}
                Err(e) => return Err(Error::Recv(e)),
            }
        }
    }

    /// The live counters (shareable with a metrics thread): the socket backends' fields
    /// (datagrams, bytes, batches, `send_errors`) plus the `xdp_*` ones.
    pub fn counters(&self) -> &Arc<IoCounters> {
        &self.counters
    }

    /// Reads the kernel's statistics of the socket (`XDP_STATISTICS`, one getsockopt) into
    /// the counters' `xdp_kernel_*` fields; the shard calls it on its sweep.
    pub fn refresh_kernel_stats(&self) {
        if let Some(k) = self.xsk.kernel_stats() {
            self.counters.store_xdp_kernel(
                k.rx_fill_ring_empty_descs,
                k.rx_ring_full,
                k.rx_dropped,
            );
        }
    }

    /// Counters plus the kernel's statistics for the socket (read now).
    pub fn stats(&self) -> XdpStats {
        self.refresh_kernel_stats();
        XdpStats::from_io(&self.counters.snapshot())
    }

    /// Returns last batch's frames to the kernel, then waits up to `timeout` for datagrams
    /// and takes at most `batch` frames off the RX ring. Returns how many datagrams
    /// [`Self::datagrams`] now yields (0: timeout, or only dropped frames).
    ///
    /// # Errors
    /// [`Error::Recv`] when waiting fails with an unexpected OS error.
    pub fn poll_recv(&mut self, timeout: Duration) -> Result<usize, Error> {
        self.recycle();
        self.reap_completions();
        if !self.xsk.tx.drained() {
            self.xsk.kick_tx().map_err(Error::Send)?;
        }
        // With a zero timeout (a busy shard's turn) the ring is read without a syscall,
        // unless the driver asks to be woken to refill from the fill ring (zero-copy).
        if self.xsk.rx.ready() == 0 && (!timeout.is_zero() || self.xsk.fill.needs_wakeup()) {
            crate::sys::poll_fd(self.xsk.fd(), libc::POLLIN, timeout).map_err(Error::Recv)?;
        }
        let n = self.xsk.rx.ready().min(self.batch as u32);
        let (mut malformed, mut bad_sum, mut not_udp, mut not_ours, mut bytes) = (0, 0, 0, 0, 0);
        for _ in 0..n {
            let d = self.xsk.rx.pop();
            self.held.push(d.addr);
            let Some(bytes_at) = self.xsk.bytes(d.addr, d.len as usize) else {
                malformed += 1;
                continue;
            };
            match self.path.receive(bytes_at) {
                Ok(f) => {
                    if f.new_peer && self.unresolved.len() < MAX_UNRESOLVED {
                        self.unresolved.push_back(f.source.ip());
                    }
                    bytes += f.payload_len as u64;
                    self.metas.push(RxMeta {
                        source: f.source,
                        local: f.local,
                        addr: d.addr + f.payload_offset as u64,
                        len: f.payload_len,
                    });
                }
                Err(RxRefused::NotOurs) => not_ours += 1,
                Err(RxRefused::Malformed) => malformed += 1,
                Err(RxRefused::BadChecksum) => bad_sum += 1,
                Err(RxRefused::NotUdp) => not_udp += 1,
            }
        }
        self.xsk.rx.release();
        self.resolve_next_hops();
        if n > 0 {
            self.counters.publish(&Delta {
                xdp_rx_frames: u64::from(n),
                datagrams_in: self.metas.len() as u64,
                bytes_in: bytes,
                xdp_rx_malformed: malformed,
                xdp_rx_bad_checksum: bad_sum,
                xdp_rx_not_udp: not_udp,
                xdp_rx_not_ours: not_ours,
                ..Delta::default()
            });
        }
        Ok(self.metas.len())
    }

    /// Looks up the next hop of a few new peers (and of peers whose gateway was not resolved
    /// yet, when due) in the kernel's tables: at most [`ROUTE_LOOKUPS_PER_TURN`] per call, so
    /// a flood of new source addresses costs each turn a bounded time; the others keep their
    /// frames' MAC until their turn.
    fn resolve_next_hops(&mut self) {
        let Some(routes) = self.routes.as_mut() else {
            return;
        };
        if self.unresolved.is_empty() && self.retries.is_empty() {
            return;
        }
        let mut budget = ROUTE_LOOKUPS_PER_TURN;
        let mut routed = 0;
        let mut due = Vec::new();
        if !self.retries.is_empty() {
            let now = Instant::now();
            let mut i = 0;
            while i < self.retries.len() && due.len() < budget {
                if self.retries[i].1 <= now {
                    due.push(self.retries.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        budget -= due.len();
        let fresh = (0..budget).map_while(|_| self.unresolved.pop_front().map(|ip| (ip, 0)));
        let work: Vec<(IpAddr, u32)> = due
            .into_iter()
            .map(|(ip, _, t)| (ip, t))
            .chain(fresh)
            .collect();
        for (peer, tries) in work {
            match resolve(routes, &mut self.path, self.ifindex, peer) {
                Resolved::Done(true) => routed += 1,
                Resolved::Done(false) => {}
                Resolved::Retry if tries + 1 < ROUTE_TRIES => {
                    let wait = ROUTE_RETRY * (1 << tries);
                    self.retries.push((peer, Instant::now() + wait, tries + 1));
                }
                // Never resolved: its replies keep leaving through the kernel socket.
                Resolved::Retry => {}
            }
        }
        if routed > 0 {
            self.counters.publish(&Delta {
                xdp_next_hop_routed: routed,
                ..Delta::default()
            });
        }
    }

    /// The datagrams of the last [`Self::poll_recv`], read in place from the UMEM.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.metas.iter().map(|m| Datagram {
            source: m.source,
            local: Some(m.local),
            payload: self.xsk.bytes(m.addr, m.len).unwrap_or(&[]),
        })
    }

    /// How many datagrams the last [`Self::poll_recv`] delivered.
    pub fn received(&self) -> usize {
        self.metas.len()
    }

    /// Datagram `i` of the last [`Self::poll_recv`] with writable bytes (in the UMEM frame
    /// it arrived in), for in-place decryption; `None` past [`Self::received`].
    pub fn datagram_mut(&mut self, i: usize) -> Option<DatagramMut<'_>> {
        let m = *self.metas.get(i)?;
        Some(DatagramMut {
            source: m.source,
            local: Some(m.local),
            payload: self.xsk.bytes_mut(m.addr, m.len)?,
        })
    }

    /// Frames the caller no longer reads go back on the fill ring (it has a slot for every
    /// receive frame, so they always fit).
    fn recycle(&mut self) {
        self.metas.clear();
        if self.held.is_empty() {
            return;
        }
        let mask = !(u64::from(self.xsk.frame_size()) - 1);
        let free = self.xsk.fill.free(self.held.len() as u32) as usize;
        let n = free.min(self.held.len());
        for addr in self.held.drain(..n) {
            self.xsk.fill.push(addr & mask);
        }
        self.xsk.fill.submit();
    }

    fn reap_completions(&mut self) {
        let n = self.xsk.comp.ready();
        if n == 0 {
            return;
        }
        for _ in 0..n {
            let addr = self.xsk.comp.pop();
            self.free_tx.push(addr);
        }
        self.xsk.comp.release();
    }

    /// Frames every datagram in `tx` (GSO runs split into their datagrams), puts them on the
    /// TX ring, wakes the kernel, and empties `tx`. Datagrams that cannot go (too big for the
    /// MTU, no known MAC, no free frame) are dropped and counted.
    ///
    /// # Errors
    /// [`Error::Send`] when the wake-up fails with an unexpected OS error (e.g. ENETDOWN).
    pub fn flush(&mut self, tx: &mut TxBatch) -> Result<(), Error> {
        self.reap_completions();
        let (mut sent, mut bytes, mut too_big, mut no_mac, mut exhausted) = (0u64, 0u64, 0, 0, 0);
        let (mut via_kernel, mut kernel_errors) = (0u64, 0u64);
        for send in tx.sends() {
            let seg = send.segment_size.max(1);
            let chunks: &mut dyn Iterator<Item = &[u8]> = if send.payload.is_empty() {
                &mut std::iter::once(&[][..])
            } else {
                &mut send.payload.chunks(seg)
            };
            for payload in chunks {
                let dest = send.destination;
                let hop = match self.path.next_hop(&dest, payload.len()) {
                    Ok(hop) => hop,
                    Err(TxRefused::TooBig) => {
                        too_big += 1;
                        continue;
                    }
                    Err(TxRefused::NoNextHop) => {
                        // No frame from this peer: the kernel's tables pick the next hop.
                        match self.kernel.as_ref().map(|k| k.send_to(payload, dest)) {
                            Some(Ok(_)) => {
                                via_kernel += 1;
                                bytes += payload.len() as u64;
                            }
                            Some(Err(_)) => kernel_errors += 1,
                            None => no_mac += 1,
                        }
                        continue;
                    }
                };
                let Some(addr) = self.free_tx.pop() else {
                    exhausted += 1;
                    continue;
                };
                let path = &self.path;
                let built = self
                    .xsk
                    .frame_mut(addr)
                    .and_then(|buf| path.build(buf, hop, dest, payload));
                let Some(len) = built else {
                    // Family mismatch between the peer and our learned address: not sendable.
                    self.free_tx.push(addr);
                    no_mac += 1;
                    continue;
                };
                // A free frame is on no ring, and the TX ring has a slot for every send
                // frame, so there is room.
                if self.xsk.tx.free(1) == 0 {
                    self.free_tx.push(addr);
                    exhausted += 1;
                    continue;
                }
                self.xsk.tx.push(libc::xdp_desc {
                    addr,
                    len: len as u32,
                    options: 0,
                });
                sent += 1;
                bytes += payload.len() as u64;
            }
        }
        tx.clear();
        if sent > 0 {
            self.xsk.tx.submit();
            self.kick()?;
        }
        let dropped = too_big + no_mac + exhausted + kernel_errors;
        if sent > 0 || via_kernel > 0 || dropped > 0 {
            self.counters.publish(&Delta {
                datagrams_out: sent + via_kernel,
                bytes_out: bytes,
                send_errors: dropped,
                xdp_tx_kernel: via_kernel,
                xdp_tx_too_big: too_big,
                xdp_tx_no_neighbour: no_mac,
                xdp_umem_exhausted: exhausted,
                ..Delta::default()
            });
        }
        Ok(())
    }

    /// Wakes the kernel for the TX ring. In copy mode each `sendto` moves at most a few dozen
    /// frames, so it repeats while the kernel makes progress; what is left goes on the next
    /// flush or receive.
    fn kick(&mut self) -> Result<(), Error> {
        if self.xsk.zero_copy && !self.xsk.tx.needs_wakeup() {
            return Ok(());
        }
        for _ in 0..64 {
            self.xsk.kick_tx().map_err(Error::Send)?;
            if self.xsk.tx.drained() {
                break;
            }
        }
        self.reap_completions();
        Ok(())
    }
}

impl Drop for XdpIo {
    fn drop(&mut self) {
        // Frames for this queue pass to the kernel again while other sockets keep the
        // program; the last `Arc` detaches it.
        self.program.unregister(self.queue);
    }
}
