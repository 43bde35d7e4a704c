//! The DTLS 1.3 client: ClientHello (again after a HelloRetryRequest), the server's
//! flight (ServerHello, EncryptedExtensions, CertificateRequest, Certificate,
//! CertificateVerify, Finished) and our final flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::tls13::{ClientKeyShare, EarlySecret, LabelPrefix, PskKind};
use dtls_crypto::{HandshakeHash, Rng};
use dtls_proto::tls13::extensions::{
    emit_connection_id, emit_cookie, emit_key_share_client, emit_psk_key_exchange_modes,
    emit_supported_versions_client, parse_connection_id, parse_cookie, parse_key_share_retry,
    parse_key_share_server, parse_pre_shared_key_server, parse_supported_versions_server,
};
use dtls_proto::tls13::messages::{has_downgrade_sentinel, is_hello_retry_request};
use dtls_proto::tls13::{
    CertificateRequest13, EncryptedExtensions, KeyShareEntry, OfferedPsks, PskIdentity,
    PskKeyExchangeMode,
};
use dtls_proto::{
    ClientHello, ExtensionType, Extensions, HandshakeType, NamedGroup, ProtocolVersion, RANDOM_LEN,
    ReassembledMessage, ServerHello, ServerName, SignatureScheme, SrtpProtectionProfile, UseSrtp,
};

use super::messages::{
    binder_transcript, certificate_body, certificate_verify_body, check_certificate_verify, decode,
    offered_schemes, parse_certificate, psk_binder, push_raw, raw, retry_prefix,
};
use super::psk::{Offer, offers};
use super::{Core13, EPOCH_APPLICATION, EPOCH_HANDSHAKE, Engine13, Secrets13, Side13, State13};
use crate::config::{Config, ConfigError};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::keys::ticket::SessionTicket;
use crate::role::Role;

/// What only a client keeps during a DTLS 1.3 handshake.
#[derive(Debug)]
pub(crate) struct ClientState13 {
    random: [u8; RANDOM_LEN],
    /// The ClientHello we sent last (a DTLS 1.2 engine takes it over on fallback).
    hello: Option<ClientHello>,
    /// Our key share, until the ServerHello (or a HelloRetryRequest) answers it.
    key_share: Option<ClientKeyShare>,
    /// The suite a HelloRetryRequest chose (RFC 8446 §4.1.4: the ServerHello must repeat it).
    retry_suite: Option<dtls_proto::CipherSuite>,
    /// The server's CertificateRequest: its context and the schemes it accepts.
    cert_request: Option<(Vec<u8>, Vec<SignatureScheme>)>,
    /// The server's chain, end-entity first.
    peer_chain: Vec<CertificateDer<'static>>,
    /// The ALPN protocol the server chose.
    alpn: Option<Vec<u8>>,
    /// The SRTP protection profile the server chose in EncryptedExtensions (RFC 5764).
    srtp_profile: Option<SrtpProtectionProfile>,
    /// The body of the ClientHello we sent last (its hash goes into message_hash after a
    /// HelloRetryRequest; PSK binders cover it).
    last_body: Vec<u8>,
    /// The server accepted one of our PSKs (RFC 8446 §4.2.11).
    psk_accepted: bool,
    /// A DTLS 1.3 ticket to resume (RFC 8446 §2.2).
    ticket: Option<SessionTicket>,
    /// The PSKs of our last ClientHello, in its order.
    offers: Vec<Offer>,
    /// The index of the PSK the server selected.
    selected: Option<usize>,
    /// The CID we offered in connection_id (RFC 9146 §3), possibly empty; `None` when
    /// CIDs are off.
    offered_cid: Option<Vec<u8>>,
}

impl ClientState13 {
    /// After the handshake: the ClientHello (its key shares, PSK offers and body), the
    /// server's CertificateRequest and chain and the ticket offered are spent.
    pub(crate) fn settle(&mut self) {
        self.hello = None;
        self.key_share = None;
        self.cert_request = None;
        self.peer_chain = Vec::new();
        self.last_body = Vec::new();
        self.ticket = None;
        self.offers = Vec::new();
    }
}

impl Engine13 {
    /// Starts a DTLS 1.3 client handshake with `peer` and queues the first ClientHello.
    pub(crate) fn client(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        peer: SocketAddr,
        resume: Option<SessionTicket>,
    ) -> Result<Self, ConfigError> {
        config.validate_client()?;
        let mut core = Core13::new(Role::Client, config, rng, peer, 0);
        let mut random = [0u8; RANDOM_LEN];
        core.rng.fill(&mut random);
        let offered_cid = core
            .config
            .connection_id
            .cid_len()
            .map(|len| core.issuer.issue(len, &mut *core.rng));
        let mut client = ClientState13 {
            random,
            hello: None,
            key_share: None,
            retry_suite: None,
            cert_request: None,
            peer_chain: Vec::new(),
            alpn: None,
            srtp_profile: None,
            last_body: Vec::new(),
            psk_accepted: false,
            ticket: resume.filter(|t| t.usable13(now)),
            offers: Vec::new(),
            selected: None,
            offered_cid,
        };
        let first_group = core.config.tls13_groups.first().copied();
        match first_group {
            Some(group) => {
                if let Err(e) = client.send_client_hello(&mut core, now, group, None) {
                    core.fail(e);
                }
            }
            None => core.fail(HandshakeError::NoCommonGroup),
        }
        Ok(Self {
            core,
            side: Side13::Client(Box::new(client)),
        })
    }
}

