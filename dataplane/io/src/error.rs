//! Error types of the I/O layer.
//!
//! Fatal to an I/O instance: [`Error::Socket`], [`Error::Uring`] and [`Error::Config`] at
//! construction; [`Error::Recv`], [`Error::Send`], [`Error::Submit`] and [`Error::SendsStuck`]
//! at run time (the socket or ring is unusable; the shard should log and rebuild it).
//! Per-datagram send failures are not errors: they are counted in
//! [`crate::IoStats::send_errors`] and the datagram is dropped, as a lossy network would.

use std::io;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or configuring the socket failed.
    #[error("socket setup failed at {op}: {source}")]
    Socket {
        /// The call that failed (`"bind"`, `"SO_REUSEPORT"`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// io_uring cannot be used; `IoMode::Auto` falls back to mmsg and keeps this as the reason.
    #[error("io_uring unavailable: {0}")]
    Uring(#[from] UringUnavailable),
    /// The AF_XDP backend cannot be set up; the variant names the reason.
    #[error("AF_XDP unavailable: {0}")]
    Xdp(#[from] crate::XdpUnavailable),
    /// The configuration cannot work (e.g. a zero batch size).
    #[error("invalid I/O configuration: {what}")]
    Config {
        /// What is wrong.
        what: &'static str,
    },
    /// Waiting for or receiving datagrams failed with an unexpected OS error.
    #[error("receive failed: {0}")]
    Recv(io::Error),
    /// Waiting for socket buffer space before a send failed with an unexpected OS error.
    #[error("waiting to send failed: {0}")]
    Send(io::Error),
    /// `io_uring_enter` failed with an unexpected OS error.
    #[error("io_uring submit failed: {0}")]
    Submit(io::Error),
    /// The kernel did not complete submitted sends within the bound. Their memory was kept
    /// aside (never reused or freed while the kernel may read it); the instance should be
    /// rebuilt.
    #[error("io_uring sends not completed within {bound_ms} ms")]
    SendsStuck {
        /// How long we waited.
        bound_ms: u64,
    },
}

/// Why io_uring could not be set up. Each variant names the reason so the caller can log it
/// before falling back to recvmmsg/sendmmsg.
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    /// `kernel.io_uring_disabled` is 2 (disabled for everyone) or 1 (disabled for processes
    /// outside `kernel.io_uring_group`) and setup returned EPERM.
    #[error("disabled by sysctl kernel.io_uring_disabled={value}")]
    DisabledBySysctl {
        /// The sysctl's value.
        value: u8,
    },
    /// `io_uring_setup` returned EPERM while the sysctl allows it: a seccomp filter (container
    /// runtimes block io_uring by default) or an LSM denied it.
    #[error("io_uring_setup denied with EPERM (seccomp filter or LSM)")]
    PermissionDenied,
    /// `io_uring_setup` returned ENOSYS: kernel built without io_uring, or a seccomp filter that
    /// answers ENOSYS.
    #[error("io_uring_setup returned ENOSYS (kernel without io_uring or seccomp)")]
    NotImplemented,
    /// The kernel is older than the features this backend needs (multishot recvmsg: 6.0).
    #[error("kernel {release} is older than {needed_major}.{needed_minor} (multishot recvmsg)")]
    KernelTooOld {
        /// `uname -r`.
        release: String,
        /// Required major version.
        needed_major: u32,
        /// Required minor version.
        needed_minor: u32,
    },
    /// The opcode probe says an opcode we need is missing.
    #[error("io_uring opcode {opcode} not supported by this kernel")]
    MissingOpcode {
        /// The opcode's name.
        opcode: &'static str,
    },
    /// Registering the provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19+) failed.
    #[error("provided-buffer ring registration failed: {0}")]
    BufRing(io::Error),
    /// Registering the opcode probe failed.
    #[error("io_uring opcode probe failed: {0}")]
    Probe(io::Error),
    /// `io_uring_setup` failed for another reason (e.g. ENOMEM from locked-memory limits).
    #[error("io_uring_setup failed: {0}")]
    Setup(io::Error),
}

/// Why [`crate::TxBatch::push`] refused a datagram. The batch is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The batch holds `capacity()` datagrams or its byte storage is full: flush first.
    #[error("transmit batch full")]
    Full,
    /// The datagram is larger than the batch's per-datagram maximum.
    #[error("datagram of {len} bytes exceeds the batch maximum of {max}")]
    TooLarge {
        /// Offered length.
        len: usize,
        /// Maximum per datagram.
        max: usize,
    },
}
