//! The io_uring backend: one ring per instance, a multishot `recvmsg` into a provided-buffer
//! ring, `sendmsg` SQEs (UDP_SEGMENT cmsg for GSO runs) for sends.
//!
//! Lifetimes of memory shared with the kernel:
//! - receive buffers (the [`RecvBatch`] arena) belong to the kernel while they are in the
//!   buffer ring; a completion hands one to us, the batch lists it in `returns`, and the next
//!   `poll_recv` puts it back before anything else;
//! - send data, names and cmsgs are read by the kernel when it issues the SQE. Sends carry
//!   `MSG_DONTWAIT`, so they are issued (and complete, possibly with EAGAIN) inside the
//!   submitting `io_uring_enter`; `flush` still waits for every send completion before it
//!   returns, so `TxBatch` memory is never referenced afterwards. Should a completion not come
//!   within a bound, the memory is kept (orphaned) rather than reused.
//!
//! Syscalls: `flush_and_poll_recv` queues the send SQEs (and a re-arm if needed) and makes one
//! `io_uring_enter` that submits them and waits for `sends + 1` completions with the caller's
//! timeout; the send completions are posted inline, so the wait ends at the first receive.
//! With a zero timeout the enter does not wait at all (min_complete 0): it submits, runs the
//! deferred receive work and returns, and no timer is armed for the expired timeout.
#![allow(unsafe_code)]

mod bufring;
mod setup;

pub use setup::{UringFault, UringFeatures};

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use self::bufring::BufRing;
use crate::connected::{CONNECTED_PER_ENTER, ConnectedSend, ConnectedSent, ConnectedSlots};
use crate::counters::{Delta, IoCounters};
use crate::error::UringUnavailable;
use crate::mmsg::{account_in, account_out};
use crate::rx::{Arena, RecvBatch, RecvMeta};
use crate::send::{self, OnError, SendDeadline, Unit};
use crate::tx::TxBatch;
use crate::wire::{self, CmsgBuf, RECV_CMSG_LEN, SEND_CMSG_LEN, SockAddrBuf};
use crate::{Error, IoConfig, sys};

const RECV_TAG: u64 = u64::MAX - 1;
const CANCEL_TAG: u64 = u64::MAX - 2;
/// User data of connected send `i` ([`UringIo::send_connected`]): `CONNECTED_TAG + i`.
const CONNECTED_TAG: u64 = 1 << 48;
const BGID: u16 = 0;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// `struct io_uring_recvmsg_out { u32 namelen, controllen, payloadlen, flags; }` precedes the
/// name, control and payload in every multishot recvmsg buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// How long `flush` and `Drop` wait for completions the kernel owes us before giving up.
const COMPLETION_BOUND: Duration = Duration::from_secs(2);
/// This many consecutive failed multishot arms (other than ENOBUFS) end `poll_recv` with an error.
const MAX_ARM_FAILURES: u32 = 3;
/// Most completions one run of a multishot receive posts before the kernel requeues the rest
/// as task work (`MULTISHOT_MAX_RETRY` in io_uring/net.c): a receive that reaped this many
/// may have left datagrams that raise no new readiness edge.
const MULTISHOT_RUN: usize = 32;

/// Per-send-slot memory the kernel reads when it issues a `sendmsg` SQE.
#[derive(Debug)]
struct SendSlots {
    hdrs: Vec<libc::msghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddrBuf>,
    ctrl: Vec<CmsgBuf<SEND_CMSG_LEN>>,
}