/// Our ClientHello (RFC 8446 §4.1.2 in the DTLS form of RFC 9147 §5.3).
fn build_client_hello(
    config: &Config,
    random: [u8; RANDOM_LEN],
    share: &ClientKeyShare,
    cookie: Option<&[u8]>,
    offers: &[Offer],
    cid: Option<&[u8]>,
) -> Result<ClientHello, HandshakeError> {
    let internal = |_| HandshakeError::Internal {
        what: "ClientHello extension",
    };
    let offers_dtls12 = config.allows(ProtocolVersion::Dtls1_2);
    let mut ext = Extensions {
        // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName".
        server_name: config
            .server_name
            .as_ref()
            .filter(|n| n.parse::<std::net::IpAddr>().is_err())
            .map(|n| ServerName::HostName(n.clone())),
        supported_groups: Some(config.tls13_groups.clone()),
        signature_algorithms: Some(offered_schemes(&config.signature_schemes)),
        alpn: (!config.alpn_protocols.is_empty()).then(|| config.alpn_protocols.clone()),
        // RFC 8446 §4.2 lists use_srtp for the ClientHello and EncryptedExtensions; the data
        // is RFC 5764 §4.1.1's, with an empty MKI as in our DTLS 1.2 hello.
        use_srtp: (!config.srtp_profiles.is_empty()).then(|| UseSrtp {
            profiles: config.srtp_profiles.clone(),
            mki: Vec::new(),
        }),
        ..Extensions::default()
    };
    // RFC 8446 §4.2.1: "Implementations of this specification MUST send this extension in
    // the ClientHello containing all versions of TLS which they are prepared to negotiate".
    let mut versions = Vec::new();
    let offered: &[ProtocolVersion] = if offers_dtls12 {
        &[ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2]
    } else {
        &[ProtocolVersion::Dtls1_3]
    };
    emit_supported_versions_client(offered, &mut versions).map_err(internal)?;
    let mut cipher_suites = config.tls13_cipher_suites.clone();
    if offers_dtls12 {
        // One ClientHello for both versions: the DTLS 1.2 engine's own (suites, extended
        // master secret, renegotiation_info, ...) with the DTLS 1.3 parts added, so that
        // a DTLS 1.2 server's answer can be taken over by the 1.2 engine as is.
        let base = crate::client::build_client_hello(config, random, Vec::new(), None, cid);
        let mut groups = config.tls13_groups.clone();
        for g in base.extensions.supported_groups.iter().flatten() {
            if !groups.contains(g) {
                groups.push(*g);
            }
        }
        cipher_suites.extend(base.cipher_suites.iter().copied());
        ext = Extensions {
            server_name: ext.server_name,
            supported_groups: Some(groups),
            alpn: ext.alpn,
            use_srtp: ext.use_srtp,
            ..base.extensions
        };
    }
    if let Some(cid) = cid.filter(|_| !offers_dtls12) {
        // RFC 9146 §3: the CID we want to receive (the combined hello has it from the
        // DTLS 1.2 engine's, where the same extension means the same).
        let mut data = Vec::with_capacity(1 + cid.len());
        emit_connection_id(cid, &mut data).map_err(internal)?;
        push_raw(&mut ext, ExtensionType::ConnectionId, data);
        // RFC 9853 §3: "A client offering the `rrc` extension MUST also offer the
        // `connection_id` extension"; its extension_data is empty. (The combined hello
        // has it from the DTLS 1.2 engine's with the CID.)
        if config.rrc {
            push_raw(&mut ext, ExtensionType::Rrc, Vec::new());
        }
    }
    push_raw(&mut ext, ExtensionType::SupportedVersions, versions);
    if let Some(cookie) = cookie {
        // RFC 8446 §4.2.2: the cookie of a HelloRetryRequest goes back in the new
        // ClientHello. Before the key share (RFC 8446 §4.2 leaves the order free but for
        // pre_shared_key): a hybrid share pushes the hello past one datagram, and a server
        // that reads the first fragment statelessly (wolfSSL) needs the cookie in it.
        let mut body = Vec::new();
        emit_cookie(cookie, &mut body).map_err(internal)?;
        push_raw(&mut ext, ExtensionType::Cookie, body);
    }
    let mut shares = Vec::new();
    emit_key_share_client(
        &[KeyShareEntry {
            group: share.group(),
            key_exchange: share.public_key().to_vec(),
        }],
        &mut shares,
    )
    .map_err(internal)?;
    push_raw(&mut ext, ExtensionType::KeyShare, shares);
    let mut hello = ClientHello {
        // RFC 9147 §5.3: "legacy_version: ... MUST be set to {254, 253}".
        client_version: ProtocolVersion::Dtls1_2,
        random,
        // RFC 9147 §5.3: DTLS 1.3 has no middlebox compatibility mode: empty session id.
        session_id: Vec::new(),
        // RFC 9147 §5.3: "legacy_cookie: ... MUST be set to a zero-length vector".
        cookie: Vec::new(),
        cipher_suites,
        compression_methods: vec![dtls_proto::COMPRESSION_NULL],
        extensions: ext,
    };
    // A server answers a ClientHello without its cookie with at most as many bytes as the
    // hello had (RFC 9147 §5.1 on amplification; ours and most others drop a larger
    // HelloRetryRequest). Its HelloRetryRequest carries a cookie with the hash of this
    // hello, up to ~210 bytes with SHA-384, so a smaller hello (a single classical key
    // share) is padded to MIN_CLIENT_HELLO with the RFC 7685 padding extension.
    let psk = (!offers.is_empty()).then(|| OfferedPsks {
        identities: offers
            .iter()
            .map(|o| PskIdentity {
                identity: o.identity.clone(),
                obfuscated_ticket_age: o.obfuscated_ticket_age,
            })
            .collect(),
        // Filled in once the rest of the hello is known (send_client_hello).
        binders: offers
            .iter()
            .map(|o| vec![0; o.hash.output_len()])
            .collect(),
    });
    let mut psk_ext = Vec::new();
    if let Some(offer) = &psk {
        offer.emit(&mut psk_ext).map_err(internal)?;
    }
    // (No modes configured: no PSK is offered, see `offers`, and no ticket asked for.)
    if (psk.is_some() || config.offer_session_ticket) && !config.tls13_psk_modes.is_empty() {
        // RFC 8446 §4.2.9: "A client MUST provide a "psk_key_exchange_modes" extension if
        // it offers a "pre_shared_key" extension"; it also tells the server which tickets
        // we can use ("Servers SHOULD NOT send NewSessionTicket with tickets that are not
        // compatible with the advertised modes"). Ours are the configured modes (the key
        // share stays, for a server that takes psk_dhe_ke or no PSK).
        let mut modes = Vec::new();
        emit_psk_key_exchange_modes(&config.tls13_psk_modes, &mut modes).map_err(internal)?;
        push_raw(
            &mut hello.extensions,
            ExtensionType::PskKeyExchangeModes,
            modes,
        );
    }
    let mut body = Vec::new();
    hello.emit(&mut body).map_err(internal)?;
    let psk_len = if psk.is_some() { 4 + psk_ext.len() } else { 0 };
    if body.len() + psk_len + 4 < MIN_CLIENT_HELLO {
        let pad = MIN_CLIENT_HELLO - body.len() - psk_len - 4;
        push_raw(&mut hello.extensions, ExtensionType::Padding, vec![0; pad]);
    }
    if psk.is_some() {
        // RFC 8446 §4.2.11: "The "pre_shared_key" extension MUST be the last extension in
        // the ClientHello".
        push_raw(&mut hello.extensions, ExtensionType::PreSharedKey, psk_ext);
    }
    Ok(hello)
}

