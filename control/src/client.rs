//! The client role: ClientHello, HelloVerifyRequest, the server's flight, our key
//! exchange flight and the server's Finished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::{EphemeralKeyPair, PremasterSecret, Rng, Sender, verify_signature};
use dtls_proto::{
    Certificate, CertificateRequest, CertificateVerify, ClientHello, ClientKeyExchange,
    DigitallySigned, ExtensionType, Extensions, HandshakeMessage, HandshakeType,
    HelloVerifyRequest, KeyExchange, NewSessionTicket, ProtocolVersion, RANDOM_LEN, RawExtension,
    ServerHello, ServerKeyExchange, ServerName, SignatureScheme, SuiteParams, UseSrtp, WireError,
};

use crate::config::{Config, ConfigError};
use crate::connection::{ClaimedIdentity, Connection12, Core, Side};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::flight::Flight;
use crate::handshake::{Cids, Message};
use crate::keys::ticket::SessionTicket;
use crate::record_layer::RecordWriter;
use crate::role::Role;
use crate::state::State;

/// At most this many HelloVerifyRequests are answered in one handshake.
const MAX_HELLO_VERIFY_REQUESTS: u8 = 4;

fn decode(message: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |source| HandshakeError::Decode { message, source }
}

/// What only a client keeps during a handshake.
#[derive(Debug)]
pub(crate) struct ClientState {
    /// The ClientHello we sent (resent with the cookie, RFC 6347 §4.2.1).
    hello: ClientHello,
    /// HelloVerifyRequests answered so far.
    hello_verify_count: u8,
    /// The ticket we offered for resumption.
    offered_ticket: Option<SessionTicket>,
    /// Our ephemeral key pair and the server's public value, from ServerKeyExchange.
    key_share: Option<(EphemeralKeyPair, Vec<u8>)>,
    /// The server asked for a certificate: the signature schemes of its
    /// CertificateRequest that we also accept.
    cert_request: Option<Vec<SignatureScheme>>,
    /// The PSK identity we sent.
    psk_identity: Option<Vec<u8>>,
    /// The server included a SessionTicket extension: NewSessionTicket comes
    /// (RFC 5077 §3.3).
    ticket_promised: bool,
    /// The ticket received in this handshake: lifetime hint and ticket.
    new_ticket: Option<(u32, Vec<u8>)>,
    /// The CID we offered in connection_id (RFC 9146 §3), possibly empty; `None` when
    /// connection IDs are off.
    offered_cid: Option<Vec<u8>>,
}

impl Connection12 {
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
        let mut core = Core::new(
            Role::Client,
            config,
            rng,
            peer,
            RecordWriter::new(0),
            State::ExpectServerHello,
        );
        core.rng.fill(&mut core.hs.client_random);
        let mut session_id = Vec::new();
        if resume.is_some() {
            // RFC 5077 §3.4: the client generates a Session ID so it can tell whether the
            // server accepted the ticket (the server echoes it).
            session_id = vec![0u8; 32];
            core.rng.fill(&mut session_id);
        }
        let offered_cid = core.config.connection_id.cid_len().map(|len| {
            let mut cid = vec![0u8; len];
            core.rng.fill(&mut cid);
            cid
        });
        let hello = build_client_hello(
            &core.config,
            core.hs.client_random,
            session_id,
            resume.as_ref(),
            offered_cid.as_deref(),
        );
        let mut client = ClientState {
            hello,
            hello_verify_count: 0,
            offered_ticket: resume,
            key_share: None,
            cert_request: None,
            psk_identity: None,
            ticket_promised: false,
            new_ticket: None,
            offered_cid,
        };
        if let Err(e) = client.send_client_hello(&mut core, now) {
            core.fail(e);
        }
        Ok(Connection12 {
            core,
            side: Side::Client(Box::new(client)),
        })
    }

    /// A client that sends `hello`, built by the DTLS 1.3 engine offering both versions,
    /// which a DTLS 1.2 server answered: the handshake goes on in DTLS 1.2 from it (its
    /// random, the CID it offered, and the same message in the transcript).
    pub(crate) fn client_with_hello(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        peer: SocketAddr,
        hello: ClientHello,
        offered_cid: Option<Vec<u8>>,
    ) -> Self {
        let mut core = Core::new(
            Role::Client,
            config,
            rng,
            peer,
            RecordWriter::new(0),
            State::ExpectServerHello,
        );
        core.hs.client_random = hello.random;
        let mut client = ClientState {
            hello,
            hello_verify_count: 0,
            offered_ticket: None,
            key_share: None,
            cert_request: None,
            psk_identity: None,
            ticket_promised: false,
            new_ticket: None,
            // The combined hello's connection_id (RFC 9146 §3, the same extension in both
            // versions).
            offered_cid,
        };
        if let Err(e) = client.send_client_hello(&mut core, now) {
            core.fail(e);
        }
        Connection12 {
            core,
            side: Side::Client(Box::new(client)),
        }
    }
}

