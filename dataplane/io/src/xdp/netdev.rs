//! What the backend needs to know about its interface: index, MAC address and MTU, read with
//! `if_nametoindex` and `SIOCGIF*` ioctls (these follow the caller's network namespace, where
//! `/sys/class/net` follows the namespace that mounted sysfs).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::XdpUnavailable;

/// Index, MAC and MTU of one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interface {
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: usize,
}

pub(crate) fn interface(name: &str) -> Result<Interface, XdpUnavailable> {
    let missing = || XdpUnavailable::InterfaceMissing {
        name: name.to_owned(),
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(missing());
    }
    let c = CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(missing());
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(XdpUnavailable::Setup {
            op: "socket for interface ioctls",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a new descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let ioctl = |req: libc::c_ulong, op: &'static str| {
        // SAFETY: ifreq is plain data (a name and a union of plain fields); all-zero is valid.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: `r` is a live ifreq with a NUL-terminated name (len < IFNAMSIZ, rest zero);
        // both requests write only inside it.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &raw mut r) };
        if rc < 0 {
            Err(XdpUnavailable::Setup {
                op,
                source: io::Error::last_os_error(),
            })
        } else {
            Ok(r)
        }
    };
    let hw = ioctl(libc::SIOCGIFHWADDR, "SIOCGIFHWADDR")?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { hw.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(XdpUnavailable::NotEthernet {
            name: name.to_owned(),
        });
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    let m = ioctl(libc::SIOCGIFMTU, "SIOCGIFMTU")?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { m.ifr_ifru.ifru_mtu };
    Ok(Interface {
        index,
        mac,
        mtu: usize::try_from(mtu).unwrap_or(0),
    })
}