/// The smallest ClientHello body we send (see [`build_client_hello`]): with the record
/// and handshake headers, 281 bytes on the wire.
const MIN_CLIENT_HELLO: usize = 256;

impl ClientState13 {
    fn send_client_hello(
        &mut self,
        core: &mut Core13,
        now: Instant,
        group: NamedGroup,
        cookie: Option<&[u8]>,
    ) -> Result<(), HandshakeError> {
        let share = ClientKeyShare::generate(group, &mut *core.rng)?;
        let offers = offers(&core.config, self.ticket.as_ref(), self.retry_suite, now);
        let hello = build_client_hello(
            &core.config,
            self.random,
            &share,
            cookie,
            &offers,
            self.offered_cid.as_deref(),
        )?;
        self.key_share = Some(share);
        let mut body = Vec::new();
        hello
            .emit(&mut body)
            .map_err(|_| HandshakeError::Internal {
                what: "ClientHello too long",
            })?;
        if !offers.is_empty() {
            // RFC 8446 §4.2.11.2: each binder covers the hello up to the binders list,
            // in its PSK's hash.
            let binders_len = 2 + offers
                .iter()
                .map(|o| 1 + o.hash.output_len())
                .sum::<usize>();
            let binders = offers
                .iter()
                .map(|o| {
                    let transcript =
                        binder_transcript(o.hash, &core.retry_prefix, &body, binders_len);
                    psk_binder(o.hash, o.kind, &o.key, &transcript)
                        .as_bytes()
                        .to_vec()
                })
                .collect();
            let mut tail = Vec::with_capacity(binders_len);
            OfferedPsks {
                identities: Vec::new(),
                binders,
            }
            .emit_binders(&mut tail)
            .map_err(|_| HandshakeError::Internal {
                what: "PSK binders",
            })?;
            body.truncate(body.len().saturating_sub(binders_len));
            body.extend_from_slice(&tail);
        }
        // The hello as sent, binders included: a DTLS 1.2 engine that takes it over hashes
        // these bytes into its transcript.
        let hello = if !offers.is_empty() {
            ClientHello::parse(&body).map_err(decode("our ClientHello"))?
        } else {
            hello
        };
        self.offers = offers;
        self.last_body = body.clone();
        self.hello = Some(hello);
        let message = core.out_message(0, HandshakeType::ClientHello, body);
        core.send_flight(now, vec![message])
    }

