//! The provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19+): an array of
//! `io_uring_buf { addr, len, bid }` entries shared with the kernel. The kernel consumes entries
//! from its head as receives complete; we add returned buffers at our tail and publish the new
//! tail with a release store. The tail lives in the `resv` field of entry 0.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

/// The kernel requires the ring memory to be page aligned.
const RING_ALIGN: usize = 4096;

#[derive(Debug)]
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    layout: Layout,
    entries: u16,
    tail: u16,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// `entries` must be a power of two in 1..=32768 (checked by the caller's config).
    pub(crate) fn new(entries: u16, bgid: u16) -> io::Result<Self> {
        let size = usize::from(entries) * size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(size.max(RING_ALIGN), RING_ALIGN)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: non-zero size (at least one page).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<BufRingEntry>()) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(Self {
            ring: ptr,
            layout,
            entries,
            tail: 0,
            bgid,
            registered: false,
        })
    }

    pub(crate) fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory is page aligned, holds `entries` entries and stays allocated
        // until `Drop`, which runs only after `unregister` (or leaks it when that fails).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.as_ptr() as u64,
                self.entries,
                self.bgid,
                0,
            )?;
        }
        self.registered = true;
        Ok(())
    }

    pub(crate) fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// Stages buffer `bid` (`len` bytes at `addr`) at our tail; visible after [`Self::publish`].
    pub(crate) fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, inside the allocation. The kernel reads this slot only after
        // a tail that covers it is published, and it has consumed the slot's previous content
        // (we never have more than `entries` buffers, so the slot is free). The writes do not
        // touch `resv`, which is the tail in entry 0.
        unsafe {
            let e = &mut *self.ring.as_ptr().add(idx);
            e.set_addr(addr as u64);
            e.set_len(len);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every staged buffer visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: `tail` points at entry 0's `resv` field inside our live, aligned allocation;
        // the kernel reads it with an acquire load, we only ever store it (release) from this
        // thread, so an atomic view of that u16 is sound.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Gives the ring memory up without freeing it (the kernel may still hold it).
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // Still known to the kernel: leaking is the only sound choice.
            return;
        }
        // SAFETY: allocated in `new` with this layout and no longer registered.
        unsafe { alloc::dealloc(self.ring.as_ptr().cast(), self.layout) }
    }
}
