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

/// The IP addresses configured on interface `name` (`getifaddrs`, which follows the caller's
/// network namespace).
pub(crate) fn addresses(name: &str) -> Result<Vec<std::net::IpAddr>, XdpUnavailable> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(XdpUnavailable::Setup {
            op: "getifaddrs",
            source: io::Error::last_os_error(),
        });
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))));
        } else if family == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference into it is kept.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The receive queues of interface `name` (its `rx-N` entries in sysfs), when the sysfs
/// mounted here shows this namespace's interface of that name (its `ifindex` matches);
/// `None` when that cannot be told.
pub(crate) fn rx_queues(name: &str) -> Option<u32> {
    let index = interface(name).ok()?.index;
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let sys_index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if sys_index != index {
        return None;
    }
    let n = std::fs::read_dir(dir.join("queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok()
}

/// Turns transmit checksum offload off on interface `name` (`ethtool -K NAME tx off`,
/// through `SIOCETHTOOL`/`ETHTOOL_STXCSUM`). For test and lab setups where local sockets
/// send into a veth pair whose other end runs AF_XDP: with offload on, their UDP checksums
/// stay partial (a NIC would complete them) and the AF_XDP side drops them as
/// `rx_bad_checksum`.
pub(crate) fn disable_tx_checksum_offload(name: &str) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: `req` names the device (NUL-terminated: len < IFNAMSIZ, rest zero) and points
    // at `value`, a live ethtool_value the kernel reads; both outlive the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