impl SendSlots {
    fn new(n: usize) -> Self {
        Self {
            hdrs: vec![sys::zeroed_msghdr(); n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            names: vec![SockAddrBuf::zeroed(); n],
            ctrl: vec![CmsgBuf::zeroed(); n],
        }
    }
}

/// io_uring backend state; see the module docs.
pub struct UringIo {
    // Field order matters for drop: `Drop` cancels and unregisters first; then the ring closes
    // before the memory it used is freed.
    ring: IoUring,
    socket: UdpSocket,
    bufring: Option<BufRing>,
    rx: RecvBatch,
    recv_hdr: Box<libc::msghdr>,
    buf_size: usize,
    buffers: u16,
    batch: usize,
    armed: bool,
    ever_armed: bool,
    /// The last receive may have left datagrams behind (see [`crate::UdpIo::recv_may_hold_more`]).
    recv_more: bool,
    arm_failures: u32,
    last_arm_error: i32,
    stash: VecDeque<(i32, u32)>,
    slots: SendSlots,
    results: Vec<Option<i32>>,
    connected: ConnectedSlots,
    connected_results: Vec<Option<i32>>,
    queue: Vec<Unit>,
    retry: Vec<Unit>,
    orphans: Vec<Vec<u8>>,
    orphan_slots: Vec<SendSlots>,
    gso: bool,
    send_wait: Duration,
    features: UringFeatures,
    counters: Arc<IoCounters>,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("socket", &self.socket)
            .field("features", &self.features)
            .field("buffers", &self.buffers)
            .field("buf_size", &self.buf_size)
            .field("armed", &self.armed)
            .field("gso", &self.gso)
            .finish_non_exhaustive()
    }
}

impl UringIo {
    pub(crate) fn new(
        socket: UdpSocket,
        cfg: &IoConfig,
        counters: Arc<IoCounters>,
    ) -> Result<Self, Error> {
        let buffers = cfg.uring_buffers;
        if !buffers.is_power_of_two() || buffers > 32768 || usize::from(buffers) < cfg.batch {
            return Err(Error::Config {
                what: "uring_buffers must be a power of two in batch..=32768",
            });
        }
        let header = RECVMSG_OUT_LEN + wire::SOCKADDR_IN6_LEN + RECV_CMSG_LEN;
        let buf_size = cfg
            .recv_buffer_size
            .checked_add(header)
            .ok_or(Error::Config {
                what: "recv_buffer_size overflows",
            })?;
        let buf_len = u32::try_from(buf_size).map_err(|_| Error::Config {
            what: "recv_buffer_size too large",
        })?;
        // Room for a batch of sends, a re-arm and a set of connected sends.
        let sq = u32::try_from(cfg.batch + 8 + CONNECTED_PER_ENTER)
            .unwrap_or(u32::MAX)
            .next_power_of_two();
        let cq = (u32::from(buffers) * 2).max(sq * 2);
        let (ring, features) = setup::build_ring(sq, cq, cfg.uring_fault)?;
        let mut bufring = BufRing::new(buffers, BGID).map_err(UringUnavailable::BufRing)?;
        bufring
            .register(&ring.submitter())
            .map_err(UringUnavailable::BufRing)?;
        let arena = Arena::new(usize::from(buffers) * buf_size, 64)?;
        for bid in 0..buffers {
            bufring.push(
                bid,
                arena.base().wrapping_add(usize::from(bid) * buf_size),
                buf_len,
            );
        }
        bufring.publish();
        let mut recv_hdr = Box::new(sys::zeroed_msghdr());
        recv_hdr.msg_namelen = wire::SOCKADDR_IN6_LEN as libc::socklen_t;
        recv_hdr.msg_controllen = RECV_CMSG_LEN as _;
        Ok(Self {
            ring,
            socket,
            bufring: Some(bufring),
            rx: RecvBatch::new(arena, cfg.batch, usize::from(buffers)),
            recv_hdr,
            buf_size,
            buffers,
            batch: cfg.batch,
            armed: false,
            ever_armed: false,
            recv_more: false,
            arm_failures: 0,
            last_arm_error: 0,
            stash: VecDeque::with_capacity(cq as usize + usize::from(buffers)),
            slots: SendSlots::new(cfg.batch),
            results: vec![None; cfg.batch],
            connected: ConnectedSlots::default(),
            connected_results: vec![None; CONNECTED_PER_ENTER],
            queue: Vec::with_capacity(cfg.batch),
            retry: Vec::with_capacity(cfg.batch),
            orphans: Vec::new(),
            orphan_slots: Vec::new(),
            gso: cfg.gso,
            send_wait: cfg.send_wait,
            features,
            counters,
        })
    }

