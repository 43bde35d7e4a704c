//! systemd socket activation (`sd_listen_fds(3)`): when `LISTEN_PID` names this process,
//! the `LISTEN_FDS` descriptors from 3 on are the listen sockets systemd (a `.socket` unit,
//! or `systemd-socket-activate`) bound for us.
//!
//! [`receive`] runs first thing in `main`, before any thread exists (it removes the two
//! variables from the environment): each descriptor must be a UDP datagram socket
//! (`listenfd` checks `SO_TYPE` and the family), bound to one of the configured listen
//! addresses; anything else stops start-up naming the descriptor. [`Activated::take`] then
//! hands the socket of a listen address to the first shard of that address in
//! `crate::daemon`; the address's other shards bind new SO_REUSEPORT sockets beside it, which
//! the kernel allows only when the activated socket has SO_REUSEPORT too (`ReusePort=yes` in
//! the `.socket` unit): without it an address may have one shard only, and more is refused
//! with that reason. Addresses without an activated socket are bound as usual. The
//! activated socket keeps the options its creator set (buffer sizes: `ReceiveBuffer=`);
//! the start-up probe for another owner of the address is skipped for it (we hold it).

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, anyhow, bail};

/// What [`receive`] found, for `crate::daemon` (a daemon started in-process by a benchmark
/// or test never calls [`receive`]: every address is bound as usual).
static PASSED: OnceLock<Activated> = OnceLock::new();

/// Takes the sockets passed to this process (see [`Activated::receive`]) for the daemon
/// started next. Call it before any thread starts.
///
/// # Errors
/// As [`Activated::receive`].
pub fn receive(listen: &[SocketAddr]) -> anyhow::Result<()> {
    let activated = Activated::receive(listen)?;
    PASSED
        .set(activated)
        .map_err(|_| anyhow!("socket activation: sockets received twice"))
}

/// The sockets [`receive`] took, if it ran.
pub fn passed() -> Option<&'static Activated> {
    PASSED.get()
}

/// The sockets passed in, by local address, until the shards take them.
#[derive(Debug, Default)]
pub struct Activated {
    sockets: Mutex<Vec<(SocketAddr, UdpSocket)>>,
}

impl Activated {
    /// Takes the passed sockets when `LISTEN_PID` is this process (none otherwise, and
    /// none when `LISTEN_PID` is missing: the variables then belong to someone else).
    /// Each must be a UDP socket bound to one of `listen`.
    ///
    /// # Errors
    /// A descriptor that is not a bound UDP socket, or whose address is not in `listen`.
    pub fn receive(listen: &[SocketAddr]) -> anyhow::Result<Self> {
        let ours = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            == Some(std::process::id());
        let mut fds = listenfd::ListenFd::from_env();
        if !ours {
            return Ok(Self::default());
        }
        let mut sockets = Vec::with_capacity(fds.len());
        for index in 0..fds.len() {
            let fd = 3 + index;
            let socket = fds
                .take_udp_socket(index)
                .with_context(|| format!("socket activation: fd {fd}"))?
                .ok_or_else(|| anyhow!("socket activation: fd {fd} was already taken"))?;
            let addr = socket
                .local_addr()
                .with_context(|| format!("socket activation: fd {fd}"))?;
            if !listen.contains(&addr) {
                bail!(
                    "socket activation: fd {fd} is bound to {addr}, which is not a listen \
                     address ({}); make the .socket unit's ListenDatagram= and listen agree",
                    listen
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if sockets.iter().any(|(a, _)| *a == addr) {
                bail!("socket activation: two sockets for {addr}");
            }
            tracing::info!(fd, %addr, "listen socket from socket activation");
            sockets.push((addr, socket));
        }
        Ok(Self {
            sockets: Mutex::new(sockets),
        })
    }

    /// Whether a socket for `addr` was passed (and not taken yet).
    pub fn has(&self, addr: SocketAddr) -> bool {
        self.sockets
            .lock()
            .is_ok_and(|s| s.iter().any(|(a, _)| *a == addr))
    }

    /// The passed socket for `addr`, once, checked to allow `shards` sockets on its address.
    ///
    /// # Errors
    /// More than one shard for the address and the socket lacks SO_REUSEPORT.
    pub fn take(&self, addr: SocketAddr, shards: usize) -> anyhow::Result<Option<UdpSocket>> {
        let mut sockets = self
            .sockets
            .lock()
            .map_err(|_| anyhow!("socket activation: poisoned"))?;
        let Some(index) = sockets.iter().position(|(a, _)| *a == addr) else {
            return Ok(None);
        };
        let (_, socket) = sockets.swap_remove(index);
        if shards > 1 {
            let reuse = nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::ReusePort)
                .with_context(|| format!("socket activation: SO_REUSEPORT of {addr}"))?;
            if !reuse {
                bail!(
                    "socket activation: the socket for {addr} has no SO_REUSEPORT, so its {shards} \
                     shards cannot bind beside it: set ReusePort=yes in the .socket unit, or \
                     --shards to the number of listen addresses"
                );
            }
        }
        Ok(Some(socket))
    }
}