    pub(crate) fn handle_message(
        &mut self,
        core: &mut Core13,
        now: Instant,
        wall: UnixTime,
        message: ReassembledMessage,
    ) -> Result<State13, HandshakeError> {
        let state = core.state;
        let body = message.body;
        let unexpected = HandshakeError::UnexpectedMessage {
            state: state.name(),
            got: message.msg_type.to_u8(),
        };
        match (state, message.msg_type) {
            (State13::ExpectServerHello, HandshakeType::ServerHello) => {
                self.handle_server_hello(core, now, &body)
            }
            (State13::ExpectServerHello, HandshakeType::HelloVerifyRequest)
                if self.retry_suite.is_none() =>
            {
                // A DTLS 1.2 server's cookie exchange (RFC 6347 §4.2.1): DTLS 1.2 it is,
                // if we offered it.
                self.fall_back(core)?;
                Ok(state)
            }
            (State13::ExpectEncryptedExtensions, HandshakeType::EncryptedExtensions) => {
                core.hash_message(message.msg_type, &body);
                self.handle_encrypted_extensions(core, &body)
            }
            (State13::ExpectCertificateOrRequest, HandshakeType::CertificateRequest) => {
                core.hash_message(message.msg_type, &body);
                let request =
                    CertificateRequest13::parse(&body).map_err(decode("CertificateRequest"))?;
                let schemes = request.extensions.signature_algorithms.unwrap_or_default();
                self.cert_request = Some((request.context, schemes));
                Ok(State13::ExpectCertificate)
            }
            (
                State13::ExpectCertificateOrRequest | State13::ExpectCertificate,
                HandshakeType::Certificate,
            ) => {
                core.hash_message(message.msg_type, &body);
                self.handle_certificate(core, &body, wall)
            }
            (State13::ExpectCertificateVerify, HandshakeType::CertificateVerify) => {
                let hash = core.transcript.current_hash()?;
                let end_entity = self.peer_chain.first().ok_or(HandshakeError::Internal {
                    what: "CertificateVerify without chain",
                })?;
                check_certificate_verify(
                    &body,
                    &offered_schemes(&core.config.signature_schemes),
                    end_entity,
                    true,
                    &hash,
                )?;
                core.hash_message(message.msg_type, &body);
                Ok(State13::ExpectFinished)
            }
            (State13::ExpectFinished, HandshakeType::Finished) => {
                self.handle_finished(core, now, &body)
            }
            _ => Err(unexpected),
        }
    }

