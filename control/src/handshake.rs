//! State shared by both roles during one handshake: randoms, transcript, negotiated
//! parameters, key material, message sequence numbers and the incoming message queue.

use dtls_crypto::pki_types::CertificateDer;
use dtls_crypto::{PremasterSecret, Sender, Transcript};
use dtls_proto::{
    Finished, HandshakeMessage, HeartbeatMode, RANDOM_LEN, SrtpProtectionProfile, SuiteParams,
    VERIFY_DATA_LEN,
};

use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::flight::{Flight, OutMessage};
use crate::inbox::Inbox;
use crate::keys::session::{EpochKeyBlock, MasterBytes, Writer};
use crate::record_layer::RecordWriter;
use crate::role::Role;

/// One complete, reassembled handshake message from the peer.
pub(crate) type Message = dtls_proto::ReassembledMessage;

/// What one handshake accumulates, whichever role plays it. What only one role keeps
/// lives in [`crate::client::ClientState`] and [`crate::server::ServerState`].
#[derive(Debug)]
pub(crate) struct Handshake {
    pub(crate) transcript: Transcript,
    pub(crate) client_random: [u8; RANDOM_LEN],
    pub(crate) server_random: [u8; RANDOM_LEN],
    pub(crate) suite: Option<SuiteParams>,
    pub(crate) extended_master_secret: bool,
    /// The master secret and the keys, from the key exchange on.
    pub(crate) secrets: Option<Secrets>,
    pub(crate) writer: RecordWriter,
    /// Our next handshake message_seq (RFC 6347 §4.2.2).
    pub(crate) next_send_seq: u16,
    pub(crate) inbox: Inbox,
    /// The flight we sent last.
    pub(crate) flight: Flight,
    /// The peer's ChangeCipherSpec arrived before the state machine was ready for it.
    pub(crate) ccs_pending: bool,
    /// The peer's certificate chain, end-entity first (empty without one).
    pub(crate) peer_chain: Vec<CertificateDer<'static>>,
    pub(crate) peer_identity: PeerIdentity,
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) srtp_profile: Option<SrtpProtectionProfile>,
    pub(crate) heartbeat: Option<HeartbeatMode>,
    /// Abbreviated handshake.
    pub(crate) resumed: bool,
    /// The connection IDs both sides agreed on (RFC 9146 §3), `None` when not negotiated.
    pub(crate) cids: Option<Cids>,
}

/// The connection IDs of a session (RFC 9146 §3), each possibly empty: an empty CID means
/// records in that direction use the plain RFC 6347 format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cids {
    /// Ours: what the peer puts in its records to us.
    pub(crate) local: Vec<u8>,
    /// The peer's: what we put in our records to it.
    pub(crate) peer: Vec<u8>,
    /// Both sides sent the `rrc` extension (RFC 9853 §3).
    pub(crate) rrc: bool,
}

impl Handshake {
    pub(crate) fn new(writer: RecordWriter, inbox: Inbox) -> Self {
        Self {
            transcript: Transcript::new(),
            client_random: [0; RANDOM_LEN],
            server_random: [0; RANDOM_LEN],
            suite: None,
            extended_master_secret: false,
            secrets: None,
            writer,
            next_send_seq: 0,
            inbox,
            flight: Flight::default(),
            ccs_pending: false,
            peer_chain: Vec::new(),
            peer_identity: PeerIdentity::None,
            alpn: None,
            srtp_profile: None,
            heartbeat: None,
            resumed: false,
            cids: None,
        }
    }

    pub(crate) fn suite(&self) -> Result<SuiteParams, HandshakeError> {
        self.suite.ok_or(HandshakeError::Internal {
            what: "no suite negotiated",
        })
    }

