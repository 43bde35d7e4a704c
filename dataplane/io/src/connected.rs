//! Sends on many connected UDP sockets at once: the upstream flows of a shard (one socket
//! per session, connected to the backend or to the DTLS server), handed to the kernel in as
//! few calls as the backend allows ([`crate::UdpIo::send_connected`]).
//!
//! - io_uring: one `sendmsg` SQE per send, whatever its socket, all submitted in one
//!   `io_uring_enter` (up to [`CONNECTED_PER_ENTER`] per call); with `MSG_DONTWAIT` they
//!   complete inside it.
//! - mmsg: one `sendmmsg` per run of consecutive sends on the same socket (a flow's GSO
//!   runs and single datagrams together); different sockets cannot share a call.
//!
//! A send the socket buffer has no room for (`EAGAIN`) is dropped and counted, as a
//! nonblocking `send` would be: upstream flows are never waited for. A GSO run the kernel
//! refuses (`EIO`: no checksum offload on the route's device, `EINVAL`) is sent again one
//! datagram at a time.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, RawFd};

use crate::send::{self, OnError};
use crate::sys;
use crate::wire::{CmsgBuf, SEND_CMSG_LEN};

/// Most sends one `io_uring_enter` submits (the ring's submission queue has room for them
/// besides the listen socket's batch).
pub const CONNECTED_PER_ENTER: usize = 256;

/// One send on a connected UDP socket: `payload` as one datagram, or with `segment` a UDP
/// GSO run of `segment`-byte datagrams (the last possibly shorter).
#[derive(Debug, Clone, Copy)]
pub struct ConnectedSend<'a> {
    /// The connected socket.
    pub socket: BorrowedFd<'a>,
    /// The datagram, or the run.
    pub payload: &'a [u8],
    /// GSO segment size of a run of two or more datagrams.
    pub segment: Option<u16>,
}

impl ConnectedSend<'_> {
    /// Datagrams in this send.
    pub fn datagrams(&self) -> u64 {
        match self.segment {
            Some(s) if s > 0 && !self.payload.is_empty() => {
                self.payload.len().div_ceil(usize::from(s)) as u64
            }
            _ => 1,
        }
    }
}

/// What one [`crate::UdpIo::send_connected`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectedSent {
    /// Sends the kernel accepted (each one `sendmsg`'s worth: a datagram or a GSO run).
    pub sends: u64,
    /// Datagrams the kernel accepted (GSO segments one by one).
    pub datagrams: u64,
    /// Payload bytes the kernel accepted.
    pub bytes: u64,
    /// Accepted sends that were GSO runs.
    pub gso_sends: u64,
    /// Datagrams dropped (the kernel refused them, or no buffer space).
    pub errors: u64,
    /// Kernel calls made (`io_uring_enter`, `sendmmsg`, `sendmsg`).
    pub syscalls: u64,
}

impl ConnectedSent {
    fn accepted(&mut self, s: &Slot) {
        self.sends += 1;
        self.datagrams += s.datagrams;
        self.bytes += s.len as u64;
        self.gso_sends += u64::from(s.segment.is_some());
    }
}

/// What the kernel needs of one send, kept while it reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub fd: RawFd,
    pub len: usize,
    pub segment: Option<u16>,
    pub datagrams: u64,
}

/// The headers, iovecs and cmsgs of a set of connected sends, allocated once and grown to
/// the largest set seen.
#[derive(Debug, Default)]
pub(crate) struct ConnectedSlots {
    pub hdrs: Vec<libc::mmsghdr>,
    pub iovs: Vec<libc::iovec>,
    pub ctrl: Vec<CmsgBuf<SEND_CMSG_LEN>>,
    pub slots: Vec<Slot>,
}

impl ConnectedSlots {
    /// Takes up to `max` sends from `sends` into slots `0..n` (returns `n`): each header
    /// points at its own iovec (over the send's bytes, which the caller keeps borrowed) and
    /// cmsg. No name: the sockets are connected.
    pub fn fill<'a>(
        &mut self,
        sends: &mut impl Iterator<Item = ConnectedSend<'a>>,
        max: usize,
    ) -> usize {
        use std::os::fd::AsRawFd;
        self.slots.clear();
        for s in sends.take(max) {
            self.slots.push(Slot {
                fd: s.socket.as_raw_fd(),
                len: s.payload.len(),
                segment: s.segment,
                datagrams: s.datagrams(),
            });
            let i = self.slots.len() - 1;
            if self.iovs.len() <= i {
                self.iovs.push(libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                });
                self.ctrl.push(CmsgBuf::zeroed());
                self.hdrs.push(sys::zeroed_mmsghdr());
            }
            self.iovs[i] = libc::iovec {
                iov_base: s.payload.as_ptr().cast_mut().cast(),
                iov_len: s.payload.len(),
            };
        }
        // Pointers last: the vectors no longer grow.
        for i in 0..self.slots.len() {
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            let m = &mut h.msg_hdr;
            m.msg_name = std::ptr::null_mut();
            m.msg_namelen = 0;
            m.msg_iov = &raw mut self.iovs[i];
            m.msg_iovlen = 1;
            m.msg_flags = 0;
            match self.slots[i].segment {
                Some(seg) => {
                    let n = self.ctrl[i].encode_udp_segment(seg);
                    m.msg_control = self.ctrl[i].0.as_mut_ptr().cast();
                    m.msg_controllen = n as _;
                }
                None => {
                    m.msg_control = std::ptr::null_mut();
                    m.msg_controllen = 0;
                }
            }
        }
        self.slots.len()
    }

    /// Slot `i` failed with `errno`: a refused GSO run goes again one datagram at a time
    /// (each one `sendmsg`), anything else is counted as dropped.
    pub fn failed(&self, i: usize, errno: i32, out: &mut ConnectedSent) {
        let s = self.slots[i];
        let unit = send::Unit {
            dest: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            offset: 0,
            len: s.len,
            segments: s.datagrams as usize,
            segment_size: s.segment,
        };
        match send::classify(errno, &unit) {
            OnError::DisableGso | OnError::SplitRun => {
                let iov = self.iovs[i];
                // SAFETY: the iovec was filled from a payload the caller keeps borrowed for
                // the whole `send_connected` call, which is still running.
                let bytes =
                    unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) };
                for single in unit.singles() {
                    let d = bytes
                        .get(single.offset..single.offset + single.len)
                        .unwrap_or(&[]);
                    out.syscalls += 1;
                    match sys::send_connected(s.fd, d, None) {
                        Ok(_) => out.accepted(&Slot {
                            len: d.len(),
                            segment: None,
                            datagrams: 1,
                            ..s
                        }),
                        Err(_) => out.errors += 1,
                    }
                }
            }
            OnError::Retry | OnError::Drop => out.errors += s.datagrams,
        }
    }

    /// Slot `i` was accepted.
    pub fn accepted(&self, i: usize, out: &mut ConnectedSent) {
        out.accepted(&self.slots[i]);
    }
}