    fn handle_server_hello(
        &mut self,
        core: &mut Core13,
        now: Instant,
        body: &[u8],
    ) -> Result<State13, HandshakeError> {
        let hello = ServerHello::parse(body).map_err(decode("ServerHello"))?;
        let Some(versions) = raw(&hello.extensions, ExtensionType::SupportedVersions) else {
            // A DTLS 1.2 ServerHello. RFC 8446 §4.1.3: "TLS 1.3 clients receiving a
            // ServerHello indicating TLS 1.2 or below MUST check that the last 8 bytes are
            // not equal to either of these values. ... If a match is found, the client MUST
            // abort the handshake with an "illegal_parameter" alert."
            if has_downgrade_sentinel(&hello.random) {
                return Err(HandshakeError::IllegalParameter {
                    what: "downgrade sentinel in ServerHello",
                });
            }
            if self.retry_suite.is_some() || hello.server_version != ProtocolVersion::Dtls1_2 {
                return Err(HandshakeError::ProtocolVersion {
                    version: hello.server_version.to_u16(),
                });
            }
            self.fall_back(core)?;
            return Ok(State13::ExpectServerHello);
        };
        let version =
            parse_supported_versions_server(versions).map_err(decode("supported_versions"))?;
        // RFC 8446 §4.2.1: "If the "supported_versions" extension in the ServerHello
        // contains a version not offered by the client ..., the client MUST abort the
        // handshake with an "illegal_parameter" alert."
        if version != ProtocolVersion::Dtls1_3 {
            return Err(HandshakeError::IllegalParameter {
                what: "supported_versions not offered",
            });
        }
        // RFC 9147 §5.3 / RFC 8446 §4.1.3: legacy_version {254, 253}, the session id
        // echoed (empty), null compression.
        if hello.server_version != ProtocolVersion::Dtls1_2
            || !hello.session_id.is_empty()
            || hello.compression_method != dtls_proto::COMPRESSION_NULL
        {
            return Err(HandshakeError::IllegalParameter {
                what: "ServerHello legacy fields",
            });
        }
        // RFC 8446 §4.1.3: "A client which receives a cipher suite that was not offered
        // MUST abort the handshake with an "illegal_parameter" alert."
        let suite = hello
            .cipher_suite
            .tls13_params()
            .filter(|_| {
                core.config
                    .tls13_cipher_suites
                    .contains(&hello.cipher_suite)
            })
            .ok_or(HandshakeError::IllegalParameter {
                what: "cipher suite not offered",
            })?;
        // RFC 8446 §4.1.4: the ServerHello's suite must be the HelloRetryRequest's.
        if self.retry_suite.is_some_and(|s| s != hello.cipher_suite) {
            return Err(HandshakeError::IllegalParameter {
                what: "ServerHello suite differs from HelloRetryRequest",
            });
        }
        core.suite = Some(suite);
        core.transcript.select_hash(suite.hash())?;
        let allowed: &[ExtensionType] = if is_hello_retry_request(&hello.random) {
            &[
                ExtensionType::SupportedVersions,
                ExtensionType::KeyShare,
                ExtensionType::Cookie,
            ]
        } else if self.offered_cid.is_some() && core.config.rrc {
            &[
                ExtensionType::SupportedVersions,
                ExtensionType::KeyShare,
                ExtensionType::PreSharedKey,
                ExtensionType::ConnectionId,
                ExtensionType::Rrc,
            ]
        } else {
            &[
                ExtensionType::SupportedVersions,
                ExtensionType::KeyShare,
                ExtensionType::PreSharedKey,
                ExtensionType::ConnectionId,
            ]
        };
        // RFC 8446 §4.1.3 / §4.2: extensions not offered abort with unsupported_extension.
        if let Some(t) = hello
            .extensions
            .present_types()
            .into_iter()
            .find(|t| !allowed.contains(t))
        {
            return Err(HandshakeError::UnsupportedExtension {
                ext_type: t.to_u16(),
            });
        }
        if is_hello_retry_request(&hello.random) {
            return self.handle_hello_retry_request(core, now, &hello, body);
        }
        let psk = match raw(&hello.extensions, ExtensionType::PreSharedKey) {
            Some(data) => {
                let selected =
                    parse_pre_shared_key_server(data).map_err(decode("pre_shared_key"))?;
                // RFC 8446 §4.2.11: "Clients MUST verify that the server's
                // selected_identity is within the range supplied by the client, that the
                // server selected a cipher suite indicating a Hash associated with the PSK".
                let index = usize::from(selected);
                let offer = self
                    .offers
                    .get(index)
                    .filter(|o| suite.hash() == o.hash)
                    .ok_or(HandshakeError::IllegalParameter {
                        what: "pre_shared_key selection",
                    })?;
                self.psk_accepted = true;
                self.selected = Some(index);
                Some(offer.key.clone())
            }
            None => None,
        };
        let share = self.key_share.take().ok_or(HandshakeError::Internal {
            what: "no key share",
        })?;
        let shared = match raw(&hello.extensions, ExtensionType::KeyShare) {
            Some(data) => {
                let entry = parse_key_share_server(data).map_err(decode("key_share"))?;
                // RFC 8446 §4.2.8: the server's share must be in the group of the client's.
                if entry.group != share.group() {
                    return Err(HandshakeError::IllegalParameter {
                        what: "key_share group not offered",
                    });
                }
                Some(share.complete(&entry.key_exchange)?)
            }
            None => None,
        };
        // RFC 8446 §4.2.9: "Servers MUST NOT select a key exchange mode that is not listed
        // by the client": psk_dhe_ke with a key share, psk_ke without; without a PSK the
        // key share is required.
        let mode = if shared.is_some() {
            PskKeyExchangeMode::PskDheKe
        } else {
            PskKeyExchangeMode::PskKe
        };
        let allowed = match psk {
            Some(_) => core.config.tls13_psk_modes.contains(&mode),
            None => shared.is_some(),
        };
        if !allowed {
            return Err(HandshakeError::IllegalParameter {
                what: "ServerHello key exchange mode not offered",
            });
        }
        if let Some(data) = raw(&hello.extensions, ExtensionType::ConnectionId) {
            // RFC 8446 §4.2: an extension we did not offer aborts the handshake.
            let local = self
                .offered_cid
                .clone()
                .ok_or(HandshakeError::UnsupportedExtension {
                    ext_type: ExtensionType::ConnectionId.to_u16(),
                })?;
            // RFC 9146 §3: "A server willing to use CIDs will respond with a
            // "connection_id" extension in the ServerHello, containing the CID it wishes
            // the client to use when sending messages towards it."
            let peer = parse_connection_id(data).map_err(decode("connection_id"))?;
            if peer.len() > usize::from(crate::config::MAX_CID_LEN) {
                return Err(HandshakeError::IllegalParameter {
                    what: "server connection ID longer than 20 bytes",
                });
            }
            core.negotiate_cids(local, peer);
        }
        if let Some(data) = raw(&hello.extensions, ExtensionType::Rrc) {
            // RFC 9853 §3: the server answers `rrc` only to a client that offered it with
            // `connection_id`, and only with `connection_id` ("If the client includes the
            // `rrc` extension in its ClientHello and if the server also supports RRC, the
            // server MUST include the `rrc` extension"); its extension_data is empty.
            if !data.is_empty() {
                return Err(HandshakeError::IllegalParameter {
                    what: "rrc extension with data",
                });
            }
            let cids = core
                .cids
                .as_mut()
                .ok_or(HandshakeError::UnsupportedExtension {
                    ext_type: ExtensionType::Rrc.to_u16(),
                })?;
            cids.rrc = true;
        }
        core.hash_message(HandshakeType::ServerHello, body);
        let hello_hash = core.transcript.current_hash()?;
        let handshake = EarlySecret::new(
            suite.hash(),
            LabelPrefix::Dtls13,
            psk.as_ref().map(|k| k.as_slice()),
        )
        .into_handshake_secret(shared.as_ref());
        let secrets = Secrets13 {
            client_handshake: handshake.client_handshake_traffic_secret(&hello_hash),
            server_handshake: handshake.server_handshake_traffic_secret(&hello_hash),
            master: handshake.into_master_secret(),
        };
        core.install_read(EPOCH_HANDSHAKE, &secrets.server_handshake)?;
        core.install_write(EPOCH_HANDSHAKE, &secrets.client_handshake)?;
        core.secrets = Some(secrets);
        Ok(State13::ExpectEncryptedExtensions)
    }