/// The suites we offer: PSK suites only when a PSK is configured.
fn offered_suites(config: &Config) -> Vec<SuiteParams> {
    let has_psk = !config.psks.is_empty();
    config
        .suites()
        .filter(|s| has_psk || !s.uses_psk())
        .collect()
}

pub(crate) fn build_client_hello(
    config: &Config,
    random: [u8; RANDOM_LEN],
    session_id: Vec<u8>,
    offered_ticket: Option<&SessionTicket>,
    cid: Option<&[u8]>,
) -> ClientHello {
    let suites = offered_suites(config);
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
        ext.session_ticket = Some(offered_ticket.map(|t| t.ticket.clone()).unwrap_or_default());
    }
    if let Some(cid) = cid {
        // RFC 9146 §3: the client offers the CID it wants to receive, "A zero-length value
        // indicates that the client is prepared to send using a CID but does not wish the
        // server to use one when sending". The configured length is at most 20 bytes, so
        // the encoding cannot fail.
        let mut data = Vec::with_capacity(1 + cid.len());
        if dtls_proto::tls13::extensions::emit_connection_id(cid, &mut data).is_ok() {
            ext.other.push(RawExtension {
                ext_type: ExtensionType::ConnectionId,
                data,
            });
            // RFC 9853 §3: "A client offering the `rrc` extension MUST also offer the
            // `connection_id` extension"; its extension_data is empty.
            if config.rrc {
                ext.other.push(RawExtension {
                    ext_type: ExtensionType::Rrc,
                    data: Vec::new(),
                });
            }
        }
    }
    ClientHello {
        client_version: ProtocolVersion::Dtls1_2,
        random,
        session_id,
        cookie: Vec::new(),
        cipher_suites: suites.iter().map(|s| s.suite()).collect(),
        compression_methods: vec![dtls_proto::COMPRESSION_NULL],
        extensions: ext,
    }
}

impl ClientState {
    /// Who we claim to be, for logs: the name we verify the server against, and the PSK
    /// identity we would present (the negotiated one, or the configured one while PSK
    /// suites are on offer).
    pub(crate) fn claimed_identity<'a>(&'a self, config: &'a Config) -> ClaimedIdentity<'a> {
        ClaimedIdentity {
            server_name: config.server_name.as_deref(),
            psk_identity: self.psk_identity.as_deref().or_else(|| {
                config
                    .cipher_suites
                    .iter()
                    .any(|s| s.uses_psk())
                    .then(|| config.psks.first().map(|p| p.identity.as_slice()))
                    .flatten()
            }),
        }
    }

