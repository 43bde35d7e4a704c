//! DTLS 1.3 connection IDs (RFC 9147 §9, on the connection_id extension of RFC 9146 §3).
//!
//! Negotiation: the client offers the CID it wants to receive in its ClientHello, the
//! server answers with its own in the ServerHello (RFC 9146 registers connection_id for
//! "CH, SH" in TLS 1.3; wolfSSL, the one other DTLS 1.3 stack with CIDs, accepts it in no
//! other message). Each side then puts the other's CID in the unified header of every
//! protected record it sends (RFC 9147 §4: the C bit), from the handshake epoch (2) on: the
//! plaintext records of epoch 0 have no room for one. An empty CID means "send me none".
//!
//! After the handshake (RFC 9147 §9): NewConnectionId gives the peer more CIDs of ours,
//! RequestConnectionId asks the peer for more of its own. We answer a request with CIDs
//! from the engine's [`CidIssuer`] (the driver's, so that they name the session's owner),
//! keeping at most [`MAX_ISSUED_CIDS`] unused at the peer and issuing at most
//! [`MAX_CIDS_PER_SESSION`] over a session; we keep at most [`MAX_SPARE_CIDS`] spare CIDs
//! of the peer and switch to the first CID of a cid_immediate NewConnectionId. Both
//! changes reach the driver as [`Event::ConnectionIds`].
//!
//! Spares are used up by address changes (the driver's data plane puts the peer's next
//! spare in its records on each new path, RFC 9147 §9), so both sides keep them topped
//! up, in either role: when the peer moves on to a later CID of ours and the driver
//! retires the earlier ones ([`Core13::retire_connection_ids`]) we replace them unasked;
//! when the driver rotates to a spare of the peer ([`Core13::peer_cid_rotated`]) and
//! fewer than [`SPARE_CIDS_LOW`] are left we ask for more.

use std::collections::VecDeque;
use std::time::Instant;

use dtls_proto::HandshakeType;
use dtls_proto::tls13::{ConnectionIdUsage, NewConnectionId, RequestConnectionId};

use super::Core13;
use crate::error::HandshakeError;
use crate::events::{CidUpdate, Event};

/// CIDs we issued in NewConnectionId that the peer holds unused (issued, not retired by a
/// switch to a later one) (RFC 9147 §9: "An endpoint MAY handle requests which it
/// considers excessive by responding with a NewConnectionId message containing fewer than
/// num_cids CIDs, including no CIDs at all"). The data plane indexes as many
/// (`dtls_shard::MAX_EXTRA_CIDS`).
pub(crate) const MAX_ISSUED_CIDS: usize = 8;

/// CIDs we issue in NewConnectionId over a session's life, replacements included: a peer
/// that keeps moving (or claims to) cannot make us issue CIDs without end.
pub(crate) const MAX_CIDS_PER_SESSION: usize = 256;

/// Spare CIDs of the peer under which we ask it for more (RequestConnectionId) after a
/// rotation used one up: one for the next address change and one for the change after
/// it, while the request is answered.
pub(crate) const SPARE_CIDS_LOW: usize = 2;

/// Spare CIDs of the peer we keep (RFC 9147 §9: "Implementations which receive more spare
/// CIDs than they wish to maintain MAY simply discard any extra CIDs").
pub(crate) const MAX_SPARE_CIDS: usize = 8;

