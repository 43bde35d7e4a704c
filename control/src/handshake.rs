//! State shared by both roles during one handshake: randoms, transcript, negotiated
//! parameters, key material, message sequence numbers and the incoming message queue.

use dataplane::record::RecordKey;
use dtls_crypto::pki_types::CertificateDer;
use dtls_crypto::{EphemeralKeyPair, Sender, Transcript};
use dtls_proto::{
    HandshakeMessage, HeartbeatMode, RANDOM_LEN, SignatureScheme, SrtpProtectionProfile,
    SuiteParams, VERIFY_DATA_LEN,
};

use crate::connection::Role;
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::flight::{Flight, OutMessage};
use crate::inbox::Inbox;
use crate::keys::session::{EpochKeyBlock, MasterBytes, Writer};
use crate::keys::ticket::SessionTicket;
use crate::record_layer::RecordWriter;

/// One complete, reassembled handshake message from the peer.
pub(crate) type Message = dtls_proto::ReassembledMessage;

/// Everything one handshake accumulates.
#[derive(Debug)]
pub(crate) struct Handshake {
    pub(crate) transcript: Transcript,
    pub(crate) client_random: [u8; RANDOM_LEN],
    pub(crate) server_random: [u8; RANDOM_LEN],
    pub(crate) session_id: Vec<u8>,
    pub(crate) suite: Option<SuiteParams>,
    pub(crate) extended_master_secret: bool,
    pub(crate) ecdhe: Option<EphemeralKeyPair>,
    /// The peer's ECDHE public value.
    pub(crate) peer_public: Vec<u8>,
    pub(crate) master: Option<MasterBytes>,
    pub(crate) keys: Option<EpochKeyBlock>,
    pub(crate) writer: RecordWriter,
    /// Our next handshake message_seq (RFC 6347 §4.2.2).
    pub(crate) next_send_seq: u16,
    pub(crate) inbox: Inbox,
    /// The flight we sent last.
    pub(crate) flight: Flight,
    /// The peer's ChangeCipherSpec arrived before the state machine was ready for it.
    pub(crate) ccs_pending: bool,
    pub(crate) peer_chain: Vec<CertificateDer<'static>>,
    pub(crate) peer_identity: PeerIdentity,
    /// Server: we sent CertificateRequest. Client: the server asked for a certificate.
    pub(crate) cert_requested: bool,
    /// Client: signature schemes from the server's CertificateRequest.
    pub(crate) cert_request_schemes: Vec<SignatureScheme>,
    pub(crate) psk_identity: Option<Vec<u8>>,
    pub(crate) psk_identity_hint: Option<Vec<u8>>,
    /// Server: the PSK identity the client named, known or not (for logs).
    pub(crate) claimed_psk_identity: Option<Vec<u8>>,
    /// Server: the host name the client sent in server_name (RFC 6066 §3), for logs.
    pub(crate) server_name: Option<String>,
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) srtp_profile: Option<SrtpProtectionProfile>,
    pub(crate) heartbeat: Option<HeartbeatMode>,
    /// Client: the ticket we offered for resumption. Server: unused.
    pub(crate) offered_ticket: Option<SessionTicket>,
    /// Server: issue a NewSessionTicket in this handshake. Client: the server promised one.
    pub(crate) send_ticket: bool,
    /// Client: the ticket received in this handshake.
    pub(crate) new_ticket: Option<(u32, Vec<u8>)>,
    /// Abbreviated handshake.
    pub(crate) resumed: bool,
    /// Client: HelloVerifyRequests answered so far.
    pub(crate) hello_verify_count: u8,
    /// Client: the ClientHello we sent (resent with the cookie).
    pub(crate) client_hello: Option<dtls_proto::ClientHello>,
}