    fn send_client_hello(&mut self, core: &mut Core, now: Instant) -> Result<(), HandshakeError> {
        let mut flight = Flight::default();
        core.hs.push_message(
            &mut flight,
            0,
            &HandshakeMessage::ClientHello(self.hello.clone()),
        )?;
        core.send_flight(now, flight, true)
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
        // CertificateVerify is never received by a client; Finished manages the
        // transcript itself (its verify_data covers the messages before it).
        if message.msg_type != HandshakeType::Finished {
            core.hs.transcript.update(&message.transcript_bytes());
        }
        match (core.state, message.msg_type) {
            (State::ExpectServerHello, HandshakeType::HelloVerifyRequest) => {
                self.handle_hello_verify_request(core, now, &message.body)
            }
            (State::ExpectServerHello, HandshakeType::ServerHello) => {
                self.handle_server_hello(core, &message.body)
            }
            (State::ExpectServerCertificate, HandshakeType::Certificate) => {
                self.handle_server_certificate(core, &message.body, wall)
            }
            (State::ExpectServerKeyExchange, HandshakeType::ServerKeyExchange) => {
                self.handle_server_key_exchange(core, &message.body)
            }
            (State::ExpectServerKeyExchange, HandshakeType::ServerHelloDone)
                if core.hs.suite()?.key_exchange() == KeyExchange::Psk =>
            {
                // RFC 4279 §2: with no identity hint the server may omit ServerKeyExchange.
                self.handle_server_hello_done(core, now, &message.body)
            }
            (State::ExpectServerHelloDone, HandshakeType::CertificateRequest)
                if self.cert_request.is_none() && core.hs.suite()?.uses_certificate() =>
            {
                self.handle_certificate_request(core, &message.body)
            }
            (State::ExpectServerHelloDone, HandshakeType::ServerHelloDone) => {
                self.handle_server_hello_done(core, now, &message.body)
            }
            (State::ExpectNewSessionTicket, HandshakeType::NewSessionTicket) => {
                let ticket =
                    NewSessionTicket::parse(&message.body).map_err(decode("NewSessionTicket"))?;
                self.new_ticket = Some((ticket.lifetime_hint, ticket.ticket));
                Ok(State::ExpectChangeCipherSpec)
            }
            (State::ExpectFinished, HandshakeType::Finished) => {
                self.handle_server_finished(core, now, &message)
            }
            _ => Err(unexpected),
        }
    }

    fn handle_hello_verify_request(
        &mut self,
        core: &mut Core,
        now: Instant,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let hvr = HelloVerifyRequest::parse(body).map_err(decode("HelloVerifyRequest"))?;
        self.hello_verify_count += 1;
        if self.hello_verify_count > MAX_HELLO_VERIFY_REQUESTS {
            return Err(HandshakeError::UnexpectedMessage {
                state: "ExpectServerHello",
                got: HandshakeType::HelloVerifyRequest.to_u8(),
            });
        }
        // RFC 6347 §4.2.1: the first ClientHello and the HelloVerifyRequest are not part
        // of the handshake hash.
        core.hs.transcript.reset();
        // RFC 6347 §4.2.1: the client "MUST retransmit the ClientHello with the cookie
        // added" and the same parameters as before.
        self.hello.cookie = hvr.cookie;
        self.send_client_hello(core, now)?;
        Ok(State::ExpectServerHello)
    }

