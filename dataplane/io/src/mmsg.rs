//! The recvmmsg/sendmmsg backend: `poll` with the caller's timeout, then one `recvmmsg` of up
//! to `batch` messages into fixed slots; sends in `sendmmsg` chunks of up to `batch` messages,
//! GSO runs carrying a UDP_SEGMENT cmsg.
#![allow(unsafe_code)]

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::connected::{ConnectedSend, ConnectedSent, ConnectedSlots};
use crate::counters::{Delta, IoCounters};
use crate::rx::{Arena, RecvBatch, RecvMeta};
use crate::send::{self, OnError, SendDeadline, Unit};
use crate::tx::TxBatch;
use crate::wire::{self, CmsgBuf, RECV_CMSG_LEN, SEND_CMSG_LEN, SockAddrBuf};
use crate::{Error, IoConfig, sys};

/// recvmmsg/sendmmsg backend state; see the module docs.
#[derive(Debug)]
pub struct MmsgIo {
    socket: UdpSocket,
    rx: RecvBatch,
    slot: usize,
    batch: usize,
    /// The last receive filled the batch: the socket may hold more.
    recv_more: bool,
    recv_hdrs: Vec<libc::mmsghdr>,
    recv_iovs: Vec<libc::iovec>,
    recv_names: Vec<SockAddrBuf>,
    recv_ctrl: Vec<CmsgBuf<RECV_CMSG_LEN>>,
    send_hdrs: Vec<libc::mmsghdr>,
    send_iovs: Vec<libc::iovec>,
    send_names: Vec<SockAddrBuf>,
    send_ctrl: Vec<CmsgBuf<SEND_CMSG_LEN>>,
    queue: Vec<Unit>,
    connected: ConnectedSlots,
    gso: bool,
    send_wait: Duration,
    counters: Arc<IoCounters>,
}