    /// Hands the handshake to the DTLS 1.2 engine (the server answered in DTLS 1.2), or
    /// fails with protocol_version when we do not allow DTLS 1.2.
    fn fall_back(&mut self, core: &mut Core13) -> Result<(), HandshakeError> {
        if !core.config.allows(ProtocolVersion::Dtls1_2) {
            // RFC 8446 §4.2.1: a version we did not offer is a protocol_version failure.
            return Err(HandshakeError::ProtocolVersion {
                version: ProtocolVersion::Dtls1_2.to_u16(),
            });
        }
        core.fallback = self
            .hello
            .take()
            .map(|hello| (hello, self.offered_cid.clone()));
        Ok(())
    }

    /// RFC 8446 §4.1.4: a HelloRetryRequest names the group to use (and may carry a
    /// cookie); the client answers with a new ClientHello.
    fn handle_hello_retry_request(
        &mut self,
        core: &mut Core13,
        now: Instant,
        hello: &ServerHello,
        body: &[u8],
    ) -> Result<State13, HandshakeError> {
        // RFC 8446 §4.1.4: "If a client receives a second HelloRetryRequest in the same
        // connection ..., it MUST abort the handshake with an "unexpected_message" alert."
        if self.retry_suite.is_some() {
            return Err(HandshakeError::UnexpectedMessage {
                state: "ExpectServerHello",
                got: HandshakeType::ServerHello.to_u8(),
            });
        }
        self.retry_suite = Some(hello.cipher_suite);
        let current = self.key_share.as_ref().map(ClientKeyShare::group);
        let group = match raw(&hello.extensions, ExtensionType::KeyShare) {
            Some(data) => parse_key_share_retry(data).map_err(decode("key_share"))?,
            None => current.ok_or(HandshakeError::Internal {
                what: "no key share",
            })?,
        };
        // RFC 8446 §4.2.8: the selected group must be one we offered in supported_groups
        // and not the one we already sent a share for, else illegal_parameter.
        if !core.config.tls13_groups.contains(&group)
            || (Some(group) == current && raw(&hello.extensions, ExtensionType::KeyShare).is_some())
        {
            return Err(HandshakeError::IllegalParameter {
                what: "HelloRetryRequest group",
            });
        }
        let cookie = raw(&hello.extensions, ExtensionType::Cookie)
            .map(|data| parse_cookie(data).map_err(decode("cookie")))
            .transpose()?;
        // RFC 8446 §4.1.4: "a HelloRetryRequest which would not result in any change in
        // the ClientHello" aborts with illegal_parameter.
        if cookie.is_none() && Some(group) == current {
            return Err(HandshakeError::IllegalParameter {
                what: "HelloRetryRequest changes nothing",
            });
        }
        // RFC 8446 §4.4.1: ClientHello1 is replaced by message_hash(Hash(ClientHello1)).
        core.transcript.roll_up_for_hello_retry()?;
        core.hash_message(HandshakeType::ServerHello, body);
        let hash = core.suite()?.hash();
        let len = u32::try_from(self.last_body.len())
            .unwrap_or(0)
            .to_be_bytes();
        let header = [HandshakeType::ClientHello.to_u8(), len[1], len[2], len[3]];
        let client_hello1 = HandshakeHash::digest_parts(hash, &[&header, &self.last_body]);
        core.retry_prefix = retry_prefix(&client_hello1, body);
        self.send_client_hello(core, now, group, cookie.as_deref())?;
        Ok(State13::ExpectServerHello)
    }