/// The connection IDs of a DTLS 1.3 session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cids13 {
    /// Ours, which the peer may put in its records to us: the handshake's first, then those
    /// we issued in NewConnectionId; all of one length (the first's), empty when we asked
    /// for none.
    pub(crate) local: Vec<Vec<u8>>,
    /// The peer's CID we put in our records (none when empty).
    pub(crate) peer: Vec<u8>,
    /// Spare CIDs the peer gave us, in the order it gave them.
    pub(crate) spare: VecDeque<Vec<u8>>,
    /// Our RequestConnectionId is not answered yet (RFC 9147 §9: "Endpoints MUST NOT send
    /// a RequestConnectionId message when an existing request is still unfulfilled").
    pub(crate) requested: bool,
    /// Both sides exchanged the `rrc` extension (RFC 9853 §3) in the hellos.
    pub(crate) rrc: bool,
    /// CIDs the peer asked for (RequestConnectionId) while another post-handshake flight
    /// of ours was under way: answered once it is acknowledged.
    pub(crate) asked: Option<u8>,
    /// CIDs of ours the peer retired (it moved on to a later one) that are not replaced
    /// yet: another flight of ours was under way.
    pub(crate) replace: usize,
    /// CIDs we issued in NewConnectionId over the session (at most
    /// [`MAX_CIDS_PER_SESSION`]).
    pub(crate) issued_total: usize,
    /// Spare CIDs of the peer we want to hold: the most we asked for
    /// ([`Core13::request_connection_ids`]); a top-up asks for what is missing.
    pub(crate) want_cids: u8,
    /// A top-up request (RequestConnectionId) waits for the flight under way.
    pub(crate) top_up: bool,
}

impl Cids13 {
    pub(crate) fn new(local: Vec<u8>, peer: Vec<u8>) -> Self {
        Self {
            local: vec![local],
            peer,
            spare: VecDeque::new(),
            requested: false,
            rrc: false,
            asked: None,
            replace: 0,
            issued_total: 0,
            want_cids: 0,
            top_up: false,
        }
    }

    /// Our CIDs the peer holds unused: all but the one it uses (the oldest not retired).
    pub(crate) fn issued_live(&self) -> usize {
        self.local.len().saturating_sub(1)
    }

    /// How many of `wanted` new CIDs we may issue now, within [`MAX_ISSUED_CIDS`] unused
    /// at the peer and [`MAX_CIDS_PER_SESSION`] over the session.
    fn issuable(&self, wanted: usize) -> usize {
        wanted
            .min(MAX_ISSUED_CIDS.saturating_sub(self.issued_live()))
            .min(MAX_CIDS_PER_SESSION.saturating_sub(self.issued_total))
    }

    /// The length of our CIDs (0: the peer sends none).
    pub(crate) fn local_len(&self) -> usize {
        self.local.first().map_or(0, Vec::len)
    }

    /// Whether `cid` is one of ours.
    pub(crate) fn is_local(&self, cid: &[u8]) -> bool {
        self.local.iter().any(|c| c == cid)
    }
}

impl Core13 {
    /// Both CIDs are known (client: from the ServerHello; server: when it sends its own):
    /// records of the handshake epoch on carry them.
    pub(crate) fn negotiate_cids(&mut self, local: Vec<u8>, peer: Vec<u8>) {
        self.transport.set_cids(peer.clone(), local.len());
        self.cids = Some(Cids13::new(local, peer));
    }

    /// Whether a protected record whose unified header carries `cid` (`None`: no C bit)
    /// may be ours: RFC 9147 §4 puts the negotiated CID in every protected record, so one
    /// without it (or with an unknown one) is not this session's.
    pub(crate) fn admits_cid(&self, cid: Option<&[u8]>) -> bool {
        match (&self.cids, cid) {
            (Some(cids), Some(cid)) => cids.local_len() > 0 && cids.is_local(cid),
            (Some(cids), None) => cids.local_len() == 0,
            (None, cid) => cid.is_none(),
        }
    }

    /// RFC 9147 §9: "Endpoints MUST NOT send either of these messages if they did not
    /// negotiate a CID. If an implementation receives these messages when CIDs were not
    /// negotiated, it MUST abort the connection with an "unexpected_message" alert."
    fn negotiated_cids(&mut self, got: HandshakeType) -> Result<&mut Cids13, HandshakeError> {
        self.cids.as_mut().ok_or(HandshakeError::UnexpectedMessage {
            state: "Established without connection IDs",
            got: got.to_u8(),
        })
    }

