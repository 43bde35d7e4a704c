//! Operator requests to the control loop (`dtlsd status`, `dtlsd kick`): what control knows
//! of each installed session, and closing sessions on request.
//!
//! An admin thread sends an [`AdminRequest`] through the channel given to
//! [`crate::ControlThread::set_admin`]; the loop answers it at its next turn on the reply
//! channel the request carries. Per-session traffic counters are the shards' (see
//! `dtls_shard::SessionSnapshots`): the admin thread joins the two by [`SessionId`].

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::Instant;

use control::{CipherSuite, PeerIdentity};
use dtls_shard::{CloseCause, SessionId};

use crate::{ControlThread, Installed};

/// A question or an order for the control loop.
#[derive(Debug)]
pub enum AdminRequest {
    /// Every installed session, answered on the channel.
    Sessions(mpsc::Sender<Vec<SessionInfo>>),
    /// Close the sessions `target` names with close_notify; answered with their handles
    /// (empty when none matched).
    Kick {
        /// Which sessions.
        target: KickTarget,
        /// Where the closed sessions' handles go.
        reply: mpsc::Sender<Vec<SessionId>>,
    },
}

/// Which sessions a kick closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickTarget {
    /// The session with this handle.
    Session(SessionId),
    /// The session of this peer address and port (serve) or local source (connect).
    Peer(SocketAddr),
    /// Every session of this peer IP address, whatever the port.
    Address(IpAddr),
}

impl KickTarget {
    fn matches(self, id: SessionId, session: &Installed) -> bool {
        match self {
            KickTarget::Session(s) => s == id,
            KickTarget::Peer(peer) => session.peer == peer,
            KickTarget::Address(ip) => session.peer.ip() == ip,
        }
    }
}

/// What control knows of one installed session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Its handle (the shard's views carry the same).
    pub session: SessionId,
    /// The peer (serve) or local source (connect) it was installed under.
    pub peer: SocketAddr,
    /// The shard that runs it.
    pub shard: usize,
    /// When its keys were installed.
    pub established: Instant,
    /// Who the peer proved to be.
    pub identity: PeerIdentity,
    /// "1.2" or "1.3".
    pub version: &'static str,
    /// The negotiated suite.
    pub suite: CipherSuite,
    /// Our connection ID, when the session has one.
    pub cid: Option<Vec<u8>>,
}

impl ControlThread {
    /// Answers operator requests from `admin` at each turn (see [`AdminRequest`]).
    pub fn set_admin(&mut self, admin: mpsc::Receiver<AdminRequest>) {
        self.admin = Some(admin);
    }

    /// Answers the pending admin requests. Returns whether there were any.
    pub(crate) fn handle_admin(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(request) = self.admin.as_ref().and_then(|a| a.try_recv().ok()) {
            busy = true;
            match request {
                AdminRequest::Sessions(reply) => {
                    let sessions = self
                        .installed
                        .iter()
                        .map(|(id, s)| SessionInfo {
                            session: *id,
                            peer: s.peer,
                            shard: s.shard,
                            established: s.established,
                            identity: s.identity.clone(),
                            version: s.version,
                            suite: s.suite,
                            cid: s.cid.clone(),
                        })
                        .collect();
                    // The asker may have given up waiting: nothing to do then.
                    let _ = reply.send(sessions);
                }
                AdminRequest::Kick { target, reply } => {
                    let mut ids: Vec<SessionId> = self
                        .installed
                        .iter()
                        .filter(|(id, s)| target.matches(**id, s))
                        .map(|(id, _)| *id)
                        .collect();
                    ids.sort_unstable();
                    for &id in &ids {
                        self.close_session(now, id, CloseCause::Requested);
                    }
                    let _ = reply.send(ids);
                }
            }
        }
        busy
    }
}
