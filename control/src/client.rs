//! The client role: ClientHello, HelloVerifyRequest, the server's flight, our key
//! exchange flight and the server's Finished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::{EphemeralKeyPair, PremasterSecret, Rng, Sender, verify_signature};
use dtls_proto::{
    Certificate, CertificateRequest, CertificateVerify, ClientHello, ClientKeyExchange,
    DigitallySigned, ExtensionType, Extensions, Finished, HandshakeMessage, HandshakeType,
    HelloVerifyRequest, KeyExchange, NewSessionTicket, ProtocolVersion, ServerHello,
    ServerKeyExchange, ServerName, SuiteParams, UseSrtp, WireError,
};

use crate::config::{Config, ConfigError};
use crate::connection::{Connection, Role};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::flight::{Flight, OutMessage};
use crate::handshake::{Message, ct_eq};
use crate::keys::session::MasterBytes;
use crate::keys::ticket::SessionTicket;
use crate::record_layer::RecordWriter;
use crate::state::State;

/// At most this many HelloVerifyRequests are answered in one handshake.
const MAX_HELLO_VERIFY_REQUESTS: u8 = 4;

fn decode(message: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |source| HandshakeError::Decode { message, source }
}

impl Connection {
    /// Starts a client handshake with `peer` and queues the first ClientHello.
    ///
    /// With `resume`, the ticket is offered for an abbreviated handshake (RFC 5077 §3.4);
    /// the server may still fall back to a full handshake.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn client(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        peer: SocketAddr,
        resume: Option<SessionTicket>,
    ) -> Result<Self, ConfigError> {
        config.validate_client()?;
        let mut conn = Connection::new(
            Role::Client,
            config,
            rng,
            peer,
            RecordWriter::new(0),
            State::ExpectServerHello,
        );
        conn.rng.fill(&mut conn.hs.client_random);
        if resume.is_some() {
            // RFC 5077 §3.4: the client generates a Session ID so it can tell whether the
            // server accepted the ticket (the server echoes it).
            let mut id = vec![0u8; 32];
            conn.rng.fill(&mut id);
            conn.hs.session_id = id;
        }
        conn.hs.offered_ticket = resume;
        let hello = conn.build_client_hello();
        conn.hs.client_hello = Some(hello);
        if let Err(e) = conn.send_client_hello(now) {
            conn.fail(e);
        }
        Ok(conn)
    }

    /// The suites we offer: PSK suites only when a PSK is configured.
    fn offered_suites(&self) -> Vec<SuiteParams> {
        let has_psk = !self.config.psks.is_empty();
        self.config
            .suites()
            .filter(|s| has_psk || !s.uses_psk())
            .collect()
    }

    fn build_client_hello(&self) -> ClientHello {
        let config = &self.config;
        let suites = self.offered_suites();
        let uses_ecdhe = suites.iter().any(|s| s.uses_ecdhe());
        let mut ext = Extensions {
            // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
            server_name: config
                .server_name
                .as_ref()
                .filter(|n| n.parse::<std::net::IpAddr>().is_err())
                .map(|n| ServerName::HostName(n.clone())),
            signature_algorithms: Some(config.signature_schemes.clone()),
            // RFC 7627 §5.1: clients always send extended_master_secret.
            extended_master_secret: true,
            // RFC 5746 §3.4: "the client MUST include either an empty "renegotiation_info"
            // extension, or the TLS_EMPTY_RENEGOTIATION_INFO_SCSV".
            renegotiation_info: Some(Vec::new()),
            heartbeat: config.heartbeat,
            ..Extensions::default()
        };
        if uses_ecdhe {
            ext.supported_groups = Some(config.groups.clone());
            // RFC 8422 §5.1.2: uncompressed only.
            ext.ec_point_formats = Some(vec![dtls_proto::EC_POINT_FORMAT_UNCOMPRESSED]);
        }
        if !config.alpn_protocols.is_empty() {
            ext.alpn = Some(config.alpn_protocols.clone());
        }
        if !config.srtp_profiles.is_empty() {
            ext.use_srtp = Some(UseSrtp {
                profiles: config.srtp_profiles.clone(),
                mki: Vec::new(),
            });
        }
        if config.offer_session_ticket {
            ext.session_ticket = Some(
                self.hs
                    .offered_ticket
                    .as_ref()
                    .map(|t| t.ticket.clone())
                    .unwrap_or_default(),
            );
        }
        ClientHello {
            client_version: ProtocolVersion::Dtls1_2,
            random: self.hs.client_random,
            session_id: self.hs.session_id.clone(),
            cookie: Vec::new(),
            cipher_suites: suites.iter().map(|s| s.suite()).collect(),
            compression_methods: vec![dtls_proto::COMPRESSION_NULL],
            extensions: ext,
        }
    }

    fn send_client_hello(&mut self, now: Instant) -> Result<(), HandshakeError> {
        let hello = self
            .hs
            .client_hello
            .clone()
            .ok_or(HandshakeError::Internal {
                what: "no ClientHello",
            })?;
        let mut flight = Flight::default();
        self.hs
            .push_message(&mut flight, 0, &HandshakeMessage::ClientHello(hello))?;
        self.send_flight(now, flight, true)
    }

    pub(crate) fn handle_client_message(
        &mut self,
        now: Instant,
        wall: UnixTime,
        message: Message,
    ) -> Result<State, HandshakeError> {
        let unexpected = HandshakeError::UnexpectedMessage {
            state: self.state.name(),
            got: message.msg_type.to_u8(),
        };
        // CertificateVerify is never received by a client; Finished manages the
        // transcript itself (its verify_data covers the messages before it).
        if message.msg_type != HandshakeType::Finished {
            self.hs.transcript.update(&message.transcript_bytes());
        }
        match (self.state, message.msg_type) {
            (State::ExpectServerHello, HandshakeType::HelloVerifyRequest) => {
                self.handle_hello_verify_request(now, &message.body)
            }
            (State::ExpectServerHello, HandshakeType::ServerHello) => {
                self.handle_server_hello(&message.body)
            }
            (State::ExpectServerCertificate, HandshakeType::Certificate) => {
                self.handle_server_certificate(&message.body, wall)
            }
            (State::ExpectServerKeyExchange, HandshakeType::ServerKeyExchange) => {
                self.handle_server_key_exchange(&message.body)
            }
            (State::ExpectServerKeyExchange, HandshakeType::ServerHelloDone)
                if self.hs.suite()?.key_exchange() == KeyExchange::Psk =>
            {
                // RFC 4279 §2: with no identity hint the server may omit ServerKeyExchange.
                self.handle_server_hello_done(now, &message.body)
            }
            (State::ExpectServerHelloDone, HandshakeType::CertificateRequest)
                if !self.hs.cert_requested && self.hs.suite()?.uses_certificate() =>
            {
                self.handle_certificate_request(&message.body)
            }
            (State::ExpectServerHelloDone, HandshakeType::ServerHelloDone) => {
                self.handle_server_hello_done(now, &message.body)
            }
            (State::ExpectNewSessionTicket, HandshakeType::NewSessionTicket) => {
                let ticket =
                    NewSessionTicket::parse(&message.body).map_err(decode("NewSessionTicket"))?;
                self.hs.new_ticket = Some((ticket.lifetime_hint, ticket.ticket));
                Ok(State::ExpectChangeCipherSpec)
            }
            (State::ExpectFinished, HandshakeType::Finished) => {
                self.handle_server_finished(now, &message)
            }
            _ => Err(unexpected),
        }
    }

    fn handle_hello_verify_request(
        &mut self,
        now: Instant,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let hvr = HelloVerifyRequest::parse(body).map_err(decode("HelloVerifyRequest"))?;
        self.hs.hello_verify_count += 1;
        if self.hs.hello_verify_count > MAX_HELLO_VERIFY_REQUESTS {
            return Err(HandshakeError::UnexpectedMessage {
                state: "ExpectServerHello",
                got: HandshakeType::HelloVerifyRequest.to_u8(),
            });
        }
        // RFC 6347 §4.2.1: the first ClientHello and the HelloVerifyRequest are not part
        // of the handshake hash.
        self.hs.transcript.reset();
        // RFC 6347 §4.2.1: the client "MUST retransmit the ClientHello with the cookie
        // added" and the same parameters as before.
        if let Some(hello) = self.hs.client_hello.as_mut() {
            hello.cookie = hvr.cookie;
        }
        self.send_client_hello(now)?;
        Ok(State::ExpectServerHello)
    }

    fn handle_server_hello(&mut self, body: &[u8]) -> Result<State, HandshakeError> {
        let sh = ServerHello::parse(body).map_err(decode("ServerHello"))?;
        // RFC 6347 §4.1 / RFC 5246 §7.4.1.3: we only speak DTLS 1.2.
        if sh.server_version != ProtocolVersion::Dtls1_2 {
            return Err(HandshakeError::ProtocolVersion {
                version: sh.server_version.to_u16(),
            });
        }
        let offered = self.offered_suites();
        let suite = offered
            .into_iter()
            .find(|s| s.suite() == sh.cipher_suite)
            .ok_or(HandshakeError::IllegalParameter {
                what: "server chose a suite we did not offer",
            })?;
        // RFC 5246 §7.4.1.3: the compression method must be one the client offered.
        if sh.compression_method != dtls_proto::COMPRESSION_NULL {
            return Err(HandshakeError::IllegalParameter {
                what: "compression method",
            });
        }
        let ext = &sh.extensions;
        ext.check_server_hello().map_err(decode("ServerHello"))?;
        let offered_ext = self
            .hs
            .client_hello
            .as_ref()
            .map(|h| h.extensions.clone())
            .unwrap_or_default();
        // RFC 5246 §7.4.1.4: a client that receives an extension it did not offer
        // "MUST abort the handshake with an unsupported_extension fatal alert".
        if let Some(other) = ext.other.first() {
            return Err(HandshakeError::UnsupportedExtension {
                ext_type: other.ext_type.to_u16(),
            });
        }
        let unsolicited = [
            (
                ext.alpn.is_some() && offered_ext.alpn.is_none(),
                ExtensionType::Alpn,
            ),
            (
                ext.use_srtp.is_some() && offered_ext.use_srtp.is_none(),
                ExtensionType::UseSrtp,
            ),
            (
                ext.heartbeat.is_some() && offered_ext.heartbeat.is_none(),
                ExtensionType::Heartbeat,
            ),
            (
                ext.session_ticket.is_some() && offered_ext.session_ticket.is_none(),
                ExtensionType::SessionTicket,
            ),
            (
                ext.server_name.is_some() && offered_ext.server_name.is_none(),
                ExtensionType::ServerName,
            ),
        ];
        if let Some((_, ext_type)) = unsolicited.iter().find(|(bad, _)| *bad) {
            return Err(HandshakeError::UnsupportedExtension {
                ext_type: ext_type.to_u16(),
            });
        }
        // RFC 5746 §3.4: "The client MUST then verify that the length of the
        // "renegotiated_connection" field is zero, and if it is not, MUST abort the
        // handshake (by sending a fatal handshake_failure alert)."
        if ext
            .renegotiation_info
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(HandshakeError::InsecureRenegotiation);
        }
        // RFC 7627 §5.3 / §5.2: without the extension we abort when configured to require it.
        self.hs.extended_master_secret = ext.extended_master_secret;
        if !ext.extended_master_secret && self.config.require_extended_master_secret {
            return Err(HandshakeError::ExtendedMasterSecretRequired);
        }
        if let Some(list) = &ext.alpn {
            let proto = list.first().cloned().unwrap_or_default();
            // RFC 7301 §3.2: the server's choice must be one the client offered.
            if !self.config.alpn_protocols.contains(&proto) {
                return Err(HandshakeError::IllegalParameter {
                    what: "ALPN protocol not offered",
                });
            }
            self.hs.alpn = Some(proto);
        }
        if let Some(srtp) = &ext.use_srtp {
            // check_server_hello() guarantees exactly one profile.
            let profile =
                srtp.profiles
                    .first()
                    .copied()
                    .ok_or(HandshakeError::IllegalParameter {
                        what: "use_srtp without a profile",
                    })?;
            // RFC 5764 §4.1.1: the server's profile must be one the client offered.
            if !self.config.srtp_profiles.contains(&profile) || !srtp.mki.is_empty() {
                return Err(HandshakeError::IllegalParameter {
                    what: "use_srtp profile not offered",
                });
            }
            self.hs.srtp_profile = Some(profile);
        }
        self.hs.heartbeat = ext.heartbeat;
        self.hs.send_ticket = ext.session_ticket.is_some();
        self.hs.server_random = sh.random;
        self.hs.suite = Some(suite);
        self.hs.transcript.select_hash(suite.prf_hash())?;

        let resumed = self.hs.offered_ticket.as_ref().is_some_and(|t| {
            !self.hs.session_id.is_empty()
                && sh.session_id == self.hs.session_id
                && t.suite == suite.suite()
        });
        if resumed {
            let ticket = self
                .hs
                .offered_ticket
                .as_ref()
                .ok_or(HandshakeError::Internal {
                    what: "resumed without ticket",
                })?;
            // RFC 7627 §5.3: an EMS session must be resumed with EMS.
            if ticket.extended_master_secret && !ext.extended_master_secret {
                return Err(HandshakeError::ExtendedMasterSecretRequired);
            }
            self.hs.master = Some(ticket.master.clone());
            self.hs.resumed = true;
            self.hs.transcript.stop_retaining();
            self.hs.install_keys(Role::Client)?;
            return Ok(if self.hs.send_ticket {
                State::ExpectNewSessionTicket
            } else {
                State::ExpectChangeCipherSpec
            });
        }
        Ok(if suite.uses_certificate() {
            State::ExpectServerCertificate
        } else {
            State::ExpectServerKeyExchange
        })
    }

    fn handle_server_certificate(
        &mut self,
        body: &[u8],
        wall: UnixTime,
    ) -> Result<State, HandshakeError> {
        let cert = Certificate::parse(body).map_err(decode("Certificate"))?;
        let chain: Vec<CertificateDer<'static>> =
            cert.chain.into_iter().map(CertificateDer::from).collect();
        let name = self
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| self.peer.ip().to_string());
        self.config
            .peer_verification
            .verify_server(&chain, &name, wall)
            .map_err(|source| HandshakeError::BadCertificate { source })?;
        self.hs.peer_identity = PeerIdentity::Certificates(chain.clone());
        self.hs.peer_chain = chain;
        Ok(State::ExpectServerKeyExchange)
    }

    fn handle_server_key_exchange(&mut self, body: &[u8]) -> Result<State, HandshakeError> {
        let suite = self.hs.suite()?;
        let ske = ServerKeyExchange::parse(body, suite.key_exchange())
            .map_err(decode("ServerKeyExchange"))?;
        if let ServerKeyExchange::Ecdhe { params, signature } = &ske {
            let scheme = signature.scheme;
            let scheme_fits = match suite.key_exchange() {
                KeyExchange::EcdheRsa => scheme.is_rsa(),
                _ => scheme.is_ecdsa_or_eddsa(),
            };
            // RFC 5246 §7.4.1.4.1: the server's scheme must be one the client offered.
            if !scheme_fits || !self.config.signature_schemes.contains(&scheme) {
                return Err(HandshakeError::IllegalParameter {
                    what: "ServerKeyExchange signature scheme",
                });
            }
            let signed = params
                .signed_message(&self.hs.client_random, &self.hs.server_random)
                .map_err(decode("ServerKeyExchange"))?;
            let end_entity = self.hs.peer_chain.first().ok_or(HandshakeError::Internal {
                what: "no server certificate",
            })?;
            // RFC 8422 §5.4: the client verifies the signature over the params.
            verify_signature(scheme, end_entity, &signed, &signature.signature)
                .map_err(|_| HandshakeError::BadSignature)?;
        }
        match &ske {
            ServerKeyExchange::Psk { identity_hint }
            | ServerKeyExchange::EcdhePsk { identity_hint, .. } => {
                self.hs.psk_identity_hint = Some(identity_hint.clone());
            }
            ServerKeyExchange::Ecdhe { .. } => {}
        }
        if let Some(params) = ske.ecdhe_params() {
            // We offered only configured groups, which `Config::validate` keeps to the ones
            // our crypto implements.
            if !self.config.groups.contains(&params.group) {
                return Err(HandshakeError::IllegalParameter {
                    what: "server chose a group we did not offer",
                });
            }
            self.hs.ecdhe = Some(EphemeralKeyPair::generate(params.group, &mut *self.rng)?);
            self.hs.peer_public = params.public.clone();
        }
        Ok(State::ExpectServerHelloDone)
    }

    fn handle_certificate_request(&mut self, body: &[u8]) -> Result<State, HandshakeError> {
        let req = CertificateRequest::parse(body).map_err(decode("CertificateRequest"))?;
        self.hs.cert_requested = true;
        self.hs.cert_request_schemes = req
            .signature_schemes
            .iter()
            .filter(|s| self.config.signature_schemes.contains(s))
            .copied()
            .collect();
        Ok(State::ExpectServerHelloDone)
    }

    fn handle_server_hello_done(
        &mut self,
        now: Instant,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        dtls_proto::ServerHelloDone::parse(body).map_err(decode("ServerHelloDone"))?;
        let suite = self.hs.suite()?;
        let mut flight = Flight::default();
        // RFC 5246 §7.4.6: the client sends a Certificate (possibly empty) when asked.
        let mut sent_cert = None;
        if self.hs.cert_requested {
            let cert = self.config.certificate.clone();
            let chain = cert
                .as_ref()
                .map(|c| c.chain.iter().map(|d| d.to_vec()).collect())
                .unwrap_or_default();
            self.hs.push_message(
                &mut flight,
                0,
                &HandshakeMessage::Certificate(Certificate { chain }),
            )?;
            sent_cert = cert;
        } else {
            self.hs.transcript.stop_retaining();
        }

        let psk = || {
            self.config
                .psks
                .first()
                .cloned()
                .ok_or(HandshakeError::NoPsk)
        };
        let (cke, premaster) = match suite.key_exchange() {
            KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa => {
                let ours = self.hs.ecdhe.take().ok_or(HandshakeError::Internal {
                    what: "no ECDHE key",
                })?;
                let public = ours.public_key().to_vec();
                let premaster = ours.agree(&self.hs.peer_public)?;
                (ClientKeyExchange::Ecdhe { public }, premaster)
            }
            KeyExchange::Psk => {
                let psk = psk()?;
                self.hs.peer_identity = PeerIdentity::None;
                self.hs.psk_identity = Some(psk.identity.clone());
                (
                    ClientKeyExchange::Psk {
                        identity: psk.identity.clone(),
                    },
                    PremasterSecret::psk(&psk.key)?,
                )
            }
            KeyExchange::EcdhePsk => {
                let psk = psk()?;
                let ours = self.hs.ecdhe.take().ok_or(HandshakeError::Internal {
                    what: "no ECDHE key",
                })?;
                let public = ours.public_key().to_vec();
                let ecdhe = ours.agree(&self.hs.peer_public)?;
                self.hs.psk_identity = Some(psk.identity.clone());
                (
                    ClientKeyExchange::EcdhePsk {
                        identity: psk.identity.clone(),
                        public,
                    },
                    PremasterSecret::ecdhe_psk(ecdhe, &psk.key)?,
                )
            }
        };
        self.hs
            .push_message(&mut flight, 0, &HandshakeMessage::ClientKeyExchange(cke))?;
        self.derive_master(&premaster)?;

        if let Some(cert) = sent_cert.filter(|c| !c.chain.is_empty()) {
            // RFC 5246 §7.4.8: CertificateVerify signs all handshake messages so far.
            let scheme = cert
                .key
                .choose_scheme(&self.hs.cert_request_schemes)
                .ok_or(HandshakeError::NoCommonSignatureScheme)?;
            let messages = self
                .hs
                .transcript
                .messages()
                .ok_or(HandshakeError::Internal {
                    what: "transcript not retained",
                })?;
            let signature = cert.key.sign(scheme, messages)?;
            self.hs.push_message(
                &mut flight,
                0,
                &HandshakeMessage::CertificateVerify(CertificateVerify {
                    signed: DigitallySigned { scheme, signature },
                }),
            )?;
            self.hs.transcript.stop_retaining();
        }
        self.push_ccs_and_finished(&mut flight, Sender::Client)?;
        self.send_flight(now, flight, true)?;
        Ok(if self.hs.send_ticket {
            State::ExpectNewSessionTicket
        } else {
            State::ExpectChangeCipherSpec
        })
    }

    /// Master secret (EMS over the transcript through ClientKeyExchange, RFC 7627 §4) and
    /// the keys of the next epoch.
    pub(crate) fn derive_master(
        &mut self,
        premaster: &PremasterSecret,
    ) -> Result<(), HandshakeError> {
        let suite = self.hs.suite()?;
        let session_hash = self.hs.transcript.current_hash()?;
        let master = MasterBytes::derive(
            suite.prf_hash(),
            premaster,
            self.hs
                .extended_master_secret
                .then_some(session_hash.as_bytes()),
            &self.hs.client_random,
            &self.hs.server_random,
        );
        self.hs.master = Some(master);
        self.hs.install_keys(self.role)
    }

    /// Appends ChangeCipherSpec and our Finished to `flight`, the Finished in the epoch
    /// the ChangeCipherSpec switches to: the newest one, whose keys were just installed.
    pub(crate) fn push_ccs_and_finished(
        &mut self,
        flight: &mut Flight,
        sender: Sender,
    ) -> Result<(), HandshakeError> {
        flight.messages.push(OutMessage::ChangeCipherSpec);
        let verify_data = self.hs.verify_data(sender)?;
        let epoch = self.hs.writer.newest_epoch();
        self.hs.push_message(
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
        let finished = Finished::parse(&message.body).map_err(decode("Finished"))?;
        let expected = self.hs.verify_data(sender)?;
        if !ct_eq(&expected, &finished.verify_data) {
            return Err(HandshakeError::BadFinished);
        }
        self.hs.transcript.update(&message.transcript_bytes());
        Ok(())
    }

    fn handle_server_finished(
        &mut self,
        now: Instant,
        message: &Message,
    ) -> Result<State, HandshakeError> {
        self.check_peer_finished(message, Sender::Server)?;
        if self.hs.resumed {
            // Abbreviated handshake: our CCS and Finished are the final flight, resent only
            // when the server retransmits (RFC 6347 §4.2.4).
            let mut flight = Flight::default();
            self.push_ccs_and_finished(&mut flight, Sender::Client)?;
            self.send_flight(now, flight, false)?;
        }
        self.complete()
    }
}