    /// The peer's RequestConnectionId: new CIDs of ours in a NewConnectionId (cid_spare),
    /// as many as asked within [`MAX_ISSUED_CIDS`] over the session.
    pub(crate) fn handle_request_connection_id(
        &mut self,
        now: Instant,
        body: &[u8],
    ) -> Result<(), HandshakeError> {
        let request =
            RequestConnectionId::parse(body).map_err(|source| HandshakeError::Decode {
                message: "RequestConnectionId",
                source,
            })?;
        let cids = self.negotiated_cids(HandshakeType::RequestConnectionId)?;
        let len = cids.local_len();
        // RFC 9147 §9: "Implementations MUST NOT send RequestConnectionId when sending an
        // empty Connection ID": a peer that sends us none cannot ask for more.
        if len == 0 {
            return Err(HandshakeError::UnexpectedMessage {
                state: "Established with an empty connection ID of ours",
                got: HandshakeType::RequestConnectionId.to_u8(),
            });
        }
        // The request is acknowledged (RFC 9147 §7: post-handshake messages are).
        self.send_ack();
        self.to_ack.clear();
        if self.flight_busy() {
            // Another flight of ours (a NewSessionTicket, a KeyUpdate, our previous
            // answer) is still in flight: one flight at a time, so the request is
            // answered once that one is acknowledged ([`Self::answer_connection_ids`]);
            // of requests made meanwhile the latest counts (within the session's bound).
            self.negotiated_cids(HandshakeType::RequestConnectionId)?
                .asked = Some(request.num_cids);
            return Ok(());
        }
        self.issue_connection_ids(now, usize::from(request.num_cids), true)
    }

    /// What waited for our flight under way, now that none is (called after each ACK): a
    /// RequestConnectionId of the peer or retired CIDs of ours to replace (one
    /// NewConnectionId for both), else a top-up request of ours.
    pub(crate) fn answer_connection_ids(&mut self, now: Instant) -> Result<(), HandshakeError> {
        let busy = self.flight_busy();
        let Some(cids) = self.cids.as_mut() else {
            return Ok(());
        };
        if busy {
            return Ok(());
        }
        let asked = cids.asked.take();
        let replace = std::mem::take(&mut cids.replace);
        if asked.is_some() || replace > 0 {
            let count = asked.map_or(0, usize::from) + replace;
            return self.issue_connection_ids(now, count, asked.is_some());
        }
        if std::mem::take(&mut cids.top_up) {
            self.top_up_peer_cids(now)?;
        }
        Ok(())
    }

    /// NewConnectionId (cid_spare) with `wanted` new CIDs of ours, within
    /// [`MAX_ISSUED_CIDS`] unused at the peer and [`MAX_CIDS_PER_SESSION`] over the
    /// session. An `answer` to a RequestConnectionId goes out even when it carries none;
    /// an unasked one (replacements) only with CIDs.
    fn issue_connection_ids(
        &mut self,
        now: Instant,
        wanted: usize,
        answer: bool,
    ) -> Result<(), HandshakeError> {
        let cids = self.negotiated_cids(HandshakeType::RequestConnectionId)?;
        let len = cids.local_len();
        let count = cids.issuable(wanted);
        if count == 0 && !answer {
            return Ok(());
        }
        let mut new = Vec::with_capacity(count);
        while new.len() < count {
            let cid = self.issuer.issue(len, &mut *self.rng);
            let cids = self.negotiated_cids(HandshakeType::RequestConnectionId)?;
            // A CID of the wrong length could not be found in our records (their CIDs
            // have no length field), and a repeated one names nothing new.
            if cid.len() != len || cids.is_local(&cid) || new.contains(&cid) {
                break;
            }
            new.push(cid);
        }
        if new.is_empty() && !answer {
            return Ok(());
        }
        // RFC 9147 §9: "Endpoints SHOULD respond to RequestConnectionId by sending a
        // NewConnectionId with usage "cid_spare" containing num_cids CIDs as soon as
        // possible" (fewer, or none, once we issued our share); unasked, "either side can
        // send a new CID that it wishes the other side to use in a NewConnectionId
        // message".
        let message = NewConnectionId {
            cids: new.clone(),
            usage: ConnectionIdUsage::Spare,
        };
        let mut body = Vec::new();
        message
            .emit(&mut body)
            .map_err(|_| HandshakeError::Internal {
                what: "NewConnectionId too long",
            })?;
        let epoch = self.transport.write_epoch();
        let out = self.out_message(epoch, HandshakeType::NewConnectionId, body);
        self.send_flight(now, vec![out])?;
        if !new.is_empty() {
            let cids = self.negotiated_cids(HandshakeType::RequestConnectionId)?;
            cids.local.extend(new.iter().cloned());
            cids.issued_total += new.len();
            self.events
                .push_back(Event::ConnectionIds(Box::new(CidUpdate {
                    issued: new,
                    ..CidUpdate::default()
                })));
        }
        Ok(())
    }