    fn handle_encrypted_extensions(
        &mut self,
        core: &mut Core13,
        body: &[u8],
    ) -> Result<State13, HandshakeError> {
        let ee = EncryptedExtensions::parse(body).map_err(decode("EncryptedExtensions"))?;
        // RFC 8446 §4.2: only extensions we offered, and none that belong to ServerHello.
        let forbidden = [
            ExtensionType::SupportedVersions,
            ExtensionType::KeyShare,
            ExtensionType::Cookie,
            ExtensionType::SignatureAlgorithms,
        ];
        if let Some(t) = ee
            .extensions
            .present_types()
            .into_iter()
            .find(|t| forbidden.contains(t))
        {
            return Err(HandshakeError::UnsupportedExtension {
                ext_type: t.to_u16(),
            });
        }
        if let Some(list) = &ee.extensions.alpn {
            // RFC 7301 §3.1: exactly one protocol, one we offered.
            match list.as_slice() {
                [one] if core.config.alpn_protocols.contains(one) => self.alpn = Some(one.clone()),
                _ => {
                    return Err(HandshakeError::IllegalParameter {
                        what: "ALPN protocol not offered",
                    });
                }
            }
        }
        if let Some(srtp) = &ee.extensions.use_srtp {
            self.srtp_profile = Some(accepted_srtp_profile(&core.config, srtp)?);
        }
        // RFC 8446 §2.2: with a PSK the server authenticates with it; no certificates.
        if self.psk_accepted {
            return Ok(State13::ExpectFinished);
        }
        Ok(State13::ExpectCertificateOrRequest)
    }

    fn handle_certificate(
        &mut self,
        core: &mut Core13,
        body: &[u8],
        wall: UnixTime,
    ) -> Result<State13, HandshakeError> {
        // RFC 8446 §4.4.2: the server's certificate_request_context is empty.
        let chain = parse_certificate(body, &[])?;
        if chain.is_empty() {
            // RFC 8446 §4.4.2.4: "If the server supplies an empty Certificate message, the
            // client MUST abort the handshake with a "decode_error" alert."
            return Err(HandshakeError::Decode {
                message: "Certificate",
                source: dtls_proto::WireError::BadLength {
                    what: "empty server certificate_list",
                },
            });
        }
        let name = core
            .config
            .server_name
            .clone()
            .unwrap_or_else(|| core.peer.ip().to_string());
        core.config
            .peer_verification
            .verify_server(&chain, &name, wall)
            .map_err(|source| HandshakeError::BadCertificate { source })?;
        self.peer_chain = chain;
        Ok(State13::ExpectCertificateVerify)
    }

    fn handle_finished(
        &mut self,
        core: &mut Core13,
        now: Instant,
        body: &[u8],
    ) -> Result<State13, HandshakeError> {
        let hash = core.transcript.current_hash()?;
        let expected = core.secrets()?.server_handshake.verify_data(&hash);
        // RFC 8446 §4.4.4: "Recipients of Finished messages MUST verify that the contents
        // are correct and if incorrect MUST terminate the connection with a
        // "decrypt_error" alert."
        if !expected.matches(body) {
            return Err(HandshakeError::BadFinished);
        }
        core.hash_message(HandshakeType::Finished, body);
        let server_finished = core.transcript.current_hash()?;
        let mut messages = Vec::new();
        if let Some((context, schemes)) = self.cert_request.take() {
            let certified = core.config.certificate.clone();
            let body = certificate_body(&context, certified.as_deref())?;
            messages.push(core.out_message(EPOCH_HANDSHAKE, HandshakeType::Certificate, body));
            if let Some(certified) = certified {
                let scheme = certified
                    .key
                    .choose_scheme(&schemes)
                    .filter(|s| super::messages::tls13_scheme(*s))
                    .ok_or(HandshakeError::NoCommonSignatureScheme)?;
                let hash = core.transcript.current_hash()?;
                let body = certificate_verify_body(&certified.key, scheme, false, &hash)?;
                messages.push(core.out_message(
                    EPOCH_HANDSHAKE,
                    HandshakeType::CertificateVerify,
                    body,
                ));
            }
        }
        let hash = core.transcript.current_hash()?;
        let verify_data = core.secrets()?.client_handshake.verify_data(&hash);
        messages.push(core.out_message(
            EPOCH_HANDSHAKE,
            HandshakeType::Finished,
            verify_data.as_bytes().to_vec(),
        ));
        // RFC 9147 §5.8.3 / §7: the final flight is retransmitted until the server ACKs it.
        core.send_flight(now, messages)?;
        let selected = self.selected.and_then(|i| self.offers.get(i));
        let resumed = selected.is_some_and(|o| o.kind == PskKind::Resumption);
        let identity = match selected {
            Some(offer) => offer.peer.clone(),
            None => PeerIdentity::Certificates(std::mem::take(&mut self.peer_chain)),
        };
        let negotiated = Negotiated {
            alpn: self.alpn.take(),
            srtp_profile: self.srtp_profile,
        };
        complete(core, &server_finished, identity, negotiated, resumed)?;
        Ok(State13::Established)
    }
}