impl Handshake {
    pub(crate) fn new(writer: RecordWriter, inbox: Inbox) -> Self {
        Self {
            transcript: Transcript::new(),
            client_random: [0; RANDOM_LEN],
            server_random: [0; RANDOM_LEN],
            session_id: Vec::new(),
            suite: None,
            extended_master_secret: false,
            ecdhe: None,
            peer_public: Vec::new(),
            master: None,
            keys: None,
            writer,
            next_send_seq: 0,
            inbox,
            flight: Flight::default(),
            ccs_pending: false,
            peer_chain: Vec::new(),
            peer_identity: PeerIdentity::None,
            cert_requested: false,
            cert_request_schemes: Vec::new(),
            psk_identity: None,
            psk_identity_hint: None,
            claimed_psk_identity: None,
            server_name: None,
            alpn: None,
            srtp_profile: None,
            heartbeat: None,
            offered_ticket: None,
            send_ticket: false,
            new_ticket: None,
            resumed: false,
            hello_verify_count: 0,
            client_hello: None,
        }
    }

    pub(crate) fn suite(&self) -> Result<SuiteParams, HandshakeError> {
        self.suite.ok_or(HandshakeError::Internal {
            what: "no suite negotiated",
        })
    }

    pub(crate) fn master(&self) -> Result<&MasterBytes, HandshakeError> {
        self.master.as_ref().ok_or(HandshakeError::Internal {
            what: "no master secret",
        })
    }

    /// Appends `message` to `flight` with the next message_seq and adds it to the
    /// transcript.
    pub(crate) fn push_message(
        &mut self,
        flight: &mut Flight,
        epoch: u16,
        message: &HandshakeMessage,
    ) -> Result<(), HandshakeError> {
        let mut body = Vec::new();
        message
            .emit(&mut body)
            .map_err(|_| HandshakeError::Internal {
                what: "message encoding failed",
            })?;
        let message_seq = self.next_send_seq;
        self.next_send_seq = self.next_send_seq.wrapping_add(1);
        let mut raw = Vec::with_capacity(12 + body.len());
        dtls_proto::encode_message(message.msg_type(), message_seq, &body, &mut raw).map_err(
            |_| HandshakeError::Internal {
                what: "message too long",
            },
        )?;
        self.transcript.update(&raw);
        flight.messages.push(OutMessage::Handshake {
            epoch,
            msg_type: message.msg_type().to_u8(),
            message_seq,
            body,
        });
        Ok(())
    }

    /// Derives the key block of the next epoch and installs its write state (RFC 6347
    /// §4.1: the epoch "is incremented each time a ChangeCipherSpec message is sent").
    pub(crate) fn install_keys(&mut self, role: Role) -> Result<(), HandshakeError> {
        let suite = self.suite()?;
        let block = EpochKeyBlock::expand(
            self.master()?,
            suite.prf_hash(),
            suite.aead(),
            &self.client_random,
            &self.server_random,
        );
        let writer = match role {
            Role::Client => Writer::Client,
            Role::Server => Writer::Server,
        };
        let epoch = self.writer.next_epoch();
        let sealer =
            dataplane::record::Sealer::new(epoch, block.record_key(writer)?, 0).map_err(|_| {
                HandshakeError::Internal {
                    what: "sealer rejected key",
                }
            })?;
        self.writer.install(sealer);
        self.keys = Some(block);
        Ok(())
    }

    /// The key that opens the peer's epoch-1 records.
    pub(crate) fn peer_record_key(&self, role: Role) -> Result<RecordKey, HandshakeError> {
        let keys = self.keys.as_ref().ok_or(HandshakeError::Internal {
            what: "ChangeCipherSpec before keys",
        })?;
        keys.record_key(match role {
            Role::Client => Writer::Server,
            Role::Server => Writer::Client,
        })
    }

    /// Our own key for epoch 1 (a fresh copy for the shard).
    pub(crate) fn own_record_key(&self, role: Role) -> Result<RecordKey, HandshakeError> {
        let keys = self
            .keys
            .as_ref()
            .ok_or(HandshakeError::Internal { what: "no keys" })?;
        keys.record_key(match role {
            Role::Client => Writer::Client,
            Role::Server => Writer::Server,
        })
    }

    /// Finished verify_data for `sender` over the transcript so far (RFC 5246 §7.4.9).
    pub(crate) fn verify_data(
        &self,
        sender: Sender,
    ) -> Result<[u8; VERIFY_DATA_LEN], HandshakeError> {
        let suite = self.suite()?;
        let hash = self.transcript.current_hash()?;
        Ok(self
            .master()?
            .master()
            .verify_data(suite.prf_hash(), sender, hash.as_bytes()))
    }
}

/// Constant-time equality of two byte strings of public length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