    /// The driver retired `retired`, CIDs of ours, because the peer moved on to a later
    /// one (it uses receiver-provided CIDs in order, RFC 9147 §9, so it never goes back):
    /// they are forgotten, and as many fresh ones are issued unasked (now, or once our
    /// flight under way is acknowledged) so that the peer keeps spares for its next move,
    /// within [`MAX_ISSUED_CIDS`] and [`MAX_CIDS_PER_SESSION`]. Returns how many were
    /// ours (CIDs we do not know are ignored, as is everything without CIDs).
    pub(crate) fn retire_connection_ids(
        &mut self,
        now: Instant,
        retired: &[Vec<u8>],
    ) -> Result<usize, HandshakeError> {
        let established = self.is_established();
        let busy = self.flight_busy();
        let Some(cids) = self.cids.as_mut().filter(|_| established) else {
            return Ok(0);
        };
        let before = cids.local.len();
        // The CID the peer uses now is never among them; one CID always stays (its
        // length is that of every CID of ours).
        for cid in retired {
            if cids.local.len() > 1
                && let Some(at) = cids.local.iter().position(|c| c == cid)
            {
                cids.local.remove(at);
            }
        }
        let gone = before - cids.local.len();
        if gone == 0 {
            return Ok(0);
        }
        if busy {
            cids.replace += gone;
            return Ok(gone);
        }
        self.issue_connection_ids(now, gone, false)?;
        Ok(gone)
    }

    /// The driver put `cid`, the peer's oldest spare, in our records after an address
    /// change: our own records (ACKs, post-handshake messages) carry it from now on (the
    /// peer may retire the CID we used before as soon as it sees the new one), the spares
    /// up to it are used up, and when fewer than [`SPARE_CIDS_LOW`] are left the peer is
    /// asked for more (now, or once our flight under way is acknowledged). Returns
    /// whether such a request was made.
    pub(crate) fn peer_cid_rotated(
        &mut self,
        now: Instant,
        cid: &[u8],
    ) -> Result<bool, HandshakeError> {
        let established = self.is_established();
        let Some(cids) = self.cids.as_mut().filter(|_| established) else {
            return Ok(false);
        };
        if cid.is_empty() || cids.peer.is_empty() || cids.peer == cid {
            return Ok(false);
        }
        if let Some(at) = cids.spare.iter().position(|c| c == cid) {
            cids.spare.drain(..=at);
        }
        cids.peer = cid.to_vec();
        let local_len = cids.local_len();
        self.transport.set_cids(cid.to_vec(), local_len);
        let busy = self.flight_busy();
        let cids = self.negotiated_cids(HandshakeType::NewConnectionId)?;
        if cids.spare.len() >= SPARE_CIDS_LOW || cids.requested || cids.top_up {
            return Ok(false);
        }
        if busy {
            cids.top_up = true;
            return Ok(true);
        }
        self.top_up_peer_cids(now)
    }

    /// Asks the peer for the spare CIDs missing to [`Cids13::want_cids`] (at least
    /// [`SPARE_CIDS_LOW`]). Returns whether the request went out.
    fn top_up_peer_cids(&mut self, now: Instant) -> Result<bool, HandshakeError> {
        let Some(cids) = self.cids.as_ref() else {
            return Ok(false);
        };
        // SPARE_CIDS_LOW (2) <= MAX_SPARE_CIDS (8): clamp cannot panic.
        let want = usize::from(cids.want_cids).clamp(SPARE_CIDS_LOW, MAX_SPARE_CIDS);
        let missing = want.saturating_sub(cids.spare.len());
        let count = u8::try_from(missing).unwrap_or(u8::MAX);
        self.send_request(now, count)
    }