    pub(crate) fn features(&self) -> &UringFeatures {
        &self.features
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

    pub(crate) fn buffers(&self) -> u16 {
        self.buffers
    }

    /// Whether receive completions may wait: the last receive's verdict, or completions an
    /// enter made since (a send's, which runs the deferred receive work too) moved into
    /// the stash. The latter consumed their datagrams' readiness edge: nothing else
    /// announces them.
    pub(crate) fn recv_more(&self) -> bool {
        self.recv_more || !self.stash.is_empty()
    }

    /// Moves every completion from the CQ: sends into `results`, receives into `stash`.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            match cqe.user_data() {
                RECV_TAG => self.stash.push_back((cqe.result(), cqe.flags())),
                CANCEL_TAG => {}
                tag if tag >= CONNECTED_TAG => {
                    if let Some(r) = usize::try_from(tag - CONNECTED_TAG)
                        .ok()
                        .and_then(|s| self.connected_results.get_mut(s))
                    {
                        *r = Some(cqe.result());
                    }
                }
                slot => {
                    if let Some(r) = usize::try_from(slot)
                        .ok()
                        .and_then(|s| self.results.get_mut(s))
                    {
                        *r = Some(cqe.result());
                    }
                }
            }
        }
    }

    fn push_sqe(&mut self, e: &squeue::Entry) -> Result<(), Error> {
        loop {
            // SAFETY: every SQE we build points at memory that outlives its issue: the recv
            // msghdr is boxed in `self`, send slots and `TxBatch` bytes are kept until the
            // send completes (see module docs).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            // SQ full: hand what is queued to the kernel and retry.
            self.ring.submit().map_err(Error::Submit)?;
        }
    }

    fn arm(&mut self) -> Result<(), Error> {
        let e =
            opcode::RecvMsgMulti::new(Fd(self.socket.as_raw_fd()), &raw const *self.recv_hdr, BGID)
                .build()
                .user_data(RECV_TAG);
        self.push_sqe(&e)?;
        self.armed = true;
        Ok(())
    }

    /// Returns the previous batch's buffers to the kernel, clears the batch and queues a
    /// re-arm of the multishot receive if it ended. Nothing is submitted yet.
    fn begin_recv(&mut self) -> Result<Delta, Error> {
        // The caller is done with the previous batch: its buffers go back first.
        if let Some(br) = self.bufring.as_mut() {
            let base = self.rx.arena.base();
            for &bid in &self.rx.returns {
                br.push(
                    bid,
                    base.wrapping_add(usize::from(bid) * self.buf_size),
                    self.buf_size as u32,
                );
            }
            br.publish();
        }
        self.rx.returns.clear();
        self.rx.clear();
        let mut d = Delta::default();
        if !self.armed {
            if self.ever_armed {
                d.recv_rearms += 1;
            }
            self.arm()?;
            self.ever_armed = true;
        }
        Ok(d)
    }

    /// One `io_uring_enter`: submits what is queued, waits up to `timeout` until `want`
    /// completions are in the CQ (deferred work runs first). Never with a zero timeout: when
    /// fewer than `want` completions are there the kernel still arms (and fires) a timer
    /// for the already expired timeout and answers ETIME; perf put a quarter of a shard's
    /// CPU at low load there (`io_cqring_wait`). A wait-free turn is
    /// [`Self::submit_and_run_completions`].
    fn submit_and_wait(&mut self, want: usize, timeout: Duration) -> Result<(), Error> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::Submit(e)),
        }
    }

    /// Moves ready receive completions into the batch (at most `batch`) and publishes `d`.
    fn finish_recv(&mut self, mut d: Delta) -> Result<&mut RecvBatch, Error> {
        self.reap();
        let mut handled = 0;
        while self.rx.metas.len() < self.batch {
            let Some((res, flags)) = self.stash.pop_front() else {
                break;
            };
            self.handle_recv(res, flags, &mut d);
            handled += 1;
        }
        // Completions left over, a multishot receive that ended (armed again only by the
        // next receive), or a run as long as the kernel's multishot burst or our batch: the
        // socket may hold datagrams whose readiness edge was already consumed.
        self.recv_more =
            !self.stash.is_empty() || !self.armed || handled >= self.batch.min(MULTISHOT_RUN);
        self.counters.publish(&d);
        if self.arm_failures >= MAX_ARM_FAILURES {
            self.arm_failures = 0;
            return Err(Error::Recv(io::Error::from_raw_os_error(
                self.last_arm_error,
            )));
        }
        Ok(&mut self.rx)
    }

    pub(crate) fn poll_recv(&mut self, timeout: Duration) -> Result<&mut RecvBatch, Error> {
        let mut d = self.begin_recv()?;
        self.reap();
        if self.stash.is_empty() && !timeout.is_zero() {
            d.recv_calls += 1;
            d.recv_waits += 1;
            self.submit_and_wait(1, timeout)?;
        } else if self.stash.is_empty() || !self.ring.submission().is_empty() {
            // No wait: the enter runs the deferred receive work and returns (see
            // `submit_and_run_completions`).
            d.recv_calls += 1;
            self.submit_and_run_completions()?;
        }
        self.finish_recv(d)
    }

    /// A whole loop turn in one `io_uring_enter` when `tx` fits one chunk: the sends are
    /// submitted (and complete, `MSG_DONTWAIT`) in the same call that waits for receives.
    pub(crate) fn flush_and_poll_recv(
        &mut self,
        tx: &mut TxBatch,
        timeout: Duration,
    ) -> Result<&mut RecvBatch, Error> {
        if tx.is_empty() {
            return self.poll_recv(timeout);
        }
        send::build_queue(tx, self.gso, &mut self.queue);
        let chunk = self.queue.len();
        if chunk > self.batch {
            self.flush(tx)?;
            return self.poll_recv(timeout);
        }
        let mut d = self.begin_recv()?;
        self.reap();
        self.queue_chunk(tx, 0, chunk)?;
        d.recv_calls += 1;
        if self.stash.is_empty() && !timeout.is_zero() {
            // The CQ is empty: the send completions plus one receive satisfy the wait.
            d.recv_waits += 1;
            self.submit_and_wait(chunk + 1, timeout)?;
        } else {
            self.submit_and_run_completions()?;
        }
        self.send_queue(tx, chunk, &mut d)?;
        tx.clear();
        self.finish_recv(d)
    }

    fn handle_recv(&mut self, res: i32, flags: u32, d: &mut Delta) {
        if !cqueue::more(flags) {
            self.armed = false;
        }
        if res < 0 {
            match -res {
                libc::ENOBUFS => d.recv_buffer_exhausted += 1,
                libc::ECANCELED => {}
                errno => {
                    self.arm_failures += 1;
                    self.last_arm_error = errno;
                }
            }
            return;
        }
        self.arm_failures = 0;
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        if bid >= self.buffers {
            return;
        }
        self.rx.returns.push(bid);
        let offset = usize::from(bid) * self.buf_size;
        let used = usize::try_from(res).unwrap_or(0).min(self.buf_size);
        // SAFETY: the kernel handed buffer `bid` to us with this completion and will not write
        // it again until we return it (it is now listed in `returns`).
        let Some(buf) = (unsafe { self.rx.arena.bytes(offset, used) }) else {
            return;
        };
        let Ok(out) = io_uring::types::RecvMsgOut::parse(buf, &self.recv_hdr) else {
            return;
        };
        if out.is_payload_truncated() {
            d.recv_truncated += 1;
            return;
        }
        let Some(source) = wire::decode_sockaddr(out.name_data()) else {
            return;
        };
        let c = wire::decode_recv_cmsgs(out.control_data());
        let payload = out.payload_data();
        let len = payload.len();
        let start = offset + (payload.as_ptr() as usize - buf.as_ptr() as usize);
        let stride = c.gro_segment_size.filter(|s| *s < len).unwrap_or(len);
        account_in(d, len, stride);
        if let Some(k) = c.kernel_drops {
            d.kernel_drops = Some(u64::from(k));
        }
        self.rx.metas.push(RecvMeta {
            source,
            local: c.local,
            offset: start,
            len,
            stride,
        });
    }

    pub(crate) fn flush(&mut self, tx: &mut TxBatch) -> Result<(), Error> {
        if tx.is_empty() {
            return Ok(());
        }
        send::build_queue(tx, self.gso, &mut self.queue);
        let mut d = Delta::default();
        self.send_queue(tx, 0, &mut d)?;
        tx.clear();
        self.counters.publish(&d);
        Ok(())
    }

    /// Sends every unit of `self.queue`; the first `presubmitted` (one chunk at most) are
    /// already submitted. Waits for every completion; retries per the send policy.
    fn send_queue(
        &mut self,
        tx: &mut TxBatch,
        mut presubmitted: usize,
        d: &mut Delta,
    ) -> Result<(), Error> {
        let deadline = SendDeadline::after(self.send_wait);
        let fd = self.socket.as_raw_fd();
        loop {
            let mut at = 0;
            let mut blocked = false;
            while at < self.queue.len() {
                let chunk = (self.queue.len() - at).min(self.batch);
                if presubmitted == chunk && at == 0 {
                    presubmitted = 0;
                } else {
                    self.queue_chunk(tx, at, chunk)?;
                    self.submit_and_run_completions()?;
                }
                if !self.await_sends(chunk)? {
                    // The kernel still owes completions: keep every byte it may read.
                    self.orphans.push(tx.orphan_storage());
                    let fresh = SendSlots::new(self.batch);
                    self.orphan_slots
                        .push(std::mem::replace(&mut self.slots, fresh));
                    return Err(Error::SendsStuck {
                        bound_ms: COMPLETION_BOUND.as_millis() as u64,
                    });
                }
                for j in 0..chunk {
                    let u = self.queue[at + j];
                    match self.results[j].unwrap_or(-libc::EIO) {
                        n if n >= 0 => account_out(d, &u),
                        n => match send::classify(-n, &u) {
                            OnError::Retry => {
                                blocked |= -n != libc::EINTR;
                                self.retry.push(u);
                            }
                            action @ (OnError::DisableGso | OnError::SplitRun) => {
                                self.gso &= action == OnError::SplitRun;
                                self.retry.extend(u.singles());
                            }
                            OnError::Drop => d.send_errors += u.segments as u64,
                        },
                    }
                }
                at += chunk;
            }
            if self.retry.is_empty() {
                return Ok(());
            }
            match deadline.remaining() {
                Some(left) => {
                    if blocked {
                        sys::poll_fd(fd, libc::POLLOUT, left.min(Duration::from_millis(10)))
                            .map_err(Error::Send)?;
                    }
                    std::mem::swap(&mut self.queue, &mut self.retry);
                    self.retry.clear();
                }
                None => {
                    d.send_errors += self.retry.iter().map(|u| u.segments as u64).sum::<u64>();
                    self.retry.clear();
                    return Ok(());
                }
            }
        }
    }

    /// Fills send slots `0..chunk` from `queue[at..]` and queues their SQEs (not submitted).
    fn queue_chunk(&mut self, tx: &TxBatch, at: usize, chunk: usize) -> Result<(), Error> {
        let fd = Fd(self.socket.as_raw_fd());
        for j in 0..chunk {
            let u = self.queue[at + j];
            let bytes = tx.run_bytes_at(u.offset, u.len);
            let s = &mut self.slots;
            sys::fill_send_msghdr(
                &mut s.hdrs[j],
                &mut s.iovs[j],
                &mut s.names[j],
                &mut s.ctrl[j],
                bytes,
                &u.dest,
                u.segment_size,
            );
            self.results[j] = None;
            let e = opcode::SendMsg::new(fd, &raw const s.hdrs[j])
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(j as u64);
            self.push_sqe(&e)?;
        }
        Ok(())
    }

    /// One `io_uring_enter` that submits every queued SQE and, with GETEVENTS and no wait,
    /// also runs the deferred completion work (DEFER_TASKRUN): receive completions that are
    /// ready get posted now, so the next `poll_recv` usually needs no syscall of its own.
    fn submit_and_run_completions(&mut self) -> Result<(), Error> {
        let pending = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
        // SAFETY: plain flags and no argument pointer; the SQEs being submitted satisfy the
        // memory rules in `push_sqe`.
        let r = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(pending, 0, ENTER_GETEVENTS, None)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::ETIME)
                ) =>
            {
                // Nothing was lost: unsubmitted SQEs stay queued for the next enter.
                Ok(())
            }
            Err(e) => Err(Error::Submit(e)),
        }
    }

    /// Waits (bounded) until sends `0..chunk` have completed; false if some never did.
    fn await_sends(&mut self, chunk: usize) -> Result<bool, Error> {
        let until = Instant::now() + COMPLETION_BOUND;
        loop {
            self.reap();
            if self.results[..chunk].iter().all(Option::is_some) {
                return Ok(true);
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return Ok(false);
            };
            self.submit_and_wait(1, left.min(Duration::from_millis(50)))?;
        }
    }

    /// Sends on connected sockets: up to [`CONNECTED_PER_ENTER`] `sendmsg` SQEs (any
    /// socket each, `MSG_DONTWAIT`) submitted in one `io_uring_enter`, which issues and
    /// completes them; see [`crate::UdpIo::send_connected`].
    pub(crate) fn send_connected<'a>(
        &mut self,
        sends: &mut impl Iterator<Item = ConnectedSend<'a>>,
    ) -> Result<ConnectedSent, Error> {
        let mut out = ConnectedSent::default();
        loop {
            let n = self.connected.fill(sends, CONNECTED_PER_ENTER);
            if n == 0 {
                return Ok(out);
            }
            for i in 0..n {
                self.connected_results[i] = None;
                let fd = Fd(self.connected.slots[i].fd);
                let hdr = &raw const self.connected.hdrs[i].msg_hdr;
                let e = opcode::SendMsg::new(fd, hdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(CONNECTED_TAG + i as u64);
                self.push_sqe(&e)?;
            }
            out.syscalls += 1;
            self.submit_and_run_completions()?;
            out.syscalls += self.await_connected(n)?;
            for i in 0..n {
                match self.connected_results[i] {
                    Some(r) if r >= 0 => self.connected.accepted(i, &mut out),
                    Some(r) => self.connected.failed(i, -r, &mut out),
                    None => self.connected.failed(i, 0, &mut out),
                }
            }
        }
    }

    /// Waits until connected sends `0..n` have completed; returns the extra
    /// `io_uring_enter` calls it made (none when the sends completed inside the submitting
    /// call, as nonblocking UDP sends do). The payloads are the caller's, borrowed only for
    /// the call: it never returns while the kernel may still read one. Past
    /// [`COMPLETION_BOUND`] it keeps waiting rather than hand them back early (a
    /// `MSG_DONTWAIT` send does not block, so the wait ends).
    fn await_connected(&mut self, n: usize) -> Result<u64, Error> {
        let mut calls = 0;
        loop {
            self.reap();
            if self.connected_results[..n].iter().all(Option::is_some) {
                return Ok(calls);
            }
            calls += 1;
            self.submit_and_wait(1, Duration::from_millis(50))?;
        }
    }

    /// Cancels the multishot receive and waits (bounded) for its final completion.
    fn quiesce(&mut self) -> bool {
        if !self.armed {
            return self.orphans.is_empty();
        }
        let e = opcode::AsyncCancel::new(RECV_TAG)
            .build()
            .user_data(CANCEL_TAG);
        if self.push_sqe(&e).is_err() {
            return false;
        }
        let until = Instant::now() + COMPLETION_BOUND;
        while self.armed {
            let ts = Timespec::from(Duration::from_millis(20));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
            while let Some((_, flags)) = self.stash.pop_front() {
                if !cqueue::more(flags) {
                    self.armed = false;
                }
            }
            if Instant::now() > until {
                return false;
            }
        }
        self.orphans.is_empty()
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        let quiet = self.quiesce();
        let unregistered = match self.bufring.as_mut() {
            Some(br) if quiet => br.unregister(&self.ring.submitter()).is_ok(),
            _ => false,
        };
        if !(quiet && unregistered) {
            // The kernel may still write receive buffers or read send data: never free them.
            if let Some(br) = self.bufring.take() {
                br.leak();
            }
            let arena = std::mem::replace(&mut self.rx.arena, Arena::placeholder());
            arena.leak();
            for o in self.orphans.drain(..) {
                std::mem::forget(o);
            }
            for s in self.orphan_slots.drain(..) {
                std::mem::forget(s);
            }
        }
    }
}
