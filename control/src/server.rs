//! The server role, from a cookie-verified ClientHello (see [`crate::Acceptor`]) to the
//! client's Finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::{EphemeralKeyPair, PremasterSecret, Rng, Sender, SessionState, verify_signature};
use dtls_proto::{
    Certificate, CertificateRequest, CertificateVerify, CipherSuite, ClientCertificateType,
    ClientHello, ClientKeyExchange, DigitallySigned, EcdheParams, ExtensionType, Extensions,
    HandshakeMessage, HandshakeType, KeyExchange, NamedGroup, NewSessionTicket, ProtocolVersion,
    RawExtension, ServerHello, ServerHelloDone, ServerKeyExchange, SignatureScheme, SuiteParams,
    UseSrtp, WireError,
};

use crate::acceptor::VerifiedClientHello;
use crate::config::{CidIssuer, ClientAuth, Config, ConfigError};
use crate::connection::{ClaimedIdentity, Connection12, Core, Side};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::flight::Flight;
use crate::handshake::{Cids, Message};
use crate::keys::session::MasterBytes;
use crate::record_layer::RecordWriter;
use crate::role::Role;
use crate::state::State;

fn decode(message: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |source| HandshakeError::Decode { message, source }
}

/// What the server chose for a ClientHello.
struct Choice {
    suite: SuiteParams,
    group: Option<NamedGroup>,
    /// Signature scheme for ServerKeyExchange (certificate suites).
    scheme: Option<SignatureScheme>,
}

/// What only a server keeps during a handshake.
#[derive(Debug, Default)]
pub(crate) struct ServerState {
    /// The host name the client sent in server_name (RFC 6066 §3), for logs.
    server_name: Option<String>,
    /// The PSK identity the client named, known or not, for logs.
    claimed_psk_identity: Option<Vec<u8>>,
    /// Our ephemeral key pair, from ServerKeyExchange to ClientKeyExchange.
    ecdhe: Option<EphemeralKeyPair>,
    /// We sent CertificateRequest.
    cert_requested: bool,
    /// Issue a NewSessionTicket in this handshake.
    send_ticket: bool,
}

impl Connection12 {
    /// The DTLS 1.2 server engine from a ClientHello the [`crate::Acceptor`] verified, with
    /// its first flight queued ([`crate::Connection::server_with_cids`]).
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn server_with_cids(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        wall: UnixTime,
        hello: Box<VerifiedClientHello>,
        issuer: &mut dyn CidIssuer,
    ) -> Result<Self, ConfigError> {
        let hello = *hello;
        config.validate()?;
        // The server's record sequence continues from the client's (as RFC 6347 §4.2.1
        // does for HelloVerifyRequest), so it never repeats the HelloVerifyRequest's.
        let writer = RecordWriter::new(hello.record_sequence);
        let mut core = Core::new(
            Role::Server,
            config,
            rng,
            hello.peer,
            writer,
            State::ExpectClientKeyExchange,
        );
        // RFC 6347 §4.2.2: the server's first message_seq after a cookie exchange matches
        // the ClientHello's (the HelloVerifyRequest consumed the previous one).
        core.hs.next_send_seq = hello.message_seq;
        core.hs.inbox.advance_to(hello.message_seq.wrapping_add(1));
        core.hs.inbox.set_answered_flight_start(hello.message_seq);
        // RFC 6347 §4.2.1: the handshake hash starts with the ClientHello that carried the
        // cookie.
        core.hs.transcript.update(&hello.transcript);
        let mut server = ServerState::default();
        match server.handle_client_hello(&mut core, now, wall, hello.hello, issuer) {
            Ok(next) => core.state = next,
            Err(e) => core.fail(e),
        }
        Ok(Connection12 {
            core,
            side: Side::Server(server),
        })
    }
}