/// The server's answer to use_srtp in EncryptedExtensions, checked as our DTLS 1.2 client
/// checks it in the ServerHello: RFC 5764 §4.1.1, "The extension_data field MUST contain a
/// UseSRTPData value with a single SRTPProtectionProfile value that the server has chosen
/// for use with this connection. The server MUST NOT select a value that the client has not
/// offered"; and we offer an empty MKI, so a server MKI is one we did not offer ("If the
/// client detects a nonzero-length MKI in the server's response that is different than the
/// one the client offered, then the client MUST abort the handshake"). Not offered at all:
/// RFC 8446 §4.2, "Implementations MUST NOT send extension responses if the remote endpoint
/// did not send the corresponding extension requests ... Upon receiving such an extension,
/// an endpoint MUST abort the handshake with an "unsupported_extension" alert."
pub(super) fn accepted_srtp_profile(
    config: &Config,
    srtp: &UseSrtp,
) -> Result<SrtpProtectionProfile, HandshakeError> {
    if config.srtp_profiles.is_empty() {
        return Err(HandshakeError::UnsupportedExtension {
            ext_type: ExtensionType::UseSrtp.to_u16(),
        });
    }
    match srtp.profiles.as_slice() {
        [one] if config.srtp_profiles.contains(one) && srtp.mki.is_empty() => Ok(*one),
        _ => Err(HandshakeError::IllegalParameter {
            what: "use_srtp profile not offered",
        }),
    }
}

/// What the EncryptedExtensions negotiated, handed over with the keys.
#[derive(Debug, Default)]
pub(crate) struct Negotiated {
    /// The ALPN protocol (RFC 7301).
    pub(crate) alpn: Option<Vec<u8>>,
    /// The SRTP protection profile (RFC 5764); its keys come from the exporter.
    pub(crate) srtp_profile: Option<SrtpProtectionProfile>,
}

/// Both roles: derive the application traffic secrets from the transcript through the
/// server Finished, install epoch 3 both ways and hand the keys over.
pub(crate) fn complete(
    core: &mut Core13,
    server_finished: &HandshakeHash,
    peer_identity: PeerIdentity,
    negotiated: Negotiated,
    resumed: bool,
) -> Result<(), HandshakeError> {
    use crate::events::{EpochKeys13, Event, RecordKeys, SessionKeys};
    use dataplane::record::ReplayWindow;

    let suite = core.suite()?;
    let secrets = core.secrets()?;
    let client = secrets
        .master
        .client_application_traffic_secret(server_finished);
    let server = secrets
        .master
        .server_application_traffic_secret(server_finished);
    let exporter = secrets.master.exporter_master_secret(server_finished);
    // RFC 8446 §7.1: the resumption master secret covers the transcript through the
    // client's Finished (the last message hashed on both sides when this runs).
    let client_finished = core.transcript.current_hash()?;
    let resumption = secrets.master.resumption_master_secret(&client_finished);
    let (own, peer) = match core.role {
        Role::Client => (client, server),
        Role::Server => (server, client),
    };
    core.install_write(EPOCH_APPLICATION, &own)?;
    core.install_read(EPOCH_APPLICATION, &peer)?;
    let next_write = core
        .transport
        .reserve(EPOCH_APPLICATION, super::ENGINE_SEQUENCE_RESERVE)
        .ok_or(HandshakeError::Internal {
            what: "no application write keys",
        })?;
    core.app_secrets = Some((own.duplicate(), peer.duplicate()));
    core.resumption = Some(resumption);
    core.peer_identity = Some(peer_identity.clone());
    let read = EpochKeys13 {
        epoch: EPOCH_APPLICATION,
        keys: core.traffic_keys(&peer)?,
        secret: peer,
        next_sequence: 0,
    };
    let write = EpochKeys13 {
        epoch: EPOCH_APPLICATION,
        keys: core.traffic_keys(&own)?,
        secret: own,
        next_sequence: next_write,
    };
    let keys = SessionKeys {
        peer: core.peer,
        suite: suite.suite(),
        records: RecordKeys::Dtls13 {
            read: Box::new(read),
            write: Box::new(write),
        },
        replay_window: core
            .config
            .replay_window
            .clamp(ReplayWindow::MIN_SIZE, ReplayWindow::MAX_SIZE),
        local_cid: core.cids.as_ref().and_then(|c| c.local.first().cloned()),
        peer_cid: core.cids.as_ref().map(|c| c.peer.clone()),
        // RFC 9853 §3: both sides exchanged `rrc` (with CIDs).
        rrc: core.cids.as_ref().is_some_and(|c| c.rrc),
        peer_identity,
        alpn: negotiated.alpn,
        // RFC 5764 §4.2 keys through the exporter: with DTLS 1.3 that is RFC 8446 §7.5's
        // (exporter_master_secret), label "EXTRACTOR-dtls_srtp", no context.
        srtp_profile: negotiated.srtp_profile,
        heartbeat: None,
        version: ProtocolVersion::Dtls1_3,
        resumed,
        exporter: crate::keys::exporter::Exporter::tls13(exporter),
        ticket: None,
    };
    core.events.push_back(Event::KeysReady(Box::new(keys)));
    core.established();
    Ok(())
}
