//! The AF_XDP socket: its UMEM (one anonymous mapping of equal frames) and the four
//! single-producer/single-consumer rings the kernel shares with us through mmap.
//!
//! Ring protocol (Documentation/networking/af_xdp.rst): each ring has a producer and a
//! consumer index (free-running u32) and `size` (a power of two) slots. The side that
//! produces writes slots, then publishes the producer index with a release store; the side
//! that consumes reads the producer index with an acquire load, reads the slots, then
//! publishes the consumer index with a release store. We produce on the fill and TX rings
//! and consume on the RX and completion rings, always in batches: one index load and one
//! index store per batch, not per frame.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::XdpUnavailable;

/// An mmap'd region, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(
        fd: Option<RawFd>,
        len: usize,
        offset: libc::off_t,
        op: &'static str,
    ) -> Result<Self, XdpUnavailable> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory is
        // affected. The result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XdpUnavailable::Setup {
                op,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(XdpUnavailable::Setup {
            op,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers into the mapping
        // once its owner drops (rings and UMEM hand out no references that outlive `&self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// One mmap'd ring of `T` slots (u64 frame addresses for fill/completion, `xdp_desc` for
/// RX/TX). `cached_*` are our private copies of the indices.
#[derive(Debug)]
pub(crate) struct Ring<T> {
    /// The mapping the pointers below point into (`None` only for the unit tests' rings
    /// over a heap buffer).
    _map: Option<Mapping>,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    slots: NonNull<T>,
    mask: u32,
    size: u32,
    /// Producer rings: our next producer index. Consumer rings: the last producer index seen.
    cached_prod: u32,
    /// Producer rings: the last consumer index seen. Consumer rings: our next consumer index.
    cached_cons: u32,
}

impl<T: Copy> Ring<T> {
    fn map(
        fd: RawFd,
        size: u32,
        off: &libc::xdp_ring_offset,
        pgoff: libc::off_t,
        what: &'static str,
    ) -> Result<Self, XdpUnavailable> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mapping::new(Some(fd), len, pgoff, what)?;
        // SAFETY: the kernel's offsets lie inside the mapping it sized for this ring.
        unsafe { Self::over(map.ptr, size, off) }.map(|mut r| {
            r._map = Some(map);
            r
        })
    }

    /// A ring whose indices and slots lie at `off` from `base`.
    ///
    /// # Safety
    /// `base` must point to memory that holds the three u32 indices at their offsets and
    /// `size` slots of `T` at `off.desc`, suitably aligned, and that outlives the ring.
    unsafe fn over(
        base: NonNull<u8>,
        size: u32,
        off: &libc::xdp_ring_offset,
    ) -> Result<Self, XdpUnavailable> {
        if !size.is_power_of_two() {
            return Err(XdpUnavailable::Config {
                what: "ring size must be a power of two",
            });
        }
        let at = |o: u64| {
            // SAFETY: per this function's contract the offsets lie inside the memory.
            unsafe { base.add(o as usize) }
        };
        let producer = at(off.producer).cast::<AtomicU32>();
        let consumer = at(off.consumer).cast::<AtomicU32>();
        let flags = at(off.flags).cast::<AtomicU32>();
        let slots = at(off.desc).cast::<T>();
        Ok(Self {
            producer,
            consumer,
            flags,
            slots,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: None,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a kernel-maintained u32 index inside our live mapping, aligned by the
        // kernel's layout; shared with the kernel only through atomic operations.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asks for a wake-up call on this ring (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`; the flags word is part of the same mapping.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, and the mapping holds `size` slots after `desc`.
        unsafe { self.slots.as_ptr().add((index & self.mask) as usize) }
    }

    // --- producer side (fill, TX) ---

    /// Free slots we may fill now (refreshes the consumer index when we seem full).
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        // Saturating: pushing past `free` is a caller bug, not a reason to panic here.
        let mut free = self
            .size
            .saturating_sub(self.cached_prod.wrapping_sub(self.cached_cons));
        if free < want {
            self.cached_cons = self.consumer().load(Ordering::Acquire);
            free = self
                .size
                .saturating_sub(self.cached_prod.wrapping_sub(self.cached_cons));
        }
        free
    }

    /// Writes `value` into the next slot; the caller checked [`Self::free`]. Not visible to
    /// the kernel until [`Self::submit`].
    pub(crate) fn push(&mut self, value: T) {
        // SAFETY: the slot is ours: it lies between the kernel's consumer index and the
        // published producer index plus `free`, which the kernel does not read.
        unsafe { self.slot(self.cached_prod).write_volatile(value) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes the pushed slots.
    pub(crate) fn submit(&mut self) {
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Whether the kernel has consumed everything we produced.
    pub(crate) fn drained(&self) -> bool {
        self.consumer().load(Ordering::Acquire) == self.cached_prod
    }

    // --- consumer side (RX, completion) ---

    /// Slots ready to read (refreshes the producer index when we have caught up).
    pub(crate) fn ready(&mut self) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n
    }

    /// Reads the next ready slot; the caller checked [`Self::ready`].
    pub(crate) fn pop(&mut self) -> T {
        // SAFETY: the slot lies before the producer index we loaded with acquire ordering,
        // so the kernel finished writing it and will not touch it until we release it.
        let v = unsafe { self.slot(self.cached_cons).read_volatile() };
        self.cached_cons = self.cached_cons.wrapping_add(1);
        v
    }

    /// Hands the popped slots back to the kernel.
    pub(crate) fn release(&mut self) {
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

/// The AF_XDP socket with its UMEM and rings.
#[derive(Debug)]
pub(crate) struct Xsk {
    // Rings and UMEM unmap before the socket closes (field order is drop order).
    pub fill: Ring<u64>,
    pub comp: Ring<u64>,
    pub rx: Ring<libc::xdp_desc>,
    pub tx: Ring<libc::xdp_desc>,
    umem: Mapping,
    frame_size: u32,
    frames: u32,
    pub zero_copy: bool,
    /// Why zero-copy was not used, when it was not.
    pub copy_reason: Option<io::Error>,
    fd: OwnedFd,
}

fn setsockopt<T>(
    fd: RawFd,
    name: libc::c_int,
    value: &T,
    op: &'static str,
) -> Result<(), XdpUnavailable> {
    // SAFETY: `value` is a live `T` and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(XdpUnavailable::Setup {
            op,
            source: io::Error::last_os_error(),
        })
    }
}

impl Xsk {
    /// Creates the socket, registers a UMEM of `frames` frames of `frame_size` bytes, sets up
    /// rings of `ring` slots each, and binds to (`ifindex`, `queue`): zero-copy when the
    /// driver offers it, else copy mode (the refusal kept in `copy_reason`).
    pub(crate) fn open(
        ifindex: u32,
        queue: u32,
        frames: u32,
        frame_size: u32,
        ring: u32,
        force_copy: bool,
    ) -> Result<Self, XdpUnavailable> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EAFNOSUPPORT) => XdpUnavailable::NoXdpSockets,
                Some(libc::EPERM) | Some(libc::EACCES) => XdpUnavailable::PermissionDenied {
                    op: "socket(AF_XDP)",
                },
                _ => XdpUnavailable::Setup {
                    op: "socket(AF_XDP)",
                    source: e,
                },
            });
        }
        // SAFETY: `raw` is a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        let umem_len = frames as usize * frame_size as usize;
        let umem = Mapping::new(None, umem_len, 0, "mmap UMEM")?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(s, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
        for (name, op) in [
            (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (libc::XDP_RX_RING, "XDP_RX_RING"),
            (libc::XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(s, name, &ring, op)?;
        }
        // SAFETY: xdp_mmap_offsets is plain data; all-zero is valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `len` are live locals; `len` holds the size of `off`.
        let rc = unsafe {
            libc::getsockopt(
                s,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(XdpUnavailable::Setup {
                op: "XDP_MMAP_OFFSETS",
                source: io::Error::last_os_error(),
            });
        }
        let fill = Ring::map(
            s,
            ring,
            &off.fr,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            "mmap fill ring",
        )?;
        let comp = Ring::map(
            s,
            ring,
            &off.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            "mmap completion ring",
        )?;
        let rx = Ring::map(s, ring, &off.rx, libc::XDP_PGOFF_RX_RING, "mmap RX ring")?;
        let tx = Ring::map(s, ring, &off.tx, libc::XDP_PGOFF_TX_RING, "mmap TX ring")?;

        let bind = |mode: u16| {
            let addr = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: mode | libc::XDP_USE_NEED_WAKEUP,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: `addr` is a live sockaddr_xdp and the length passed is its size.
            let rc = unsafe {
                libc::bind(
                    s,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let (zero_copy, copy_reason) = if force_copy {
            (false, None)
        } else {
            match bind(libc::XDP_ZEROCOPY) {
                Ok(()) => (true, None),
                Err(e) => (false, Some(e)),
            }
        };
        if !zero_copy {
            bind(libc::XDP_COPY).map_err(|source| XdpUnavailable::Bind {
                ifindex,
                queue,
                source,
            })?;
        }
        Ok(Self {
            fill,
            comp,
            rx,
            tx,
            umem,
            frame_size,
            frames,
            zero_copy,
            copy_reason,
            fd,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// `len` bytes of the UMEM at `addr`, or `None` when the range leaves the UMEM or crosses
    /// a frame boundary.
    pub(crate) fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (start, end) = self.range(addr, len)?;
        // SAFETY: the range lies inside the UMEM mapping (checked by `range`). The frame is
        // ours: it came off the RX ring (or is a free TX frame), so the kernel does not write
        // it until we hand it back.
        Some(unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(start), end - start) })
    }

    /// `len` bytes of the UMEM at `addr`, writable (a received datagram decrypted in place);
    /// `None` as for [`Self::bytes`].
    pub(crate) fn bytes_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (start, end) = self.range(addr, len)?;
        // SAFETY: inside the mapping (checked by `range`); the frame came off the RX ring and
        // is not yet back on the fill ring, so the kernel does not touch it, and `&mut self`
        // makes this the only view.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(start), end - start)
        })
    }

    /// The whole frame at `addr`, writable (for building a TX frame or decrypting in place).
    pub(crate) fn frame_mut(&mut self, addr: u64) -> Option<&mut [u8]> {
        let (start, end) = self.range(addr, self.frame_size as usize)?;
        // SAFETY: inside the mapping (checked by `range`); the frame is one we hold (free TX
        // frame or an RX frame not yet returned), and `&mut self` makes this the only view.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(start), end - start)
        })
    }

    fn range(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        let fs = self.frame_size as usize;
        let frame_end = (start / fs + 1) * fs;
        (end <= frame_end && end <= self.frames as usize * fs).then_some((start, end))
    }

    /// Kicks the kernel to transmit what is on the TX ring (`sendto` with no data).
    /// EAGAIN/EBUSY/ENOBUFS mean "try again later" and are not errors.
    pub(crate) fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: sendto with a null buffer of length 0 and no address: only a wake-up.
        let rc = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub(crate) fn kernel_stats(&self) -> Option<libc::xdp_statistics> {
        // SAFETY: plain data; all-zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals; `len` holds the size of `st`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        (rc == 0).then_some(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill-style ring over a heap buffer, with us as producer and the test playing the
    /// kernel as consumer, indices started near u32::MAX so they wrap mid-test.
    #[test]
    fn ring_indices_wrap_and_batches_keep_order() {
        const SIZE: u32 = 8;
        // Words 0..8: indices (producer at 0, consumer at 8, flags at 16 bytes); slots at 64.
        let mut mem = vec![0u64; 8 + SIZE as usize];
        let off = libc::xdp_ring_offset {
            producer: 0,
            consumer: 8,
            flags: 16,
            desc: 64,
        };
        let base = NonNull::new(mem.as_mut_ptr().cast::<u8>()).expect("vec pointer");
        // SAFETY: `mem` holds the indices and SIZE u64 slots at those offsets, 8-aligned,
        // and outlives both rings.
        let mut prod = unsafe { Ring::<u64>::over(base, SIZE, &off) }.expect("ring");
        // SAFETY: as above; the second ring is the consumer's view of the same memory.
        let mut cons = unsafe { Ring::<u64>::over(base, SIZE, &off) }.expect("ring");
        let start = u32::MAX - 3;
        prod.producer().store(start, Ordering::Relaxed);
        prod.consumer().store(start, Ordering::Relaxed);
        (prod.cached_prod, prod.cached_cons) = (start, start);
        (cons.cached_prod, cons.cached_cons) = (start, start);

        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..10 {
            let free = prod.free(SIZE);
            assert_eq!(
                free, SIZE,
                "round {round}: the consumer released everything"
            );
            let n = 3 + round % 5;
            for _ in 0..n {
                prod.push(next);
                next += 1;
            }
            assert_eq!(cons.ready(), 0, "nothing is visible before submit");
            prod.submit();
            assert_eq!(cons.ready(), n);
            for _ in 0..n {
                assert_eq!(cons.pop(), expect);
                expect += 1;
            }
            assert!(!prod.drained());
            cons.release();
            assert!(prod.drained());
        }
        assert!(prod.cached_prod < start, "the indices wrapped");
        // Full ring: no free slot until the consumer releases.
        assert_eq!(prod.free(SIZE), SIZE);
        for _ in 0..SIZE {
            prod.push(0);
        }
        prod.submit();
        assert_eq!(prod.free(1), 0);
        cons.ready();
        cons.pop();
        cons.release();
        assert_eq!(prod.free(1), 1);
    }
}
