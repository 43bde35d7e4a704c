//! Ring construction and probing: which setup flags this kernel takes, whether the opcodes we
//! need exist, and a typed reason when io_uring cannot be used at all.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use crate::error::UringUnavailable;

/// Multishot recvmsg (IORING_RECV_MULTISHOT on IORING_OP_RECVMSG) arrived in Linux 6.0.
const NEEDED: (u32, u32) = (6, 0);

/// A failure to inject instead of calling `io_uring_setup`, so tests (and operators checking
/// their fallback logging) can exercise the `IoMode::Auto` fallback on a host where io_uring
/// works. The injected failure goes through the same classification as a real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringFault {
    /// `io_uring_setup` fails with this errno (e.g. `libc::ENOSYS`, `libc::EPERM`).
    SetupErrno(i32),
    /// `io_uring_setup` fails with EPERM and `kernel.io_uring_disabled` reads this value.
    Sysctl(u8),
}

/// What the ring was built with, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringFeatures {
    /// `uname -r`.
    pub kernel: String,
    /// IORING_SETUP_SINGLE_ISSUER accepted (6.0+).
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN accepted (6.1+).
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN accepted (5.19+), used when DEFER_TASKRUN is not.
    pub coop_taskrun: bool,
    /// IORING_SETUP_SUBMIT_ALL accepted (5.18+).
    pub submit_all: bool,
    /// IORING_FEAT_NODROP: completions are never dropped on CQ overflow.
    pub nodrop: bool,
    /// IORING_FEAT_EXT_ARG: waits can carry a timeout.
    pub ext_arg: bool,
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries.
    pub cq_entries: u32,
}

fn sysctl_io_uring_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Parses "6.18.44-fc" into (6, 18).
pub(crate) fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Maps an `io_uring_setup` error to its reason; `sysctl` is `kernel.io_uring_disabled`.
pub(crate) fn classify_setup_error(e: io::Error, sysctl: Option<u8>) -> UringUnavailable {
    match e.raw_os_error() {
        Some(libc::EPERM) => match sysctl {
            Some(value @ 1..) => UringUnavailable::DisabledBySysctl { value },
            _ => UringUnavailable::PermissionDenied,
        },
        Some(libc::ENOSYS) => UringUnavailable::NotImplemented,
        _ => UringUnavailable::Setup(e),
    }
}

/// Builds a ring with the best setup flags this kernel accepts and checks the opcodes.
pub(crate) fn build_ring(
    sq_entries: u32,
    cq_entries: u32,
    fault: Option<UringFault>,
) -> Result<(IoUring, UringFeatures), UringUnavailable> {
    match fault {
        Some(UringFault::SetupErrno(errno)) => {
            return Err(classify_setup_error(
                io::Error::from_raw_os_error(errno),
                sysctl_io_uring_disabled(),
            ));
        }
        Some(UringFault::Sysctl(value)) => {
            return Err(classify_setup_error(
                io::Error::from_raw_os_error(libc::EPERM),
                Some(value),
            ));
        }
        None => {}
    }
    let kernel = kernel_release();
    if parse_release(&kernel).is_some_and(|v| v < NEEDED) {
        return Err(UringUnavailable::KernelTooOld {
            release: kernel,
            needed_major: NEEDED.0,
            needed_minor: NEEDED.1,
        });
    }
    // Best first; EINVAL means "flag unknown to this kernel", so try the next set.
    // (single_issuer, defer_taskrun, coop_taskrun, submit_all)
    const ATTEMPTS: [(bool, bool, bool, bool); 4] = [
        (true, true, false, true),
        (true, false, true, true),
        (false, false, false, true),
        (false, false, false, false),
    ];
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for (single, defer, coop, all) in ATTEMPTS {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        if single {
            b.setup_single_issuer();
        }
        if defer {
            b.setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun();
        }
        if all {
            b.setup_submit_all();
        }
        match b.build(sq_entries) {
            Ok(ring) => {
                probe(&ring)?;
                let p = ring.params();
                let features = UringFeatures {
                    kernel,
                    single_issuer: single,
                    defer_taskrun: defer,
                    coop_taskrun: coop,
                    submit_all: all,
                    nodrop: p.is_feature_nodrop(),
                    ext_arg: p.is_feature_ext_arg(),
                    sq_entries: p.sq_entries(),
                    cq_entries: p.cq_entries(),
                };
                if !features.ext_arg {
                    return Err(UringUnavailable::MissingOpcode {
                        opcode: "IORING_FEAT_EXT_ARG (timed wait)",
                    });
                }
                return Ok((ring, features));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(classify_setup_error(e, sysctl_io_uring_disabled())),
        }
    }
    Err(UringUnavailable::Setup(last))
}

fn probe(ring: &IoUring) -> Result<(), UringUnavailable> {
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(UringUnavailable::Probe)?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "IORING_OP_RECVMSG"),
        (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(UringUnavailable::MissingOpcode { opcode: name });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_errno_and_sysctl() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        assert!(matches!(
            classify_setup_error(eperm(), Some(2)),
            UringUnavailable::DisabledBySysctl { value: 2 }
        ));
        assert!(matches!(
            classify_setup_error(eperm(), Some(0)),
            UringUnavailable::PermissionDenied
        ));
        assert!(matches!(
            classify_setup_error(io::Error::from_raw_os_error(libc::ENOSYS), None),
            UringUnavailable::NotImplemented
        ));
        assert!(matches!(
            classify_setup_error(io::Error::from_raw_os_error(libc::ENOMEM), None),
            UringUnavailable::Setup(_)
        ));
    }

    #[test]
    fn release_strings_parse() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
    }
}
