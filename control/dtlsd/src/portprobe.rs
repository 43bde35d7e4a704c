//! Start-up check that no other socket holds the listen address.
//!
//! Every shard binds the listen address with SO_REUSEPORT, so a second daemon on the same
//! address would bind too and the kernel would split clients between the two. Before the
//! shards bind, [`check_listen`] binds a probe socket on the address as a shard would
//! (`dtls_io::bind_udp`, so IPv6 is `IPV6_V6ONLY` as there) but *without* SO_REUSEPORT,
//! and closes it at once: Linux refuses that bind with EADDRINUSE while any socket holds a
//! conflicting address, whether that socket set SO_REUSEPORT or not. Port 0 needs no probe
//! (the kernel picks a free port).
//!
//! The owner is named when it can be found, best effort: the conflicting sockets' inodes
//! from `/proc/net/udp` and `/proc/net/udp6` (this network namespace), then the processes
//! holding `socket:[inode]` under `/proc/*/fd` (all of them as root, one's own otherwise).
//!
//! `--takeover` (`takeover = true`) skips the refusal for a restart: the new daemon shares
//! the address with the old one until the old one is stopped. A probe that finds the
//! address free and the shards' own bind are unaffected; the probe socket is closed before
//! the shards bind (UDP keeps no TIME_WAIT state).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use dtls_io::SocketConfig;

/// A process holding a socket bound to a conflicting address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when readable.
    pub name: Option<String>,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "pid {} ({name})", self.pid),
            None => write!(f, "pid {}", self.pid),
        }
    }
}

/// Why the listen address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another socket holds the address.
    #[error(
        "cannot listen on {addr}: {source}: held by {}; pass --takeover to share it during a \
         restart",
        owners_text(owners)
    )]
    InUse {
        /// The address.
        addr: SocketAddr,
        /// The probe's bind error (EADDRINUSE).
        source: io::Error,
        /// The processes found holding it (empty when none could be found).
        owners: Vec<Owner>,
    },
    /// The probe could not bind for another reason (an address not on this host, a
    /// privileged port).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: io::Error,
    },
}

fn owners_text(owners: &[Owner]) -> String {
    if owners.is_empty() {
        return "a process this user cannot see (`ss -uapn` names it)".into();
    }
    owners
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses `addr` when another socket holds it, unless `takeover` (then logs, at warn, whom
/// the address is shared with). Port 0 is never checked.
///
/// # Errors
/// [`ListenError::InUse`] naming the owners, or [`ListenError::Bind`].
pub fn check_listen(addr: SocketAddr, takeover: bool, only_v6: bool) -> Result<(), ListenError> {
    if addr.port() == 0 {
        return Ok(());
    }
    match probe(addr, only_v6) {
        Err(ListenError::InUse { owners, .. }) if takeover => tracing::warn!(
            %addr,
            shared_with = %owners_text(&owners),
            "--takeover: sharing the listen address (SO_REUSEPORT); the kernel splits clients \
             between the processes until the other one stops"
        ),
        Ok(()) if takeover => tracing::warn!(
            %addr,
            "--takeover given, but no other process holds the listen address"
        ),
        result => return result,
    }
    Ok(())
}

/// Binds and closes a socket on `addr` with the shards' options but SO_REUSEPORT (and it
/// sets no SO_REUSEADDR either).
fn probe(addr: SocketAddr, only_v6: bool) -> Result<(), ListenError> {
    let config = SocketConfig {
        reuse_port: false,
        only_v6,
        recv_buffer: 0,
        send_buffer: 0,
        gro: false,
    };
    match dtls_io::bind_udp(addr, &config) {
        Ok(bound) => {
            drop(bound);
            Ok(())
        }
        Err(dtls_io::Error::Socket { op: "bind", source })
            if source.kind() == io::ErrorKind::AddrInUse =>
        {
            Err(ListenError::InUse {
                addr,
                source,
                owners: owners(addr, Path::new("/proc")),
            })
        }
        Err(dtls_io::Error::Socket { source, .. }) => Err(ListenError::Bind { addr, source }),
        Err(other) => Err(ListenError::Bind {
            addr,
            source: io::Error::other(other.to_string()),
        }),
    }
}

/// The processes holding UDP sockets whose address conflicts with `addr`, by pid, found
/// under `proc` (normally `/proc`). Best effort: unreadable files are skipped.
pub fn owners(addr: SocketAddr, proc: &Path) -> Vec<Owner> {
    let mut inodes = Vec::new();
    for (file, v6) in [("net/udp", false), ("net/udp6", true)] {
        if let Ok(text) = std::fs::read_to_string(proc.join(file)) {
            inodes.extend(
                parse_proc_net_udp(&text, v6)
                    .into_iter()
                    .filter(|s| s.inode != 0 && conflicts(addr, s.local))
                    .map(|s| s.inode),
            );
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut found: BTreeMap<u32, Option<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(&target.to_string_lossy()))
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .ok()
                .map(|c| c.trim_end().to_owned());
            found.insert(pid, name);
        }
    }
    found
        .into_iter()
        .map(|(pid, name)| Owner { pid, name })
        .collect()
}

/// One line of `/proc/net/udp{,6}`: the local address and the socket's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSocket {
    /// The bound address.
    pub local: SocketAddr,
    /// The socket inode (0 for a socket no file refers to).
    pub inode: u64,
}