    pub(crate) fn secrets(&self) -> Result<&Secrets, HandshakeError> {
        self.secrets.as_ref().ok_or(HandshakeError::Internal {
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

    /// Takes `master` as this session's master secret, derives the key block of the next
    /// epoch from it and installs its write state (RFC 6347 §4.1: the epoch "is
    /// incremented each time a ChangeCipherSpec message is sent").
    pub(crate) fn install_keys(
        &mut self,
        role: Role,
        master: MasterBytes,
    ) -> Result<(), HandshakeError> {
        let suite = self.suite()?;
        let epoch = self.writer.next_epoch();
        let keys = EpochKeyBlock::expand(
            &master,
            epoch,
            suite.prf_hash(),
            suite.aead(),
            &self.client_random,
            &self.server_random,
        );
        let key = keys.record_key(Writer::own(role))?;
        let rejected = |_| HandshakeError::Internal {
            what: "sealer rejected key",
        };
        match self.cids.as_ref().filter(|c| !c.peer.is_empty()) {
            // RFC 9146 §3: with a non-empty CID for this direction, "once encryption is
            // enabled they MUST send with the record format defined in Figure 3".
            Some(cids) => self.writer.install_cid(
                dataplane::record::CidSealer::new(epoch, key, 0, &cids.peer).map_err(|_| {
                    HandshakeError::Internal {
                        what: "CID sealer rejected key",
                    }
                })?,
            ),
            None => self
                .writer
                .install(dataplane::record::Sealer::new(epoch, key, 0).map_err(rejected)?),
        }
        self.secrets = Some(Secrets { master, keys });
        Ok(())
    }

    /// Master secret (EMS over the transcript through ClientKeyExchange, RFC 7627 §4) and
    /// the keys of the next epoch.
    pub(crate) fn derive_master(
        &mut self,
        role: Role,
        premaster: &PremasterSecret,
    ) -> Result<(), HandshakeError> {
        let suite = self.suite()?;
        let session_hash = self.transcript.current_hash()?;
        let master = MasterBytes::derive(
            suite.prf_hash(),
            premaster,
            self.extended_master_secret
                .then_some(session_hash.as_bytes()),
            &self.client_random,
            &self.server_random,
        );
        self.install_keys(role, master)
    }

    /// Our CID when the peer must put one in its records (non-empty, negotiated).
    pub(crate) fn local_cid(&self) -> Option<&[u8]> {
        self.cids
            .as_ref()
            .map(|c| c.local.as_slice())
            .filter(|c| !c.is_empty())
    }

    /// Finished verify_data for `sender` over the transcript so far (RFC 5246 §7.4.9).
    pub(crate) fn verify_data(
        &self,
        sender: Sender,
    ) -> Result<[u8; VERIFY_DATA_LEN], HandshakeError> {
        let suite = self.suite()?;
        let hash = self.transcript.current_hash()?;
        Ok(self
            .secrets()?
            .master
            .master()
            .verify_data(suite.prf_hash(), sender, hash.as_bytes()))
    }

    /// Appends ChangeCipherSpec and our Finished to `flight`, the Finished in the epoch
    /// the ChangeCipherSpec switches to: the newest one, whose keys were just installed.
    pub(crate) fn push_ccs_and_finished(
        &mut self,
        flight: &mut Flight,
        sender: Sender,
    ) -> Result<(), HandshakeError> {
        flight.messages.push(OutMessage::ChangeCipherSpec);
        let verify_data = self.verify_data(sender)?;
        let epoch = self.writer.newest_epoch();
        self.push_message(
            flight,
            epoch,
            &HandshakeMessage::Finished(Finished { verify_data }),
        )
    }

    /// Checks the peer's Finished (RFC 5246 §7.4.9: "Recipients of Finished messages MUST
    /// verify that the contents are correct") and adds it to the transcript.
    pub(crate) fn check_peer_finished(
        &mut self,
        message: &Message,
        sender: Sender,
    ) -> Result<(), HandshakeError> {
        let finished = Finished::parse(&message.body).map_err(|source| HandshakeError::Decode {
            message: "Finished",
            source,
        })?;
        let expected = self.verify_data(sender)?;
        if !ct_eq(&expected, &finished.verify_data) {
            return Err(HandshakeError::BadFinished);
        }
        self.transcript.update(&message.transcript_bytes());
        Ok(())
    }
}

/// The master secret of a session and the key block expanded from it: both exist from
/// the key exchange (or the ticket of a resumed session) on.
#[derive(Debug)]
pub(crate) struct Secrets {
    pub(crate) master: MasterBytes,
    pub(crate) keys: EpochKeyBlock,
}

/// Constant-time equality of two byte strings of public length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