impl MmsgIo {
    pub(crate) fn new(
        socket: UdpSocket,
        cfg: &IoConfig,
        counters: Arc<IoCounters>,
    ) -> Result<Self, Error> {
        let batch = cfg.batch;
        let slot = cfg.recv_buffer_size;
        let arena = Arena::new(
            batch.checked_mul(slot).ok_or(Error::Config {
                what: "batch * recv_buffer_size overflows",
            })?,
            64,
        )?;
        let iov0 = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(Self {
            socket,
            rx: RecvBatch::new(arena, batch, batch),
            slot,
            batch,
            recv_more: false,
            recv_hdrs: vec![sys::zeroed_mmsghdr(); batch],
            recv_iovs: vec![iov0; batch],
            recv_names: vec![SockAddrBuf::zeroed(); batch],
            recv_ctrl: vec![CmsgBuf::zeroed(); batch],
            send_hdrs: vec![sys::zeroed_mmsghdr(); batch],
            send_iovs: vec![iov0; batch],
            send_names: vec![SockAddrBuf::zeroed(); batch],
            send_ctrl: vec![CmsgBuf::zeroed(); batch],
            queue: Vec::with_capacity(batch),
            connected: ConnectedSlots::default(),
            gso: cfg.gso,
            send_wait: cfg.send_wait,
            counters,
        })
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    pub(crate) fn gso(&self) -> bool {
        self.gso
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    pub(crate) fn recv_more(&self) -> bool {
        self.recv_more
    }

    pub(crate) fn poll_recv(&mut self, timeout: Duration) -> Result<&mut RecvBatch, Error> {
        self.rx.clear();
        self.recv_more = false;
        let mut d = Delta::default();
        // Without a wait the poll is skipped: `recvmmsg` with MSG_DONTWAIT answers EAGAIN on
        // an empty socket, so a nonblocking receive is one kernel call, not two.
        if !timeout.is_zero() {
            d.recv_calls += 1;
            d.recv_waits += 1;
            if !sys::poll_fd(self.fd(), libc::POLLIN, timeout).map_err(Error::Recv)? {
                self.counters.publish(&d);
                return Ok(&mut self.rx);
            }
        }
        let base = self.rx.arena.base();
        for i in 0..self.batch {
            // Pointers into the arena and the per-slot arrays: all allocated once, live as
            // long as `self`, refreshed here so no stale pointer survives a move.
            self.recv_iovs[i] = libc::iovec {
                iov_base: base.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
            let h = &mut self.recv_hdrs[i].msg_hdr;
            h.msg_name = self.recv_names[i].0.as_mut_ptr().cast();
            h.msg_namelen = wire::SOCKADDR_IN6_LEN as libc::socklen_t;
            h.msg_iov = &raw mut self.recv_iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.recv_ctrl[i].0.as_mut_ptr().cast();
            h.msg_controllen = RECV_CMSG_LEN as _;
            h.msg_flags = 0;
            self.recv_hdrs[i].msg_len = 0;
        }
        d.recv_calls += 1;
        // SAFETY: every header points at its own name/control slot and one iovec covering a
        // distinct `slot`-byte range of the arena, all with the lengths stated; all live in
        // `self`, which is borrowed mutably for the call; no other receive is in progress.
        let n = match unsafe { sys::recvmmsg(self.fd(), &mut self.recv_hdrs, libc::MSG_DONTWAIT) } {
            Ok(n) => n,
            Err(e) if matches!(send::errno(&e), libc::EAGAIN | libc::EINTR) => {
                // Interrupted: the queue was not looked at.
                self.recv_more = send::errno(&e) == libc::EINTR;
                self.counters.publish(&d);
                return Ok(&mut self.rx);
            }
            Err(e) => return Err(Error::Recv(e)),
        };
        // Fewer than a batch: recvmmsg stopped at an empty receive queue.
        self.recv_more = n >= self.batch;
        for i in 0..n.min(self.batch) {
            let h = &self.recv_hdrs[i];
            let len = h.msg_len as usize;
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.slot {
                d.recv_truncated += 1;
                continue;
            }
            let name_len = (h.msg_hdr.msg_namelen as usize).min(wire::SOCKADDR_IN6_LEN);
            let Some(source) = wire::decode_sockaddr(&self.recv_names[i].0[..name_len]) else {
                continue;
            };
            #[allow(
                clippy::unnecessary_cast,
                reason = "msg_controllen is socklen_t on musl"
            )]
            let ctrl_len = (h.msg_hdr.msg_controllen as usize).min(RECV_CMSG_LEN);
            let c = wire::decode_recv_cmsgs(&self.recv_ctrl[i].0[..ctrl_len]);
            let stride = c.gro_segment_size.filter(|s| *s < len).unwrap_or(len);
            account_in(&mut d, len, stride);
            if let Some(k) = c.kernel_drops {
                d.kernel_drops = Some(u64::from(k));
            }
            self.rx.metas.push(RecvMeta {
                source,
                local: c.local,
                offset: i * self.slot,
                len,
                stride,
            });
        }
        self.counters.publish(&d);
        Ok(&mut self.rx)
    }

    pub(crate) fn flush(&mut self, tx: &mut TxBatch) -> Result<(), Error> {
        send::build_queue(tx, self.gso, &mut self.queue);
        let deadline = SendDeadline::after(self.send_wait);
        let mut d = Delta::default();
        let mut at = 0;
        while at < self.queue.len() {
            let chunk = (self.queue.len() - at).min(self.batch);
            for j in 0..chunk {
                let u = self.queue[at + j];
                let bytes = tx.run_bytes_at(u.offset, u.len);
                sys::fill_send_msghdr(
                    &mut self.send_hdrs[j].msg_hdr,
                    &mut self.send_iovs[j],
                    &mut self.send_names[j],
                    &mut self.send_ctrl[j],
                    bytes,
                    &u.dest,
                    u.segment_size,
                );
            }
            // SAFETY: headers 0..chunk point at their own name/cmsg slots and one iovec each
            // over bytes of `tx` (borrowed for the whole call), lengths as stated.
            match unsafe {
                sys::sendmmsg(self.fd(), &mut self.send_hdrs[..chunk], libc::MSG_DONTWAIT)
            } {
                Ok(0) => {
                    // Not expected for a non-empty vector; never loop on it.
                    d.send_errors += self.queue[at].segments as u64;
                    at += 1;
                }
                Ok(sent) => {
                    for u in &self.queue[at..at + sent.min(chunk)] {
                        account_out(&mut d, u);
                    }
                    at += sent.min(chunk);
                }
                Err(e) => {
                    let u = self.queue[at];
                    let action = send::classify(send::errno(&e), &u);
                    match action {
                        OnError::Retry => match deadline.remaining() {
                            Some(left) => {
                                sys::poll_fd(
                                    self.fd(),
                                    libc::POLLOUT,
                                    left.min(Duration::from_millis(10)),
                                )
                                .map_err(Error::Send)?;
                            }
                            None => {
                                d.send_errors += u.segments as u64;
                                at += 1;
                            }
                        },
                        OnError::DisableGso | OnError::SplitRun => {
                            self.gso &= matches!(action, OnError::SplitRun);
                            // Rare path: replace the run by its datagrams, in place.
                            self.queue.splice(at..=at, u.singles());
                        }
                        OnError::Drop => {
                            d.send_errors += u.segments as u64;
                            at += 1;
                        }
                    }
                }
            }
        }
        tx.clear();
        self.counters.publish(&d);
        Ok(())
    }
}

impl MmsgIo {
    /// Sends on connected sockets: one `sendmmsg` per run of consecutive sends on the same
    /// socket, in chunks of at most `batch` (see [`crate::UdpIo::send_connected`]).
    pub(crate) fn send_connected<'a>(
        &mut self,
        sends: &mut impl Iterator<Item = ConnectedSend<'a>>,
    ) -> ConnectedSent {
        let mut out = ConnectedSent::default();
        loop {
            let n = self.connected.fill(sends, self.batch);
            if n == 0 {
                return out;
            }
            let mut at = 0;
            while at < n {
                let fd = self.connected.slots[at].fd;
                let mut end = at + 1;
                while end < n && self.connected.slots[end].fd == fd {
                    end += 1;
                }
                out.syscalls += 1;
                // SAFETY: headers at..end point at their own iovec (over a payload the caller
                // keeps borrowed for this call) and cmsg slot, lengths as stated, no name.
                match unsafe {
                    sys::sendmmsg(fd, &mut self.connected.hdrs[at..end], libc::MSG_DONTWAIT)
                } {
                    Ok(sent) if sent > 0 => {
                        let sent = sent.min(end - at);
                        for i in at..at + sent {
                            self.connected.accepted(i, &mut out);
                        }
                        // A short count: the next one failed; the next call reports why.
                        at += sent;
                    }
                    Ok(_) => {
                        // Not expected for a non-empty vector; never loop on it.
                        self.connected.failed(at, 0, &mut out);
                        at += 1;
                    }
                    Err(e) => {
                        self.connected.failed(at, send::errno(&e), &mut out);
                        at += 1;
                    }
                }
            }
        }
    }
}

pub(crate) fn account_in(d: &mut Delta, len: usize, stride: usize) {
    let segs = if len == 0 || stride == 0 {
        1
    } else {
        len.div_ceil(stride)
    } as u64;
    d.datagrams_in += segs;
    d.bytes_in += len as u64;
    if segs > 1 {
        d.gro_datagrams += 1;
        d.gro_segments += segs;
    }
}

pub(crate) fn account_out(d: &mut Delta, u: &Unit) {
    d.datagrams_out += u.segments as u64;
    d.bytes_out += u.len as u64;
    if u.segment_size.is_some() {
        d.gso_sends += 1;
        d.gso_segments += u.segments as u64;
    }
}