/// The suite, group and signature scheme for `hello`, in our order of preference.
fn choose(config: &Config, hello: &ClientHello) -> Result<Choice, HandshakeError> {
    let ext = &hello.extensions;
    let client_groups: Vec<NamedGroup> = match &ext.supported_groups {
        Some(list) => list
            .iter()
            .copied()
            .filter(|g| NamedGroup::SUPPORTED.contains(g))
            .collect(),
        // RFC 8422 §4: without the extension the client supports any curve.
        None => config.groups.clone(),
    };
    let group = config
        .groups
        .iter()
        .copied()
        .find(|g| client_groups.contains(g));
    let client_schemes: Vec<SignatureScheme> = ext
        .signature_algorithms
        .iter()
        .flatten()
        .filter(|s| config.signature_schemes.contains(s))
        .copied()
        .collect();
    let offered = &hello.cipher_suites;
    let mut no_group = false;
    // Server preference order (configurable through `Config::cipher_suites`).
    for suite in config.suites() {
        if !offered.contains(&suite.suite()) {
            continue;
        }
        if suite.uses_ecdhe() && group.is_none() {
            no_group = true;
            continue;
        }
        if suite.uses_psk() && config.psks.is_empty() {
            continue;
        }
        let mut scheme = None;
        if suite.uses_certificate() {
            let Some(cert) = &config.certificate else {
                continue;
            };
            let kind_fits = match suite.key_exchange() {
                KeyExchange::EcdheRsa => !cert.key.kind().is_ecdsa_family(),
                _ => cert.key.kind().is_ecdsa_family(),
            };
            if !kind_fits {
                continue;
            }
            scheme = cert.key.choose_scheme(&client_schemes);
            if scheme.is_none() {
                continue;
            }
        }
        return Ok(Choice {
            suite,
            group: if suite.uses_ecdhe() { group } else { None },
            scheme,
        });
    }
    Err(if no_group {
        HandshakeError::NoCommonGroup
    } else {
        HandshakeError::NoCommonSuite
    })
}

/// Opens and checks a ticket; `None` means a full handshake.
fn open_ticket(
    config: &Config,
    keys: &std::sync::Mutex<dtls_crypto::TicketKeys>,
    ticket: &[u8],
    hello: &ClientHello,
    suite: SuiteParams,
    wall: UnixTime,
) -> Option<SessionState> {
    let state = keys.lock().ok()?.open(ticket, wall).ok()?;
    let ticket_suite = CipherSuite::from_u16(state.cipher_suite).params()?;
    // The session's suite must still be enabled and offered; we resume only with the
    // suite we would choose anyway, keeping the negotiation simple.
    if ticket_suite != suite {
        return None;
    }
    // A PSK session resumes only while its identity is still configured: a reload that
    // removes a PSK revokes the tickets issued under it too.
    if ticket_suite.uses_psk()
        && !config
            .psks
            .iter()
            .any(|p| p.identity == state.peer_identity)
    {
        return None;
    }
    // A certificate session resumes only while the identity rules still admit its
    // certificate (a reload may have narrowed them); otherwise a full handshake checks it.
    if !ticket_suite.uses_psk()
        && !state.peer_identity.is_empty()
        && config
            .client_identity
            .as_ref()
            .is_some_and(|rules| rules.check(&state.peer_identity).is_err())
    {
        return None;
    }
    // RFC 7627 §5.3: resume only when both the session and this ClientHello used EMS
    // (or neither did and EMS is not required).
    if state.extended_master_secret != hello.extensions.extended_master_secret {
        return None;
    }
    Some(state)
}

