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
//! at most [`MAX_ISSUED_CIDS`] over a session; we keep at most [`MAX_SPARE_CIDS`] spare
//! CIDs of the peer and switch to the first CID of a cid_immediate NewConnectionId. Both
//! changes reach the driver as [`Event::ConnectionIds`].

use std::collections::VecDeque;
use std::time::Instant;

use dtls_proto::HandshakeType;
use dtls_proto::tls13::{ConnectionIdUsage, NewConnectionId, RequestConnectionId};

use super::Core13;
use crate::error::HandshakeError;
use crate::events::{CidUpdate, Event};

/// CIDs we hand out in NewConnectionId over one session, beyond the handshake's (RFC 9147
/// §9: "An endpoint MAY handle requests which it considers excessive by responding with a
/// NewConnectionId message containing fewer than num_cids CIDs, including no CIDs at
/// all").
pub(crate) const MAX_ISSUED_CIDS: usize = 8;

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
    /// Both sides exchanged the `rrc` extension (RFC 9853 §4) in the hellos.
    pub(crate) rrc: bool,
    /// CIDs the peer asked for (RequestConnectionId) while another post-handshake flight
    /// of ours was under way: answered once it is acknowledged.
    pub(crate) asked: Option<u8>,
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
        }
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
        if !self.flight.is_empty() {
            // Another flight of ours (a NewSessionTicket, a KeyUpdate, our previous
            // answer) is still in flight: one flight at a time, so the request is
            // answered once that one is acknowledged ([`Self::answer_connection_ids`]);
            // of requests made meanwhile the latest counts (within the session's bound).
            self.negotiated_cids(HandshakeType::RequestConnectionId)?
                .asked = Some(request.num_cids);
            return Ok(());
        }
        self.issue_connection_ids(now, request.num_cids)
    }

    /// A RequestConnectionId that came while another flight of ours was under way, now
    /// that none is (called after each post-handshake record).
    pub(crate) fn answer_connection_ids(&mut self, now: Instant) -> Result<(), HandshakeError> {
        let Some(cids) = self.cids.as_mut() else {
            return Ok(());
        };
        if !self.flight.is_empty() {
            return Ok(());
        }
        match cids.asked.take() {
            Some(count) => self.issue_connection_ids(now, count),
            None => Ok(()),
        }
    }

    /// NewConnectionId (cid_spare) with `asked` new CIDs of ours, within
    /// [`MAX_ISSUED_CIDS`] over the session.
    fn issue_connection_ids(&mut self, now: Instant, asked: u8) -> Result<(), HandshakeError> {
        let cids = self.negotiated_cids(HandshakeType::RequestConnectionId)?;
        let len = cids.local_len();
        let issued = cids.local.len() - 1;
        let count = usize::from(asked).min(MAX_ISSUED_CIDS.saturating_sub(issued));
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
        // RFC 9147 §9: "Endpoints SHOULD respond to RequestConnectionId by sending a
        // NewConnectionId with usage "cid_spare" containing num_cids CIDs as soon as
        // possible" (fewer, or none, once we issued our share).
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
            self.negotiated_cids(HandshakeType::RequestConnectionId)?
                .local
                .extend(new.iter().cloned());
            self.events
                .push_back(Event::ConnectionIds(Box::new(CidUpdate {
                    issued: new,
                    peer: None,
                })));
        }
        Ok(())
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
        for cid in fresh {
            if cids.spare.len() >= MAX_SPARE_CIDS {
                break;
            }
            if cid != cids.peer && !cids.spare.contains(&cid) {
                cids.spare.push_back(cid);
            }
        }
        let local_len = cids.local_len();
        if let Some(peer) = switched {
            self.transport.set_cids(peer.clone(), local_len);
            self.events
                .push_back(Event::ConnectionIds(Box::new(CidUpdate {
                    issued: Vec::new(),
                    peer: Some(peer),
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
        let ready = self.is_established() && self.flight.is_empty();
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