    fn handle_server_hello(
        &mut self,
        core: &mut Core,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let sh = ServerHello::parse(body).map_err(decode("ServerHello"))?;
        // RFC 8446 §4.1.3: a client that offered DTLS 1.3 and gets DTLS 1.2 "MUST check
        // that the last 8 bytes are not equal to either of these values ... If a match is
        // found, the client MUST abort the handshake with an "illegal_parameter" alert."
        if self
            .hello
            .extensions
            .raw(ExtensionType::SupportedVersions)
            .is_some()
            && dtls_proto::tls13::messages::has_downgrade_sentinel(&sh.random)
        {
            return Err(HandshakeError::IllegalParameter {
                what: "downgrade sentinel in a DTLS 1.2 ServerHello",
            });
        }
        // RFC 6347 §4.1 / RFC 5246 §7.4.1.3: we only speak DTLS 1.2.
        if sh.server_version != ProtocolVersion::Dtls1_2 {
            return Err(HandshakeError::ProtocolVersion {
                version: sh.server_version.to_u16(),
            });
        }
        let offered = offered_suites(&core.config);
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
        let offered_ext = &self.hello.extensions;
        // RFC 5246 §7.4.1.4: a client that receives an extension it did not offer
        // "MUST abort the handshake with an unsupported_extension fatal alert".
        let offered_cid = self.offered_cid.is_some();
        let offered_rrc = offered_ext.raw(ExtensionType::Rrc).is_some();
        if let Some(other) = ext.other.iter().find(|e| {
            !(offered_cid && e.ext_type == ExtensionType::ConnectionId
                || offered_rrc && e.ext_type == ExtensionType::Rrc)
        }) {
            return Err(HandshakeError::UnsupportedExtension {
                ext_type: other.ext_type.to_u16(),
            });
        }
        // RFC 9146 §3: a server that supports CIDs answers with the CID it wants to receive;
        // without the extension the session has none ("If the server does not support the
        // extension, it will omit it" and neither side uses CIDs).
        if let (Some(data), Some(local)) = (ext.raw(ExtensionType::ConnectionId), &self.offered_cid)
        {
            let peer = dtls_proto::tls13::extensions::parse_connection_id(data)
                .map_err(decode("ServerHello"))?;
            if peer.len() > usize::from(crate::config::MAX_CID_LEN) {
                return Err(HandshakeError::IllegalParameter {
                    what: "server connection ID longer than 20 bytes",
                });
            }
            // RFC 9853 §3: "The client and server MUST NOT use RRC unless both sides have
            // successfully exchanged `rrc` extensions."
            let rrc = match ext.raw(ExtensionType::Rrc) {
                Some([]) => true,
                Some(_) => {
                    return Err(HandshakeError::IllegalParameter {
                        what: "rrc extension with data",
                    });
                }
                None => false,
            };
            core.hs.cids = Some(Cids {
                local: local.clone(),
                peer,
                rrc,
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
        core.hs.extended_master_secret = ext.extended_master_secret;
        if !ext.extended_master_secret && core.config.require_extended_master_secret {
            return Err(HandshakeError::ExtendedMasterSecretRequired);
        }
        if let Some(list) = &ext.alpn {
            let proto = list.first().cloned().unwrap_or_default();
            // RFC 7301 §3.2: the server's choice must be one the client offered.
            if !core.config.alpn_protocols.contains(&proto) {
                return Err(HandshakeError::IllegalParameter {
                    what: "ALPN protocol not offered",
                });
            }
            core.hs.alpn = Some(proto);
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
            if !core.config.srtp_profiles.contains(&profile) || !srtp.mki.is_empty() {
                return Err(HandshakeError::IllegalParameter {
                    what: "use_srtp profile not offered",
                });
            }
            core.hs.srtp_profile = Some(profile);
        }
        core.hs.heartbeat = ext.heartbeat;
        self.ticket_promised = ext.session_ticket.is_some();
        core.hs.server_random = sh.random;
        core.hs.suite = Some(suite);
        core.hs.transcript.select_hash(suite.prf_hash())?;

        // The server accepted the ticket: it echoed our Session ID (RFC 5077 §3.4).
        let accepted = self.offered_ticket.as_ref().filter(|t| {
            !self.hello.session_id.is_empty()
                && sh.session_id == self.hello.session_id
                && t.suite == suite.suite()
        });
        if let Some(ticket) = accepted {
            // RFC 7627 §5.3: an EMS session must be resumed with EMS.
            if ticket.extended_master_secret && !ext.extended_master_secret {
                return Err(HandshakeError::ExtendedMasterSecretRequired);
            }
            core.hs.resumed = true;
            core.hs.transcript.stop_retaining();
            let master = ticket.master().ok_or(HandshakeError::Internal {
                what: "a DTLS 1.3 ticket in the DTLS 1.2 engine",
            })?;
            core.hs.install_keys(Role::Client, master.clone())?;
            return Ok(if self.ticket_promised {
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
        core: &mut Core,
        body: &[u8],
        wall: UnixTime,
    ) -> Result<State, HandshakeError> {
        let cert = Certificate::parse(body).map_err(decode("Certificate"))?;
        let chain: Vec<CertificateDer<'static>> =
            cert.chain.into_iter().map(CertificateDer::from).collect();
        let name = core
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| core.peer.ip().to_string());
        core.config
            .peer_verification
            .verify_server(&chain, &name, wall)
            .map_err(|source| HandshakeError::BadCertificate { source })?;
        core.hs.peer_identity = PeerIdentity::Certificates(chain.clone());
        core.hs.peer_chain = chain;
        Ok(State::ExpectServerKeyExchange)
    }

    fn handle_server_key_exchange(
        &mut self,
        core: &mut Core,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let suite = core.hs.suite()?;
        let ske = ServerKeyExchange::parse(body, suite.key_exchange())
            .map_err(decode("ServerKeyExchange"))?;
        if let ServerKeyExchange::Ecdhe { params, signature } = &ske {
            let scheme = signature.scheme;
            let scheme_fits = match suite.key_exchange() {
                KeyExchange::EcdheRsa => scheme.is_rsa(),
                _ => scheme.is_ecdsa_or_eddsa(),
            };
            // RFC 5246 §7.4.1.4.1: the server's scheme must be one the client offered.
            if !scheme_fits || !core.config.signature_schemes.contains(&scheme) {
                return Err(HandshakeError::IllegalParameter {
                    what: "ServerKeyExchange signature scheme",
                });
            }
            let signed = params
                .signed_message(&core.hs.client_random, &core.hs.server_random)
                .map_err(decode("ServerKeyExchange"))?;
            let end_entity = core.hs.peer_chain.first().ok_or(HandshakeError::Internal {
                what: "no server certificate",
            })?;
            // RFC 8422 §5.4: the client verifies the signature over the params.
            verify_signature(scheme, end_entity, &signed, &signature.signature)
                .map_err(|_| HandshakeError::BadSignature)?;
        }
        if let Some(params) = ske.ecdhe_params() {
            // We offered only configured groups, which `Config::validate` keeps to the ones
            // our crypto implements.
            if !core.config.groups.contains(&params.group) {
                return Err(HandshakeError::IllegalParameter {
                    what: "server chose a group we did not offer",
                });
            }
            let ours = EphemeralKeyPair::generate(params.group, &mut *core.rng)?;
            self.key_share = Some((ours, params.public.clone()));
        }
        Ok(State::ExpectServerHelloDone)
    }

    fn handle_certificate_request(
        &mut self,
        core: &mut Core,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        let req = CertificateRequest::parse(body).map_err(decode("CertificateRequest"))?;
        self.cert_request = Some(
            req.signature_schemes
                .iter()
                .filter(|s| core.config.signature_schemes.contains(s))
                .copied()
                .collect(),
        );
        Ok(State::ExpectServerHelloDone)
    }

    fn handle_server_hello_done(
        &mut self,
        core: &mut Core,
        now: Instant,
        body: &[u8],
    ) -> Result<State, HandshakeError> {
        dtls_proto::ServerHelloDone::parse(body).map_err(decode("ServerHelloDone"))?;
        let suite = core.hs.suite()?;
        let mut flight = Flight::default();
        // RFC 5246 §7.4.6: the client sends a Certificate (possibly empty) when asked.
        let mut sent_cert = None;
        if self.cert_request.is_some() {
            let cert = core.config.certificate.clone();
            let chain = cert
                .as_ref()
                .map(|c| c.chain.iter().map(|d| d.to_vec()).collect())
                .unwrap_or_default();
            core.hs.push_message(
                &mut flight,
                0,
                &HandshakeMessage::Certificate(Certificate { chain }),
            )?;
            sent_cert = cert;
        } else {
            core.hs.transcript.stop_retaining();
        }

        let psk = || {
            core.config
                .psks
                .first()
                .cloned()
                .ok_or(HandshakeError::NoPsk)
        };
        // ECDHE suites reach ServerHelloDone only through ServerKeyExchange, which made
        // the key share.
        let (cke, premaster) = match (suite.key_exchange(), self.key_share.take()) {
            (KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa, Some((ours, server_public))) => {
                let public = ours.public_key().to_vec();
                let premaster = ours.agree(&server_public)?;
                (ClientKeyExchange::Ecdhe { public }, premaster)
            }
            (KeyExchange::Psk, _) => {
                let psk = psk()?;
                core.hs.peer_identity = PeerIdentity::None;
                self.psk_identity = Some(psk.identity.clone());
                (
                    ClientKeyExchange::Psk {
                        identity: psk.identity.clone(),
                    },
                    PremasterSecret::psk(&psk.key)?,
                )
            }
            (KeyExchange::EcdhePsk, Some((ours, server_public))) => {
                let psk = psk()?;
                let public = ours.public_key().to_vec();
                let ecdhe = ours.agree(&server_public)?;
                self.psk_identity = Some(psk.identity.clone());
                (
                    ClientKeyExchange::EcdhePsk {
                        identity: psk.identity.clone(),
                        public,
                    },
                    PremasterSecret::ecdhe_psk(ecdhe, &psk.key)?,
                )
            }
            (_, None) => {
                return Err(HandshakeError::Internal {
                    what: "no ECDHE key",
                });
            }
        };
        core.hs
            .push_message(&mut flight, 0, &HandshakeMessage::ClientKeyExchange(cke))?;
        core.hs.derive_master(Role::Client, &premaster)?;

        let schemes = self.cert_request.as_deref().unwrap_or_default();
        if let Some(cert) = sent_cert.filter(|c| !c.chain.is_empty()) {
            // RFC 5246 §7.4.8: CertificateVerify signs all handshake messages so far.
            let scheme = cert
                .key
                .choose_scheme(schemes)
                .ok_or(HandshakeError::NoCommonSignatureScheme)?;
            let messages = core
                .hs
                .transcript
                .messages()
                .ok_or(HandshakeError::Internal {
                    what: "transcript not retained",
                })?;
            let signature = cert.key.sign(scheme, messages)?;
            core.hs.push_message(
                &mut flight,
                0,
                &HandshakeMessage::CertificateVerify(CertificateVerify {
                    signed: DigitallySigned { scheme, signature },
                }),
            )?;
            core.hs.transcript.stop_retaining();
        }
        core.hs.push_ccs_and_finished(&mut flight, Sender::Client)?;
        core.send_flight(now, flight, true)?;
        Ok(if self.ticket_promised {
            State::ExpectNewSessionTicket
        } else {
            State::ExpectChangeCipherSpec
        })
    }

    fn handle_server_finished(
        &mut self,
        core: &mut Core,
        now: Instant,
        message: &Message,
    ) -> Result<State, HandshakeError> {
        core.hs.check_peer_finished(message, Sender::Server)?;
        if core.hs.resumed {
            // Abbreviated handshake: our CCS and Finished are the final flight, resent only
            // when the server retransmits (RFC 6347 §4.2.4).
            let mut flight = Flight::default();
            core.hs.push_ccs_and_finished(&mut flight, Sender::Client)?;
            core.send_flight(now, flight, false)?;
        }
        let ticket = match self.new_ticket.take() {
            Some((lifetime_hint, ticket)) if !ticket.is_empty() => Some(SessionTicket::new(
                ticket,
                lifetime_hint,
                core.hs.suite()?.suite(),
                core.hs.extended_master_secret,
                core.hs.secrets()?.master.clone(),
            )),
            _ => None,
        };
        core.complete(ticket)
    }
}