impl ServerState {
    /// Who the client claims to be, for logs.
    pub(crate) fn claimed_identity(&self) -> ClaimedIdentity<'_> {
        ClaimedIdentity {
            server_name: self.server_name.as_deref(),
            psk_identity: self.claimed_psk_identity.as_deref(),
        }
    }

    fn handle_client_hello(
        &mut self,
        core: &mut Core,
        now: Instant,
        wall: UnixTime,
        hello: ClientHello,
        issuer: &mut dyn CidIssuer,
    ) -> Result<State, HandshakeError> {
        // RFC 6347 §4.1 / RFC 5246 §E.1: a client that cannot do DTLS 1.2 is refused.
        if !hello.client_version.offers_dtls12() {
            return Err(HandshakeError::ProtocolVersion {
                version: hello.client_version.to_u16(),
            });
        }
        let ext = &hello.extensions;
        if let Some(dtls_proto::ServerName::HostName(name)) = &ext.server_name {
            self.server_name = Some(name.clone());
        }
        // RFC 5746 §3.6: the server MUST check for the SCSV or the extension; a non-empty
        // renegotiated_connection on an initial handshake is fatal.
        if ext
            .renegotiation_info
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(HandshakeError::InsecureRenegotiation);
        }
        let secure_renegotiation = ext.renegotiation_info.is_some()
            || hello
                .cipher_suites
                .contains(&dtls_proto::CipherSuite::EmptyRenegotiationInfoScsv);
        // RFC 7627 §5.3: without the extension in ClientHello, abort when required.
        core.hs.extended_master_secret = ext.extended_master_secret;
        if !ext.extended_master_secret && core.config.require_extended_master_secret {
            return Err(HandshakeError::ExtendedMasterSecretRequired);
        }
        let choice = choose(&core.config, &hello)?;
        let suite = choice.suite;
        core.hs.suite = Some(suite);
        core.hs.client_random = hello.random;
        core.rng.fill(&mut core.hs.server_random);
        if core.config.allows(ProtocolVersion::Dtls1_3) {
            // RFC 8446 §4.1.3: "TLS 1.3 servers which negotiate TLS 1.2 or below in
            // response to a ClientHello MUST set the last 8 bytes of their Random value
            // specially": the downgrade sentinel a 1.3 client checks.
            core.hs.server_random[24..]
                .copy_from_slice(&dtls_proto::tls13::messages::DOWNGRADE_SENTINEL_TLS12);
        }
        core.hs.transcript.select_hash(suite.prf_hash())?;

        let mut sh_ext = Extensions {
            extended_master_secret: core.hs.extended_master_secret,
            renegotiation_info: secure_renegotiation.then(Vec::new),
            ..Extensions::default()
        };
        if suite.uses_ecdhe() && ext.ec_point_formats.is_some() {
            sh_ext.ec_point_formats = Some(vec![dtls_proto::EC_POINT_FORMAT_UNCOMPRESSED]);
        }
        if let (Some(client), false) = (&ext.alpn, core.config.alpn_protocols.is_empty()) {
            // RFC 7301 §3.2: no protocol in common is a fatal no_application_protocol.
            let proto = core
                .config
                .alpn_protocols
                .iter()
                .find(|p| client.contains(p))
                .ok_or(HandshakeError::NoApplicationProtocol)?;
            sh_ext.alpn = Some(vec![proto.clone()]);
            core.hs.alpn = Some(proto.clone());
        }
        if let Some(srtp) = &ext.use_srtp {
            // RFC 5764 §4.1.1: the server picks one of the client's profiles, or omits
            // the extension when there is none in common.
            if let Some(profile) = core
                .config
                .srtp_profiles
                .iter()
                .copied()
                .find(|p| srtp.profiles.contains(p))
            {
                sh_ext.use_srtp = Some(UseSrtp {
                    profiles: vec![profile],
                    mki: Vec::new(),
                });
                core.hs.srtp_profile = Some(profile);
            }
        }
        if let (Some(peer_mode), Some(ours)) = (ext.heartbeat, core.config.heartbeat) {
            sh_ext.heartbeat = Some(ours);
            core.hs.heartbeat = Some(peer_mode);
        }
        if let (Some(data), Some(len)) = (
            ext.raw(ExtensionType::ConnectionId),
            core.config.connection_id.cid_len(),
        ) {
            let peer = dtls_proto::tls13::extensions::parse_connection_id(data)
                .map_err(decode("ClientHello"))?;
            if peer.len() > usize::from(crate::config::MAX_CID_LEN) {
                return Err(HandshakeError::IllegalParameter {
                    what: "client connection ID longer than 20 bytes",
                });
            }
            // RFC 9146 §3: "A server willing to use CIDs will respond with a
            // "connection_id" extension in the ServerHello, containing the CID it wishes
            // the client to use when sending messages towards it."
            let local = issuer.issue(len, &mut *core.rng);
            let mut data = Vec::with_capacity(1 + local.len());
            dtls_proto::tls13::extensions::emit_connection_id(&local, &mut data).map_err(|_| {
                HandshakeError::Internal {
                    what: "connection ID too long",
                }
            })?;
            sh_ext.other.push(RawExtension {
                ext_type: ExtensionType::ConnectionId,
                data,
            });
            // RFC 9853 §3: the server answers `rrc` (empty) to a client that offered it
            // with connection_id ("If the client includes the `rrc` extension in its
            // ClientHello but omits the `connection_id` extension, the server MUST NOT
            // include the `rrc` extension": this branch has both).
            let rrc = core.config.rrc && ext.raw(ExtensionType::Rrc).is_some();
            if rrc {
                sh_ext.other.push(RawExtension {
                    ext_type: ExtensionType::Rrc,
                    data: Vec::new(),
                });
            }
            core.hs.cids = Some(Cids { local, peer, rrc });
        }

        // RFC 5077 §3.4: try the ticket first.
        let ticket_keys = core.config.ticket_keys.clone();
        let resumed = match (&ticket_keys, &ext.session_ticket) {
            (Some(keys), Some(ticket)) if !ticket.is_empty() => {
                open_ticket(&core.config, keys, ticket, &hello, suite, wall)
            }
            _ => None,
        };
        self.send_ticket = ticket_keys.is_some() && ext.session_ticket.is_some();
        if let Some(state) = resumed {
            return self.resume(core, now, wall, &hello, sh_ext, state);
        }
        if self.send_ticket {
            sh_ext.session_ticket = Some(Vec::new());
        }

        let mut flight = Flight::default();
        let sh = ServerHello {
            server_version: ProtocolVersion::Dtls1_2,
            random: core.hs.server_random,
            session_id: Vec::new(),
            cipher_suite: suite.suite(),
            compression_method: dtls_proto::COMPRESSION_NULL,
            extensions: sh_ext,
        };
        core.hs
            .push_message(&mut flight, 0, &HandshakeMessage::ServerHello(sh))?;
        if suite.uses_certificate() {
            let cert = core
                .config
                .certificate
                .clone()
                .ok_or(HandshakeError::NoCertificate)?;
            let chain = cert.chain.iter().map(|c| c.to_vec()).collect();
            core.hs.push_message(
                &mut flight,
                0,
                &HandshakeMessage::Certificate(Certificate { chain }),
            )?;
        }
        // Expensive asymmetric work happens only here, after the cookie was verified.
        let hint = core.config.psk_identity_hint.clone();
        let ske = match suite.key_exchange() {
            KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa => {
                let params = self.new_ecdhe_params(core, choice.group)?;
                let cert = core
                    .config
                    .certificate
                    .clone()
                    .ok_or(HandshakeError::NoCertificate)?;
                let scheme = choice
                    .scheme
                    .ok_or(HandshakeError::NoCommonSignatureScheme)?;
                let signed = params
                    .signed_message(&core.hs.client_random, &core.hs.server_random)
                    .map_err(|_| HandshakeError::Internal {
                        what: "ServerKeyExchange encoding",
                    })?;
                // RFC 8422 §5.4: the server signs client_random + server_random + params.
                let signature = cert.key.sign(scheme, &signed)?;
                Some(ServerKeyExchange::Ecdhe {
                    params,
                    signature: DigitallySigned { scheme, signature },
                })
            }
            // RFC 4279 §2: without a hint the server may omit ServerKeyExchange.
            KeyExchange::Psk => hint.map(|identity_hint| ServerKeyExchange::Psk { identity_hint }),
            KeyExchange::EcdhePsk => Some(ServerKeyExchange::EcdhePsk {
                identity_hint: hint.unwrap_or_default(),
                params: self.new_ecdhe_params(core, choice.group)?,
            }),
        };
        if let Some(ske) = ske {
            core.hs
                .push_message(&mut flight, 0, &HandshakeMessage::ServerKeyExchange(ske))?;
        }
        if suite.uses_certificate() && core.config.client_auth != ClientAuth::None {
            self.cert_requested = true;
            let req = CertificateRequest {
                certificate_types: vec![
                    ClientCertificateType::EcdsaSign,
                    ClientCertificateType::RsaSign,
                ],
                signature_schemes: core.config.signature_schemes.clone(),
                certificate_authorities: Vec::new(),
            };
            core.hs
                .push_message(&mut flight, 0, &HandshakeMessage::CertificateRequest(req))?;
        } else {
            core.hs.transcript.stop_retaining();
        }
        core.hs.push_message(
            &mut flight,
            0,
            &HandshakeMessage::ServerHelloDone(ServerHelloDone),
        )?;
        core.send_flight(now, flight, true)?;
        Ok(if self.cert_requested {
            State::ExpectClientCertificate
        } else {
            State::ExpectClientKeyExchange
        })
    }

    fn new_ecdhe_params(
        &mut self,
        core: &mut Core,
        group: Option<NamedGroup>,
    ) -> Result<EcdheParams, HandshakeError> {
        let group = group.ok_or(HandshakeError::NoCommonGroup)?;
        let pair = EphemeralKeyPair::generate(group, &mut *core.rng)?;
        let params = EcdheParams {
            group,
            public: pair.public_key().to_vec(),
        };
        self.ecdhe = Some(pair);
        Ok(params)
    }

    /// Abbreviated handshake (RFC 5077 §3.1): ServerHello, NewSessionTicket, CCS, Finished.
    fn resume(
        &mut self,
        core: &mut Core,
        now: Instant,
        wall: UnixTime,
        hello: &ClientHello,
        mut sh_ext: Extensions,
        state: SessionState,
    ) -> Result<State, HandshakeError> {
        core.hs.resumed = true;
        core.hs.transcript.stop_retaining();
        core.hs.peer_identity = if state.peer_identity.is_empty() {
            PeerIdentity::None
        } else if core.hs.suite()?.uses_psk() {
            PeerIdentity::Psk(state.peer_identity.clone())
        } else {
            PeerIdentity::Certificates(vec![CertificateDer::from(state.peer_identity.clone())])
        };
        // RFC 5077 §3.1: "If the server successfully verifies the client's ticket, then it
        // MAY renew the ticket by including a NewSessionTicket handshake message after the
        // ServerHello in the abbreviated handshake." We renew whenever the client offered
        // the extension and ticket keys are configured (`send_ticket`), announced by an
        // empty SessionTicket extension (RFC 5077 §3.2); §3.3: the message "MUST be sent if
        // the server included a SessionTicket extension in the ServerHello".
        if self.send_ticket {
            sh_ext.session_ticket = Some(Vec::new());
        }
        core.hs
            .install_keys(Role::Server, MasterBytes::from_secret(state.master_secret))?;
        let mut flight = Flight::default();
        let sh = ServerHello {
            server_version: ProtocolVersion::Dtls1_2,
            random: core.hs.server_random,
            // RFC 5077 §3.4: echo the client's Session ID to accept the ticket.
            session_id: hello.session_id.clone(),
            cipher_suite: core.hs.suite()?.suite(),
            compression_method: dtls_proto::COMPRESSION_NULL,
            extensions: sh_ext,
        };
        core.hs
            .push_message(&mut flight, 0, &HandshakeMessage::ServerHello(sh))?;
        if self.send_ticket {
            self.push_new_session_ticket(core, &mut flight, wall)?;
        }
        core.hs.push_ccs_and_finished(&mut flight, Sender::Server)?;
        core.send_flight(now, flight, true)?;
        Ok(State::ExpectChangeCipherSpec)
    }

    pub(crate) fn handle_message(
        &mut self,
        core: &mut Core,
        now: Instant,
        wall: UnixTime,
        message: Message,
    ) -> Result<State, HandshakeError> {
        let unexpected = HandshakeError::UnexpectedMessage {
            state: core.state.name(),
            got: message.msg_type.to_u8(),
        };
        // CertificateVerify and Finished sign / MAC the messages before them.
        if !matches!(
            message.msg_type,
            HandshakeType::Finished | HandshakeType::CertificateVerify
        ) {
            core.hs.transcript.update(&message.transcript_bytes());
        }
        match (core.state, message.msg_type) {
            (State::ExpectClientCertificate, HandshakeType::Certificate) => {
                self.handle_client_certificate(core, &message.body, wall)
            }
            (State::ExpectClientKeyExchange, HandshakeType::ClientKeyExchange) => {
                self.handle_client_key_exchange(core, &message.body)
            }
            (State::ExpectCertificateVerify, HandshakeType::CertificateVerify) => {
                self.handle_certificate_verify(core, &message)
            }
            (State::ExpectFinished, HandshakeType::Finished) => {
                self.handle_client_finished(core, now, wall, &message)
            }
            _ => Err(unexpected),
        }
    }

    fn handle_client_certificate(
        &mut self,
        core: &mut Core,
        body: &[u8],
        wall: UnixTime,
    ) -> Result<State, HandshakeError> {
        let cert = Certificate::parse(body).map_err(decode("Certificate"))?;
        if cert.chain.is_empty() {
            // RFC 5246 §7.4.6: without a certificate the server may continue or abort.
            if core.config.client_auth == ClientAuth::Required {
                return Err(HandshakeError::CertificateRequired);
            }
            core.hs.transcript.stop_retaining();
        } else {
            let chain: Vec<CertificateDer<'static>> =
                cert.chain.into_iter().map(CertificateDer::from).collect();
            core.config
                .peer_verification
                .verify_client(&chain, wall)
                .map_err(|source| HandshakeError::BadCertificate { source })?;
            core.config.check_client_identity(&chain)?;
            core.hs.peer_chain = chain;
        }
        Ok(State::ExpectClientKeyExchange)
    }

    fn handle_client_key_exchange(
        &mut self,
        core: &mut Core,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let suite = core.hs.suite()?;
        let cke = ClientKeyExchange::parse(body, suite.key_exchange())
            .map_err(decode("ClientKeyExchange"))?;
        let lookup = |identity: &[u8]| {
            core.config
                .psks
                .iter()
                .find(|p| p.identity == identity)
                .cloned()
                // RFC 4279 §2: an unknown identity MAY be answered with
                // unknown_psk_identity.
                .ok_or(HandshakeError::UnknownPskIdentity)
        };
        // Kept for logs even when the lookup below fails (an unknown identity).
        if let ClientKeyExchange::Psk { identity } | ClientKeyExchange::EcdhePsk { identity, .. } =
            &cke
        {
            self.claimed_psk_identity = Some(identity.clone());
        }
        // ECDHE suites made our key pair with ServerKeyExchange, before this message.
        let premaster = match (cke, self.ecdhe.take()) {
            (ClientKeyExchange::Ecdhe { public }, Some(ours)) => ours.agree(&public)?,
            (ClientKeyExchange::Psk { identity }, _) => {
                let psk = lookup(&identity)?;
                core.hs.peer_identity = PeerIdentity::Psk(identity);
                PremasterSecret::psk(&psk.key)?
            }
            (ClientKeyExchange::EcdhePsk { identity, public }, Some(ours)) => {
                let psk = lookup(&identity)?;
                let ecdhe = ours.agree(&public)?;
                core.hs.peer_identity = PeerIdentity::Psk(identity);
                PremasterSecret::ecdhe_psk(ecdhe, &psk.key)?
            }
            (ClientKeyExchange::Ecdhe { .. } | ClientKeyExchange::EcdhePsk { .. }, None) => {
                return Err(HandshakeError::Internal {
                    what: "no ECDHE key",
                });
            }
        };
        core.hs.derive_master(Role::Server, &premaster)?;
        Ok(if core.hs.peer_chain.is_empty() {
            State::ExpectChangeCipherSpec
        } else {
            State::ExpectCertificateVerify
        })
    }

    fn handle_certificate_verify(
        &mut self,
        core: &mut Core,
        message: &Message,
    ) -> Result<State, HandshakeError> {
        let cv = CertificateVerify::parse(&message.body).map_err(decode("CertificateVerify"))?;
        let scheme = cv.signed.scheme;
        // RFC 5246 §7.4.8: the scheme must be one listed in CertificateRequest.
        if !core.config.signature_schemes.contains(&scheme) {
            return Err(HandshakeError::IllegalParameter {
                what: "CertificateVerify signature scheme",
            });
        }
        let end_entity = core.hs.peer_chain.first().ok_or(HandshakeError::Internal {
            what: "CertificateVerify without certificate",
        })?;
        let messages = core
            .hs
            .transcript
            .messages()
            .ok_or(HandshakeError::Internal {
                what: "transcript not retained",
            })?;
        // RFC 5246 §7.4.8: the signature covers every handshake message before it.
        verify_signature(scheme, end_entity, messages, &cv.signed.signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        core.hs.peer_identity = PeerIdentity::Certificates(core.hs.peer_chain.clone());
        core.hs.transcript.update(&message.transcript_bytes());
        core.hs.transcript.stop_retaining();
        Ok(State::ExpectChangeCipherSpec)
    }

    fn handle_client_finished(
        &mut self,
        core: &mut Core,
        now: Instant,
        wall: UnixTime,
        message: &Message,
    ) -> Result<State, HandshakeError> {
        core.hs.check_peer_finished(message, Sender::Client)?;
        if core.hs.resumed {
            return core.complete(None);
        }
        let mut flight = Flight::default();
        // RFC 5077 §3.3: "In the case of a full handshake, the server MUST verify the
        // client's Finished message before sending the ticket." Checked just above.
        if self.send_ticket {
            self.push_new_session_ticket(core, &mut flight, wall)?;
        }
        core.hs.push_ccs_and_finished(&mut flight, Sender::Server)?;
        // The final flight: resent only when the client retransmits (RFC 6347 §4.2.4).
        core.send_flight(now, flight, false)?;
        core.complete(None)
    }

    /// Appends NewSessionTicket with this session sealed into a fresh ticket, in a full
    /// handshake and in an abbreviated one alike.
    fn push_new_session_ticket(
        &mut self,
        core: &mut Core,
        flight: &mut Flight,
        wall: UnixTime,
    ) -> Result<(), HandshakeError> {
        let ticket = self.seal_ticket(core, wall)?;
        core.hs.push_message(
            flight,
            0,
            &HandshakeMessage::NewSessionTicket(NewSessionTicket {
                lifetime_hint: core.config.ticket_lifetime,
                ticket,
            }),
        )
    }

    /// Seals this session into a ticket (RFC 5077 §4); an empty ticket when the keys are
    /// missing or sealing fails (RFC 5077 §3.3 allows a zero-length ticket when the server
    /// has promised one but cannot issue it). A resumed session is sealed again from a
    /// copy of the master secret restored from the client's ticket.
    fn seal_ticket(&mut self, core: &mut Core, wall: UnixTime) -> Result<Vec<u8>, HandshakeError> {
        let Some(keys) = core.config.ticket_keys.clone() else {
            return Ok(Vec::new());
        };
        let master_secret = core.hs.secrets()?.master.master().duplicate();
        let peer_identity = match &core.hs.peer_identity {
            PeerIdentity::None => Vec::new(),
            PeerIdentity::Certificates(chain) => {
                chain.first().map(|c| c.to_vec()).unwrap_or_default()
            }
            PeerIdentity::Psk(id) => id.clone(),
        };
        let state = SessionState {
            cipher_suite: core.hs.suite()?.suite().to_u16(),
            master_secret,
            extended_master_secret: core.hs.extended_master_secret,
            peer_identity,
            issued_at: wall,
            lifetime: Duration::from_secs(u64::from(core.config.ticket_lifetime)),
        };
        let Ok(mut keys) = keys.lock() else {
            return Ok(Vec::new());
        };
        Ok(keys.seal(&state).unwrap_or_default())
    }
}