    /// The peer's NewConnectionId: spare CIDs kept, or (cid_immediate) the first one used
    /// in our records from now on.
    pub(crate) fn handle_new_connection_id(&mut self, body: &[u8]) -> Result<(), HandshakeError> {
        let message = NewConnectionId::parse(body).map_err(|source| HandshakeError::Decode {
            message: "NewConnectionId",
            source,
        })?;
        let cids = self.negotiated_cids(HandshakeType::NewConnectionId)?;
        // RFC 9147 §9: "Implementations which either did not negotiate the
        // "connection_id" extension or which have negotiated receiving an empty CID MUST
        // NOT send NewConnectionId. ... Implementations which detect a violation of these
        // rules MUST terminate the connection with an "unexpected_message" alert."
        if cids.peer.is_empty() {
            return Err(HandshakeError::UnexpectedMessage {
                state: "Established with an empty connection ID of the peer",
                got: HandshakeType::NewConnectionId.to_u8(),
            });
        }
        cids.requested = false;
        let max = usize::from(crate::config::MAX_CID_LEN);
        let mut fresh = message
            .cids
            .into_iter()
            .filter(|c| !c.is_empty() && c.len() <= max);
        let mut switched = None;
        if message.usage == ConnectionIdUsage::Immediate {
            // RFC 9147 §9: "If usage is set to "cid_immediate", then one of the new CIDs
            // MUST be used immediately for all future records."
            let first = fresh.next().ok_or(HandshakeError::IllegalParameter {
                what: "cid_immediate NewConnectionId without a usable CID",
            })?;
            cids.peer = first.clone();
            switched = Some(first);
        }
        let mut spare = Vec::new();
        for cid in fresh {
            if cids.spare.len() >= MAX_SPARE_CIDS {
                break;
            }
            if cid != cids.peer && !cids.spare.contains(&cid) {
                cids.spare.push_back(cid.clone());
                spare.push(cid);
            }
        }
        let local_len = cids.local_len();
        if let Some(peer) = &switched {
            self.transport.set_cids(peer.clone(), local_len);
        }
        if switched.is_some() || !spare.is_empty() {
            self.events
                .push_back(Event::ConnectionIds(Box::new(CidUpdate {
                    issued: Vec::new(),
                    peer: switched,
                    spare,
                })));
        }
        // RFC 9147 §7: post-handshake messages are acknowledged.
        self.send_ack();
        self.to_ack.clear();
        Ok(())
    }

    /// Asks the peer for `count` more of its CIDs (RFC 9147 §9, RequestConnectionId).
    /// Returns whether the request went out: not before completion, without a non-empty
    /// CID of ours (RFC 9147 §9: "Implementations MUST NOT send RequestConnectionId when
    /// sending an empty Connection ID"), while an earlier request is unanswered or another
    /// post-handshake flight of ours is under way.
    pub(crate) fn request_connection_ids(
        &mut self,
        now: Instant,
        count: u8,
    ) -> Result<bool, HandshakeError> {
        if let Some(cids) = self.cids.as_mut() {
            let count = usize::from(count).min(MAX_SPARE_CIDS);
            cids.want_cids = cids.want_cids.max(u8::try_from(count).unwrap_or(u8::MAX));
        }
        self.send_request(now, count)
    }

    /// RequestConnectionId for `count` CIDs, when [`Self::request_connection_ids`]'s
    /// rules allow it.
    fn send_request(&mut self, now: Instant, count: u8) -> Result<bool, HandshakeError> {
        let ready = self.is_established() && !self.flight_busy();
        let Some(cids) = self.cids.as_mut().filter(|c| ready && !c.requested) else {
            return Ok(false);
        };
        if cids.peer.is_empty() || count == 0 {
            return Ok(false);
        }
        cids.requested = true;
        let mut body = Vec::with_capacity(1);
        RequestConnectionId { num_cids: count }.emit(&mut body);
        let epoch = self.transport.write_epoch();
        let out = self.out_message(epoch, HandshakeType::RequestConnectionId, body);
        self.send_flight(now, vec![out])?;
        Ok(true)
    }
}
