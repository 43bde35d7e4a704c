//! Thin wrappers over the libc calls this crate makes. Each `unsafe` block is one syscall whose
//! pointer arguments come from references that outlive the call.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::wire::{self, CmsgBuf, RECV_CMSG_LEN, SEND_CMSG_LEN, SockAddrBuf};

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt` of an `int` option.
pub(crate) fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of `value`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until `fd` has any of `events` or `timeout` passes; `Ok(false)` on timeout.
/// EINTR counts as a timeout (the caller loops on its own deadline).
pub(crate) fn poll_fd(fd: RawFd, events: i16, timeout: Duration) -> io::Result<bool> {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1.
    let rc = unsafe { libc::poll(&raw mut p, 1, ms) };
    if rc >= 0 {
        return Ok(rc > 0);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINTR) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// An all-zero `mmsghdr` (null pointers, zero lengths), filled in before each call.
pub(crate) fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// An all-zero `msghdr`.
pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// `recvmmsg(fd, msgs, len, flags, NULL)`.
///
/// # Safety
/// Every header's name, iovec and control pointers must point to writable memory of the
/// lengths they state, valid for the duration of the call.
pub(crate) unsafe fn recvmmsg(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
    flags: i32,
) -> io::Result<usize> {
    let n = msgs.len().min(u32::MAX as usize) as libc::c_uint;
    // SAFETY: the caller guarantees the buffers behind each header; the array is live.
    let rc = unsafe { libc::recvmmsg(fd, msgs.as_mut_ptr(), n, flags, std::ptr::null_mut()) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// `sendmmsg(fd, msgs, len, flags)`.
///
/// # Safety
/// Every header's name, iovec and control pointers must point to readable memory of the
/// lengths they state, valid for the duration of the call.
pub(crate) unsafe fn sendmmsg(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
    flags: i32,
) -> io::Result<usize> {
    let n = msgs.len().min(u32::MAX as usize) as libc::c_uint;
    // SAFETY: the caller guarantees the buffers behind each header; the array is live.
    let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n, flags) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Points `hdr` at one send: `bytes` through `iov`, the destination encoded into `name`, and
/// a UDP_SEGMENT cmsg in `ctrl` when `segment_size` is set (a GSO run). Shared by the mmsg and
/// io_uring backends. Safe: it only stores pointers; the caller keeps `iov`, `name`, `ctrl` and
/// `bytes` alive and unmoved until the kernel has consumed `hdr`.
pub(crate) fn fill_send_msghdr(
    hdr: &mut libc::msghdr,
    iov: &mut libc::iovec,
    name: &mut SockAddrBuf,
    ctrl: &mut CmsgBuf<SEND_CMSG_LEN>,
    bytes: &[u8],
    dest: &SocketAddr,
    segment_size: Option<u16>,
) {
    *iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let name_len = name.encode(dest);
    hdr.msg_name = name.0.as_mut_ptr().cast();
    hdr.msg_namelen = name_len as libc::socklen_t;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    match segment_size {
        Some(seg) => {
            let n = ctrl.encode_udp_segment(seg);
            hdr.msg_control = ctrl.0.as_mut_ptr().cast();
            hdr.msg_controllen = n as _;
        }
        None => {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        }
    }
    hdr.msg_flags = 0;
}

/// One `sendmsg` on a connected socket: `payload` as one datagram, or, with `segment_size`,
/// as a UDP GSO run of `segment_size`-byte datagrams (the last may be shorter).
pub(crate) fn send_connected(
    fd: RawFd,
    payload: &[u8],
    segment_size: Option<u16>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut ctrl = CmsgBuf::<SEND_CMSG_LEN>::zeroed();
    let mut hdr = zeroed_msghdr();
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    if let Some(seg) = segment_size {
        let n = ctrl.encode_udp_segment(seg);
        hdr.msg_control = ctrl.0.as_mut_ptr().cast();
        hdr.msg_controllen = n as _;
    }
    // SAFETY: `hdr` points at `iov` (over `payload`, borrowed for the call) and `ctrl`, both
    // live in this frame until the call returns; no name: the socket is connected.
    let rc = unsafe { libc::sendmsg(fd, &raw const hdr, libc::MSG_DONTWAIT) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// One nonblocking `recvmsg` on a connected socket into `buf`, with room for the cmsgs a
/// UDP_GRO socket gets: the bytes received, the GRO segment size the kernel reported (a
/// coalesced receive), and whether the datagram was cut to fit `buf` (`MSG_TRUNC`).
pub(crate) fn recv_connected(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<usize>, bool)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut ctrl = CmsgBuf::<RECV_CMSG_LEN>::zeroed();
    let mut hdr = zeroed_msghdr();
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = ctrl.0.as_mut_ptr().cast();
    hdr.msg_controllen = RECV_CMSG_LEN as _;
    // SAFETY: `hdr` points at `iov` (over `buf`, borrowed mutably for the call) and `ctrl`,
    // both live in this frame until the call returns; no name: the socket is connected.
    let rc = unsafe { libc::recvmsg(fd, &raw mut hdr, libc::MSG_DONTWAIT) };
    let n = usize::try_from(rc).map_err(|_| io::Error::last_os_error())?;
    let used = hdr.msg_controllen.min(RECV_CMSG_LEN);
    let segment = wire::decode_recv_cmsgs(ctrl.0.get(..used).unwrap_or(&[])).gro_segment_size;
    Ok((n, segment, hdr.msg_flags & libc::MSG_TRUNC != 0))
}

/// Puts the calling thread in `SCHED_FIFO` at `priority` (1..=99): it then runs as soon as
/// it is runnable, ahead of every `SCHED_OTHER` thread of its CPU. Needs `CAP_SYS_NICE` (or
/// an `RLIMIT_RTPRIO` that allows `priority`).
pub(crate) fn set_thread_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid `sched_param` that outlives
    // the call, which only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the calling thread's nice value by `delta` (at most to 19): `getpriority` and
/// `setpriority` on its thread id (Linux keeps a nice value per thread; raising it needs no
/// privilege). Returns the new value.
pub(crate) fn raise_thread_nice(delta: i32) -> io::Result<i32> {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // getpriority may return -1 as a value: errno tells an error apart.
    // SAFETY: `__errno_location` returns this thread's errno; writing 0 to it is allowed.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain integer arguments; `tid` is this thread's id.
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    if current == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error().unwrap_or(0) != 0 {
            return Err(e);
        }
    }
    let nice = (current + delta).min(19);
    // SAFETY: plain integer arguments; `tid` is this thread's id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 {
        Ok(nice)
    } else {
        Err(io::Error::last_os_error())
    }
}