/// Parses `/proc/net/udp` (`v6 = false`) or `/proc/net/udp6`: after the header, each line
/// is `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`, the
/// address as hex words in host byte order and the port as hex. Lines that do not parse
/// are skipped.
pub fn parse_proc_net_udp(text: &str, v6: bool) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = parse_hex_addr(fields.get(1)?, v6)?;
            let inode = fields.get(9)?.parse().ok()?;
            Some(ProcSocket { local, inode })
        })
        .collect()
}

/// `0100007F:1151` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit
/// word of the address as a number in host byte order, so its native-endian bytes are the
/// address bytes in network order.
fn parse_hex_addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |n: usize| -> Option<Vec<u8>> {
        if ip.len() != 8 * n || !ip.is_ascii() {
            return None;
        }
        let mut bytes = Vec::with_capacity(4 * n);
        for i in 0..n {
            let word = u32::from_str_radix(&ip[8 * i..8 * i + 8], 16).ok()?;
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        Some(bytes)
    };
    let ip = if v6 {
        let b: [u8; 16] = words(4)?.try_into().ok()?;
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        let b: [u8; 4] = words(1)?.try_into().ok()?;
        IpAddr::V4(Ipv4Addr::from(b))
    };
    Some(SocketAddr::new(ip, port))
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether a socket bound to `theirs` may keep a bind on `ours` from succeeding: the same
/// port and overlapping addresses (equal, or one a wildcard). Ours, like the shards', is
/// IPv6-only when IPv6; theirs, when an IPv6 wildcard, may be dual stack and so overlap an
/// IPv4 address of ours (v4-mapped addresses count as IPv4).
pub fn conflicts(ours: SocketAddr, theirs: SocketAddr) -> bool {
    if ours.port() != theirs.port() {
        return false;
    }
    let (a, b) = (ours.ip().to_canonical(), theirs.ip().to_canonical());
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            a == b || a.is_unspecified() || b.is_unspecified()
        }
        (IpAddr::V4(_), IpAddr::V6(theirs)) => theirs.is_unspecified(),
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From a little-endian host: 127.0.0.1:4433, 0.0.0.0:5353 and 10.1.2.3:53.
    const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:1151 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41231 2 0000000000000000 0
  202: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 1777 2 0000000000000000 0
  303: 0302010A:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 0
garbage line
";

    /// [::1]:4433 and [::]:4433.
    const UDP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  55: 00000000000000000000000001000000:1151 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5151 2 0000000000000000 0
  66: 00000000000000000000000000000000:1151 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6161 2 0000000000000000 0
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_proc_net_udp_lines() {
        assert_eq!(
            parse_proc_net_udp(UDP, false),
            [
                ProcSocket {
                    local: addr("127.0.0.1:4433"),
                    inode: 41231
                },
                ProcSocket {
                    local: addr("0.0.0.0:5353"),
                    inode: 1777
                },
                ProcSocket {
                    local: addr("10.1.2.3:53"),
                    inode: 999
                },
            ]
        );
        assert_eq!(
            parse_proc_net_udp(UDP6, true),
            [
                ProcSocket {
                    local: addr("[::1]:4433"),
                    inode: 5151
                },
                ProcSocket {
                    local: addr("[::]:4433"),
                    inode: 6161
                },
            ]
        );
        // An IPv4 line read as IPv6 (and the reverse) is skipped, not misread.
        assert!(parse_proc_net_udp(UDP, true).is_empty());
        assert!(parse_proc_net_udp(UDP6, false).is_empty());
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[41231]"), Some(41231));
        assert_eq!(socket_inode("pipe:[41231]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn which_addresses_conflict() {
        let ours = addr("127.0.0.1:4433");
        assert!(conflicts(ours, addr("127.0.0.1:4433")));
        assert!(conflicts(ours, addr("0.0.0.0:4433")));
        assert!(conflicts(ours, addr("[::]:4433")));
        assert!(conflicts(ours, addr("[::ffff:127.0.0.1]:4433")));
        assert!(!conflicts(ours, addr("127.0.0.2:4433")));
        assert!(!conflicts(ours, addr("127.0.0.1:4434")));
        assert!(!conflicts(ours, addr("[::1]:4433")));
        assert!(conflicts(addr("0.0.0.0:4433"), addr("10.1.2.3:4433")));
        assert!(conflicts(addr("[::]:4433"), addr("[::1]:4433")));
        // Ours is IPv6-only, as the shards' sockets are.
        assert!(!conflicts(addr("[::]:4433"), addr("10.1.2.3:4433")));
        assert!(!conflicts(addr("[::1]:4433"), addr("10.1.2.3:4433")));
    }

    #[test]
    fn names_the_owner_of_a_real_socket() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let at = held.local_addr().expect("address");
        let owners = owners(at, Path::new("/proc"));
        assert!(
            owners.iter().any(|o| o.pid == std::process::id()),
            "{owners:?}"
        );
        let err = probe(at, true).expect_err("the address is held");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot listen on {at}: ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("--takeover"), "{text}");
        assert!(
            check_listen(at, true, true).is_ok(),
            "takeover never refuses"
        );
        drop(held);
        assert!(check_listen(at, false, true).is_ok(), "free once closed");
    }

    #[test]
    fn the_probe_is_ipv6_only_as_the_shards_are() {
        // An IPv4 wildcard socket does not keep the shards (IPV6_V6ONLY) off [::]:port, so
        // it must not stop the probe either.
        let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        let port = v6.local_addr().expect("address").port();
        drop(v6);
        let Ok(held) = std::net::UdpSocket::bind(("0.0.0.0", port)) else {
            return; // the port was taken in between
        };
        let wildcard = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        assert!(check_listen(wildcard, false, true).is_ok());
        // A dual-stack daemon would take that port's IPv4 clients too: refused.
        assert!(matches!(
            check_listen(wildcard, false, false),
            Err(ListenError::InUse { .. })
        ));
        drop(held);
    }

    #[test]
    fn other_bind_failures_are_not_called_in_use() {
        // 192.0.2.1 (TEST-NET-1) is on no interface here.
        let err = check_listen(addr("192.0.2.1:4433"), true, true).expect_err("not local");
        assert!(matches!(err, ListenError::Bind { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot listen on 192.0.2.1:4433: "),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_owner_is_said_so() {
        let err = ListenError::InUse {
            addr: addr("127.0.0.1:4433"),
            source: io::Error::from(io::ErrorKind::AddrInUse),
            owners: Vec::new(),
        };
        assert!(err.to_string().contains("cannot see"), "{err}");
    }
}
