//! The DTLS 1.3 server: choosing suite, group and signature scheme for a ClientHello, a
//! HelloRetryRequest when the client's key share is for a group we do not take, our
//! flight, and the client's (Certificate, CertificateVerify,) Finished.

use std::sync::Arc;
use std::time::Instant;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::tls13::{EarlySecret, LabelPrefix, PskKind, ServerKeyShare};
use dtls_crypto::{HandshakeHash, Rng};
use dtls_proto::tls13::extensions::{
    emit_connection_id, emit_key_share_retry, emit_key_share_server, emit_pre_shared_key_server,
    emit_supported_versions_server, parse_connection_id, parse_key_share_client,
    parse_psk_key_exchange_modes, parse_supported_versions_client,
};
use dtls_proto::tls13::messages::HELLO_RETRY_REQUEST_RANDOM;
use dtls_proto::tls13::{
    CertificateRequest13, EncryptedExtensions, KeyShareEntry, OfferedPsks, PskKeyExchangeMode,
};
use dtls_proto::{
    CipherSuite, ClientHello, ExtensionType, Extensions, HandshakeType, NamedGroup, PrfHash,
    ProtocolVersion, RANDOM_LEN, ReassembledMessage, ServerHello, ServerName, SignatureScheme,
    SrtpProtectionProfile, Tls13SuiteParams, UseSrtp,
};

use super::client::{Negotiated, complete};
use super::messages::{
    binder_transcript, certificate_body, certificate_verify_body, check_certificate_verify, decode,
    offered_schemes, parse_certificate, pre_shared_key_is_last, psk_binder, push_raw, raw,
    retry_prefix,
};
use super::psk::{candidate, send_tickets};
use super::{Core13, EPOCH_HANDSHAKE, Engine13, Secrets13, Side13, State13};
use crate::acceptor::VerifiedClientHello;
use crate::acceptor13::RetryState;
use crate::config::{CidIssuer, ClientAuth, Config, ConfigError};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::role::Role;

/// What only a server keeps during a DTLS 1.3 handshake.
#[derive(Debug, Default)]
pub(crate) struct ServerState13 {
    /// The client's random (to tell its retransmissions from a new handshake).
    pub(crate) client_random: [u8; RANDOM_LEN],
    /// The host name of the client's server_name, for logs.
    pub(crate) server_name: Option<String>,
    /// We sent a HelloRetryRequest and wait for the second ClientHello.
    retried: Option<(CipherSuite, NamedGroup)>,
    /// The transcript hash through our Finished (the application secrets' context).
    server_finished: Option<HandshakeHash>,
    /// We sent a CertificateRequest.
    cert_requested: bool,
    /// The client's chain, once received.
    peer_chain: Vec<CertificateDer<'static>>,
    /// The ALPN protocol chosen.
    alpn: Option<Vec<u8>>,
    /// The SRTP protection profile chosen (RFC 5764), answered in EncryptedExtensions.
    srtp_profile: Option<SrtpProtectionProfile>,
    /// The client's identity proved by a PSK (RFC 8446 §4.2.11): an external PSK's, or
    /// the one a resumption ticket carries (RFC 8446 §2.2).
    psk_identity: Option<PeerIdentity>,
    /// The session resumes a ticket.
    resumed: bool,
    /// The client offered a PSK mode we allow: it can use tickets (RFC 8446 §4.2.9).
    takes_tickets: bool,
}

impl ServerState13 {
    /// After the handshake: the client's chain went into the session's identity, a
    /// HelloRetryRequest's choice is spent.
    pub(crate) fn settle(&mut self) {
        self.peer_chain = Vec::new();
        self.retried = None;
    }
}

impl Engine13 {
    /// Creates a DTLS 1.3 server engine for a ClientHello the acceptor let through and
    /// queues our answer (ServerHello flight or HelloRetryRequest). Our connection IDs,
    /// when the client negotiates them, come from `issuer`.
    pub(crate) fn server(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        wall: UnixTime,
        hello: VerifiedClientHello,
        issuer: Box<dyn CidIssuer + Send>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut core = Core13::new(Role::Server, config, rng, hello.peer, hello.record_sequence);
        core.issuer = issuer;
        // RFC 9147 §5.2: our first message answers the ClientHello with its message_seq.
        core.next_send_seq = hello.message_seq;
        core.expect_peer_seq(hello.message_seq.wrapping_add(1));
        let mut server = ServerState13 {
            client_random: hello.hello.random,
            server_name: match &hello.hello.extensions.server_name {
                Some(ServerName::HostName(name)) => Some(name.clone()),
                _ => None,
            },
            ..ServerState13::default()
        };
        if let Some(retry) = &hello.retry {
            // RFC 8446 §4.4.1: our stateless HelloRetryRequest comes back in the cookie;
            // the transcript starts message_hash(Hash(ClientHello1)) | HelloRetryRequest.
            match server.resume_after_retry(&mut core, retry) {
                Ok(()) => {}
                Err(e) => {
                    core.fail(e);
                    return Ok(Self {
                        core,
                        side: Side13::Server(Box::new(server)),
                    });
                }
            }
        }
        // The body without the DTLS handshake header.
        let body = hello
            .transcript
            .get(dtls_proto::HANDSHAKE_HEADER_LEN..)
            .unwrap_or_default()
            .to_vec();
        match server.handle_client_hello(&mut core, now, wall, &hello.hello, &body) {
            Ok(state) => core.state = state,
            Err(e) => core.fail(e),
        }
        Ok(Self {
            core,
            side: Side13::Server(Box::new(server)),
        })
    }
}

/// The first of our suites (RFC 8446 §4.1.1: server preference) the client offers; with
/// `hash`, the first of those with that hash (a PSK's, RFC 8446 §4.2.11).
fn choose_suite(
    config: &Config,
    hello: &ClientHello,
    hash: Option<PrfHash>,
) -> Option<Tls13SuiteParams> {
    config
        .tls13_cipher_suites
        .iter()
        .filter(|s| hello.cipher_suites.contains(s))
        .filter_map(|s| s.tls13_params())
        .find(|p| hash.is_none_or(|h| p.hash() == h))
}

/// The group and the client's share for it; `None` share: ask with a HelloRetryRequest.
/// RFC 8446 §4.2.8: a group we take with a share from the client, else the first of our
/// groups the client supports.
fn choose_group(
    config: &Config,
    hello: &ClientHello,
) -> Result<(NamedGroup, Option<Vec<u8>>), HandshakeError> {
    let shares = match raw(&hello.extensions, ExtensionType::KeyShare) {
        Some(data) => parse_key_share_client(data).map_err(decode("key_share"))?,
        // RFC 8446 §9.2: a ClientHello without key_share (and no PSK in psk_ke) cannot go
        // on.
        None => {
            return Err(HandshakeError::Decode {
                message: "ClientHello",
                source: dtls_proto::WireError::IllegalValue {
                    what: "no key_share extension",
                },
            });
        }
    };
    let client_groups = hello
        .extensions
        .supported_groups
        .clone()
        .unwrap_or_default();
    // RFC 8446 §4.2.8: "Each KeyShareEntry value MUST correspond to a group offered in the
    // "supported_groups" extension".
    if shares.iter().any(|s| !client_groups.contains(&s.group)) {
        return Err(HandshakeError::IllegalParameter {
            what: "key_share for a group not in supported_groups",
        });
    }
    if let Some(share) = config
        .tls13_groups
        .iter()
        .find_map(|g| shares.iter().find(|s| s.group == *g))
    {
        return Ok((share.group, Some(share.key_exchange.clone())));
    }
    let group = config
        .tls13_groups
        .iter()
        .copied()
        .find(|g| client_groups.contains(g))
        .ok_or(HandshakeError::NoCommonGroup)?;
    Ok((group, None))
}

/// A PSK the server takes: its index in the client's list, the key, the mode, the suite.
struct AcceptedPsk {
    /// `selected_identity` (RFC 8446 §4.2.11).
    index: u16,
    key: zeroize::Zeroizing<Vec<u8>>,
    /// psk_dhe_ke or psk_ke (RFC 8446 §4.2.9).
    mode: PskKeyExchangeMode,
    suite: Tls13SuiteParams,
}

/// legacy_session_id_echo of our ServerHello and HelloRetryRequest: empty. RFC 9147 §5
/// has no middlebox compatibility mode in DTLS 1.3, and a DTLS 1.3 server does not echo the
/// client's legacy_session_id (which a client sets only from a pre-DTLS 1.3 session, RFC
/// 9147 §5.3); wolfSSL 5.9.4 and OpenSSL clients refuse an echo.
const NO_SESSION_ID_ECHO: &[u8] = &[];

impl ServerState13 {
    /// Rebuilds the transcript of a stateless HelloRetryRequest from its cookie.
    fn resume_after_retry(
        &mut self,
        core: &mut Core13,
        retry: &RetryState,
    ) -> Result<(), HandshakeError> {
        // RFC 8446 §4.1.2 / §4.2.2: the second ClientHello echoes the cookie; the
        // acceptor checked it against our secret, peer and client random.
        let suite = retry.suite.tls13_params().ok_or(HandshakeError::Internal {
            what: "cookie suite",
        })?;
        core.suite = Some(suite);
        core.transcript.select_hash(suite.hash())?;
        core.transcript
            .update(&dtls_proto::tls13::messages::message_hash_header(
                retry.client_hello1.as_bytes().len(),
            ));
        core.transcript.update(retry.client_hello1.as_bytes());
        let body = hello_retry_request_body(
            NO_SESSION_ID_ECHO,
            retry.suite,
            retry.named.then_some(retry.group),
            Some(&retry.cookie),
        )?;
        core.hash_message(HandshakeType::ServerHello, &body);
        core.retry_prefix = retry_prefix(&retry.client_hello1, &body);
        self.retried = Some((retry.suite, retry.group));
        Ok(())
    }

    fn handle_client_hello(
        &mut self,
        core: &mut Core13,
        now: Instant,
        wall: UnixTime,
        hello: &ClientHello,
        body: &[u8],
    ) -> Result<State13, HandshakeError> {
        let versions = raw(&hello.extensions, ExtensionType::SupportedVersions)
            .map(|data| parse_supported_versions_client(data).map_err(decode("supported_versions")))
            .transpose()?
            .unwrap_or_default();
        if !versions.contains(&ProtocolVersion::Dtls1_3) {
            return Err(HandshakeError::ProtocolVersion {
                version: hello.client_version.to_u16(),
            });
        }
        // RFC 9147 §5.3: "legacy_cookie: ... MUST be set to a zero-length vector. When
        // a DTLS 1.3-only server receives a ClientHello with a legacy_cookie field that is
        // not empty, it MUST abort the handshake with an "illegal_parameter" alert."
        if !hello.cookie.is_empty() {
            return Err(HandshakeError::IllegalParameter {
                what: "legacy_cookie in a DTLS 1.3 ClientHello",
            });
        }
        // The suite is fixed after our HelloRetryRequest (RFC 8446 §4.1.4).
        let fixed = self.retried.map(|(suite, _)| suite);
        let psk = self.accept_psk(core, hello, body, fixed, wall)?;
        let suite = match (&psk, fixed) {
            (Some(psk), _) => psk.suite,
            (None, Some(suite)) => suite.tls13_params().ok_or(HandshakeError::Internal {
                what: "retry suite",
            })?,
            (None, None) => {
                choose_suite(&core.config, hello, None).ok_or(HandshakeError::NoCommonSuite)?
            }
        };
        let psk_ke = psk
            .as_ref()
            .is_some_and(|p| p.mode == PskKeyExchangeMode::PskKe);
        // psk_ke needs no key share (RFC 8446 §4.2.9: "the server MUST NOT supply a
        // "key_share" value").
        let exchange = if psk_ke {
            None
        } else {
            Some(choose_group(&core.config, hello)?)
        };
        if let Some((retry_suite, retry_group)) = self.retried {
            // RFC 8446 §4.1.4: the second ClientHello answers our HelloRetryRequest.
            let answers = match &exchange {
                Some((group, share)) => *group == retry_group && share.is_some(),
                None => true,
            };
            if suite.suite() != retry_suite || !answers {
                return Err(HandshakeError::IllegalParameter {
                    what: "second ClientHello does not follow the HelloRetryRequest",
                });
            }
            if hello.random != self.client_random {
                return Err(HandshakeError::IllegalParameter {
                    what: "second ClientHello changed the random",
                });
            }
        }
        if core.suite.is_none() {
            core.suite = Some(suite);
            core.transcript.select_hash(suite.hash())?;
        }
        core.hash_message(HandshakeType::ClientHello, body);
        let exchange = match exchange {
            Some((group, None)) => {
                return self.send_hello_retry_request(core, now, suite, group);
            }
            Some((group, Some(client_share))) => Some((group, client_share)),
            None => None,
        };
        let scheme = match psk {
            Some(_) => None,
            None => Some(self.signature_scheme(&core.config, hello)?),
        };
        self.alpn = choose_alpn(&core.config, &hello.extensions)?;
        self.srtp_profile = choose_srtp(&core.config, &hello.extensions);
        let share = exchange
            .map(|(group, client_share)| {
                ServerKeyShare::respond(group, &client_share, &mut *core.rng)
                    .map(|share| (group, share))
            })
            .transpose()?;

        // ServerHello (RFC 8446 §4.1.3).
        let mut random = [0u8; RANDOM_LEN];
        core.rng.fill(&mut random);
        let mut ext = Extensions::default();
        let mut v = Vec::new();
        emit_supported_versions_server(ProtocolVersion::Dtls1_3, &mut v);
        push_raw(&mut ext, ExtensionType::SupportedVersions, v);
        if let Some((group, share)) = &share {
            let mut ks = Vec::new();
            emit_key_share_server(
                &KeyShareEntry {
                    group: *group,
                    key_exchange: share.public_key().to_vec(),
                },
                &mut ks,
            )
            .map_err(|_| HandshakeError::Internal {
                what: "key_share too long",
            })?;
            push_raw(&mut ext, ExtensionType::KeyShare, ks);
        }
        if let Some(psk) = &psk {
            // RFC 8446 §4.2.11: the index of the identity we took.
            let mut selected = Vec::new();
            emit_pre_shared_key_server(psk.index, &mut selected);
            push_raw(&mut ext, ExtensionType::PreSharedKey, selected);
        }
        if let (Some(data), Some(len)) = (
            raw(&hello.extensions, ExtensionType::ConnectionId),
            core.config.connection_id.cid_len(),
        ) {
            let peer = parse_connection_id(data).map_err(decode("connection_id"))?;
            if peer.len() > usize::from(crate::config::MAX_CID_LEN) {
                return Err(HandshakeError::IllegalParameter {
                    what: "client connection ID longer than 20 bytes",
                });
            }
            // RFC 9146 §3: "A server willing to use CIDs will respond with a
            // "connection_id" extension in the ServerHello, containing the CID it wishes
            // the client to use when sending messages towards it." Our protected records
            // (the rest of this flight on) carry the client's (RFC 9147 §9).
            let local = core.issuer.issue(len, &mut *core.rng);
            let mut data = Vec::with_capacity(1 + local.len());
            emit_connection_id(&local, &mut data).map_err(|_| HandshakeError::Internal {
                what: "connection ID too long",
            })?;
            push_raw(&mut ext, ExtensionType::ConnectionId, data);
            core.negotiate_cids(local, peer);
            // RFC 9853 §3: "If the client includes the `rrc` extension in its ClientHello
            // and if the server also supports RRC, the server MUST include the `rrc`
            // extension in its ServerHello" (empty, and only with `connection_id`, which
            // this branch sends). The 1.3 column of its IANA entry is "CH, SH" like
            // connection_id's.
            if core.config.rrc && raw(&hello.extensions, ExtensionType::Rrc).is_some() {
                push_raw(&mut ext, ExtensionType::Rrc, Vec::new());
                if let Some(cids) = core.cids.as_mut() {
                    cids.rrc = true;
                }
            }
        }
        let server_hello = ServerHello {
            server_version: ProtocolVersion::Dtls1_2,
            random,
            session_id: NO_SESSION_ID_ECHO.to_vec(),
            cipher_suite: suite.suite(),
            compression_method: dtls_proto::COMPRESSION_NULL,
            extensions: ext,
        };
        let mut body = Vec::new();
        server_hello
            .emit(&mut body)
            .map_err(|_| HandshakeError::Internal {
                what: "ServerHello",
            })?;
        let mut messages = vec![core.out_message(0, HandshakeType::ServerHello, body)];

        let hello_hash = core.transcript.current_hash()?;
        let handshake = EarlySecret::new(
            suite.hash(),
            LabelPrefix::Dtls13,
            psk.as_ref().map(|p| p.key.as_slice()),
        )
        .into_handshake_secret(share.as_ref().map(|(_, share)| share.shared_secret()));
        let secrets = Secrets13 {
            client_handshake: handshake.client_handshake_traffic_secret(&hello_hash),
            server_handshake: handshake.server_handshake_traffic_secret(&hello_hash),
            master: handshake.into_master_secret(),
        };
        core.install_write(EPOCH_HANDSHAKE, &secrets.server_handshake)?;
        core.install_read(EPOCH_HANDSHAKE, &secrets.client_handshake)?;
        core.secrets = Some(secrets);

        // EncryptedExtensions (RFC 8446 §4.3.1).
        let ee = EncryptedExtensions {
            extensions: Extensions {
                alpn: self.alpn.clone().map(|p| vec![p]),
                // RFC 8446 §4.2: use_srtp answers in EncryptedExtensions; one profile and,
                // as our DTLS 1.2 server answers, an empty MKI.
                use_srtp: self.srtp_profile.map(|profile| UseSrtp {
                    profiles: vec![profile],
                    mki: Vec::new(),
                }),
                ..Extensions::default()
            },
        };
        let mut body = Vec::new();
        ee.emit(&mut body).map_err(|_| HandshakeError::Internal {
            what: "EncryptedExtensions",
        })?;
        messages.push(core.out_message(EPOCH_HANDSHAKE, HandshakeType::EncryptedExtensions, body));

        // CertificateRequest (RFC 8446 §4.3.2: not with a PSK, "Servers which are
        // authenticating with a PSK MUST NOT send the CertificateRequest message").
        if let Some(scheme) = scheme {
            self.send_certificates(core, scheme, &mut messages)?;
        }

        // Finished (RFC 8446 §4.4.4).
        let hash = core.transcript.current_hash()?;
        let verify_data = core.secrets()?.server_handshake.verify_data(&hash);
        messages.push(core.out_message(
            EPOCH_HANDSHAKE,
            HandshakeType::Finished,
            verify_data.as_bytes().to_vec(),
        ));
        self.server_finished = Some(core.transcript.current_hash()?);
        core.send_flight(now, messages)?;
        Ok(if self.cert_requested {
            State13::ExpectCertificate
        } else {
            State13::ExpectFinished
        })
    }

    /// The first PSK the client offers that we can take (an external PSK we know or a
    /// ticket of ours, see [`ServerState13::candidate`]), in a mode both sides allow
    /// (RFC 8446 §4.2.9: "Servers MUST NOT select a key exchange mode that is not listed
    /// by the client"), with a suite of its hash that both offer (`fixed` after a
    /// HelloRetryRequest); its binder must verify (RFC 8446 §4.2.11.2: "If binder
    /// validation fails, the server MUST abort the handshake with a "decrypt_error"
    /// alert"). `None`: a full handshake with certificates.
    fn accept_psk(
        &mut self,
        core: &Core13,
        hello: &ClientHello,
        body: &[u8],
        fixed: Option<CipherSuite>,
        wall: UnixTime,
    ) -> Result<Option<AcceptedPsk>, HandshakeError> {
        // RFC 8446 §4.2.9: without psk_key_exchange_modes the PSK cannot be used.
        let client_modes = raw(&hello.extensions, ExtensionType::PskKeyExchangeModes)
            .map(|d| parse_psk_key_exchange_modes(d).map_err(decode("psk_key_exchange_modes")))
            .transpose()?
            .unwrap_or_default();
        let Some(mode) = core
            .config
            .tls13_psk_modes
            .iter()
            .copied()
            .find(|m| client_modes.contains(m))
        else {
            return Ok(None);
        };
        self.takes_tickets = true;
        let Some(data) = raw(&hello.extensions, ExtensionType::PreSharedKey) else {
            return Ok(None);
        };
        if !pre_shared_key_is_last(body) {
            return Err(HandshakeError::IllegalParameter {
                what: "pre_shared_key not the last extension",
            });
        }
        let offered = OfferedPsks::parse(data).map_err(decode("pre_shared_key"))?;
        let Some((index, candidate, binder)) = offered
            .identities
            .iter()
            .zip(&offered.binders)
            .enumerate()
            .find_map(|(i, (id, binder))| {
                let candidate = candidate(core, id, wall)?;
                // RFC 8446 §4.2.11: the suite must have the PSK's hash (after a
                // HelloRetryRequest, the suite it fixed).
                let fits = match fixed {
                    Some(suite) => suite
                        .tls13_params()
                        .is_some_and(|p| p.hash() == candidate.hash),
                    None => choose_suite(&core.config, hello, Some(candidate.hash)).is_some(),
                };
                fits.then_some((u16::try_from(i).ok()?, candidate, binder))
            })
        else {
            return Ok(None);
        };
        let suite = match fixed {
            Some(suite) => suite.tls13_params(),
            None => choose_suite(&core.config, hello, Some(candidate.hash)),
        }
        .ok_or(HandshakeError::Internal { what: "PSK suite" })?;
        let transcript = binder_transcript(
            candidate.hash,
            &core.retry_prefix,
            body,
            offered.binders_len(),
        );
        if !psk_binder(candidate.hash, candidate.kind, &candidate.key, &transcript).matches(binder)
        {
            return Err(HandshakeError::BadFinished);
        }
        self.resumed = candidate.kind == PskKind::Resumption;
        self.psk_identity = Some(candidate.identity);
        Ok(Some(AcceptedPsk {
            index,
            key: candidate.key,
            mode,
            suite,
        }))
    }

    /// CertificateRequest (when asked for), Certificate and CertificateVerify.
    fn send_certificates(
        &mut self,
        core: &mut Core13,
        scheme: SignatureScheme,
        messages: &mut Vec<super::transport::OutMessage13>,
    ) -> Result<(), HandshakeError> {
        if core.config.client_auth != ClientAuth::None {
            let request = CertificateRequest13 {
                context: Vec::new(),
                extensions: Extensions {
                    signature_algorithms: Some(offered_schemes(&core.config.signature_schemes)),
                    ..Extensions::default()
                },
            };
            let mut body = Vec::new();
            request
                .emit(&mut body)
                .map_err(|_| HandshakeError::Internal {
                    what: "CertificateRequest",
                })?;
            messages.push(core.out_message(
                EPOCH_HANDSHAKE,
                HandshakeType::CertificateRequest,
                body,
            ));
            self.cert_requested = true;
        }

        // Certificate and CertificateVerify (RFC 8446 §4.4.2, §4.4.3).
        let certified = core
            .config
            .certificate
            .clone()
            .ok_or(HandshakeError::NoCertificate)?;
        let body = certificate_body(&[], Some(&certified))?;
        messages.push(core.out_message(EPOCH_HANDSHAKE, HandshakeType::Certificate, body));
        let hash = core.transcript.current_hash()?;
        let body = certificate_verify_body(&certified.key, scheme, true, &hash)?;
        messages.push(core.out_message(EPOCH_HANDSHAKE, HandshakeType::CertificateVerify, body));
        Ok(())
    }

    /// RFC 8446 §4.1.4: ask for a share in `group`.
    fn send_hello_retry_request(
        &mut self,
        core: &mut Core13,
        now: Instant,
        suite: Tls13SuiteParams,
        group: NamedGroup,
    ) -> Result<State13, HandshakeError> {
        if self.retried.is_some() {
            return Err(HandshakeError::IllegalParameter {
                what: "second ClientHello without a usable key share",
            });
        }
        self.retried = Some((suite.suite(), group));
        let body = hello_retry_request_body(NO_SESSION_ID_ECHO, suite.suite(), Some(group), None)?;
        // RFC 8446 §4.4.1: ClientHello1 is replaced by message_hash(Hash(ClientHello1)).
        let client_hello1 = core.transcript.current_hash()?;
        core.transcript.roll_up_for_hello_retry()?;
        core.retry_prefix = retry_prefix(&client_hello1, &body);
        let message = core.out_message(0, HandshakeType::ServerHello, body);
        core.send_flight(now, vec![message])?;
        Ok(State13::ExpectClientHello)
    }

    fn signature_scheme(
        &self,
        config: &Config,
        hello: &ClientHello,
    ) -> Result<SignatureScheme, HandshakeError> {
        let certified = config
            .certificate
            .as_ref()
            .ok_or(HandshakeError::NoCertificate)?;
        // RFC 8446 §4.2.3: a client that offers no signature_algorithms cannot be
        // authenticated to with a certificate: missing_extension; we answer
        // handshake_failure, as for no common scheme.
        let offered = offered_schemes(
            hello
                .extensions
                .signature_algorithms
                .as_deref()
                .unwrap_or_default(),
        );
        certified
            .key
            .choose_scheme(&offered)
            .ok_or(HandshakeError::NoCommonSignatureScheme)
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
        match (state, message.msg_type) {
            (State13::ExpectClientHello, HandshakeType::ClientHello) => {
                let hello = ClientHello::parse(&body).map_err(decode("ClientHello"))?;
                self.handle_client_hello(core, now, wall, &hello, &body)
            }
            (State13::ExpectCertificate, HandshakeType::Certificate) => {
                core.hash_message(message.msg_type, &body);
                let chain = parse_certificate(&body, &[])?;
                if chain.is_empty() {
                    // RFC 8446 §4.4.2.4: without a certificate the server may go on or
                    // abort with certificate_required.
                    if core.config.client_auth == ClientAuth::Required {
                        return Err(HandshakeError::CertificateRequired);
                    }
                    return Ok(State13::ExpectFinished);
                }
                core.config
                    .peer_verification
                    .verify_client(&chain, wall)
                    .map_err(|source| HandshakeError::BadCertificate { source })?;
                core.config.check_client_identity(&chain)?;
                self.peer_chain = chain;
                Ok(State13::ExpectCertificateVerify)
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
                    false,
                    &hash,
                )?;
                core.hash_message(message.msg_type, &body);
                Ok(State13::ExpectFinished)
            }
            (State13::ExpectFinished, HandshakeType::Finished) => {
                let hash = core.transcript.current_hash()?;
                let expected = core.secrets()?.client_handshake.verify_data(&hash);
                // RFC 8446 §4.4.4: a wrong Finished ends the handshake with decrypt_error.
                if !expected.matches(&body) {
                    return Err(HandshakeError::BadFinished);
                }
                core.hash_message(message.msg_type, &body);
                let server_finished = self.server_finished.ok_or(HandshakeError::Internal {
                    what: "no server Finished hash",
                })?;
                let identity = if let Some(identity) = self.psk_identity.take() {
                    identity
                } else if self.peer_chain.is_empty() {
                    PeerIdentity::None
                } else {
                    PeerIdentity::Certificates(std::mem::take(&mut self.peer_chain))
                };
                complete(
                    core,
                    &server_finished,
                    identity.clone(),
                    Negotiated {
                        alpn: self.alpn.take(),
                        srtp_profile: self.srtp_profile,
                    },
                    self.resumed,
                )?;
                // RFC 9147 §7: the client's final flight is acknowledged explicitly.
                core.send_ack();
                send_tickets(core, now, wall, &identity, self.takes_tickets)?;
                Ok(State13::Established)
            }
            _ => Err(HandshakeError::UnexpectedMessage {
                state: state.name(),
                got: message.msg_type.to_u8(),
            }),
        }
    }
}

/// RFC 7301 §3.2: the first of our protocols the client offers; none in common is
/// no_application_protocol.
fn choose_alpn(config: &Config, ext: &Extensions) -> Result<Option<Vec<u8>>, HandshakeError> {
    let (Some(offered), false) = (&ext.alpn, config.alpn_protocols.is_empty()) else {
        return Ok(None);
    };
    config
        .alpn_protocols
        .iter()
        .find(|p| offered.contains(p))
        .cloned()
        .map(Some)
        .ok_or(HandshakeError::NoApplicationProtocol)
}

/// RFC 5764 §4.1.1: the first of our profiles the client offers; with none in common the
/// server "SHOULD NOT return the use_srtp extension", and the session goes on without SRTP
/// keys (as our DTLS 1.2 server does).
fn choose_srtp(config: &Config, ext: &Extensions) -> Option<SrtpProtectionProfile> {
    let offered = ext.use_srtp.as_ref()?;
    config
        .srtp_profiles
        .iter()
        .copied()
        .find(|p| offered.profiles.contains(p))
}

/// A HelloRetryRequest body (RFC 8446 §4.1.4): the ServerHello form with the special
/// random, supported_versions, the selected group and, for a stateless server, a cookie.
pub(crate) fn hello_retry_request_body(
    session_id: &[u8],
    suite: CipherSuite,
    group: Option<NamedGroup>,
    cookie: Option<&[u8]>,
) -> Result<Vec<u8>, HandshakeError> {
    let internal = |_| HandshakeError::Internal {
        what: "HelloRetryRequest",
    };
    let mut ext = Extensions::default();
    let mut v = Vec::new();
    emit_supported_versions_server(ProtocolVersion::Dtls1_3, &mut v);
    push_raw(&mut ext, ExtensionType::SupportedVersions, v);
    if let Some(group) = group {
        let mut ks = Vec::new();
        emit_key_share_retry(group, &mut ks);
        push_raw(&mut ext, ExtensionType::KeyShare, ks);
    }
    if let Some(cookie) = cookie {
        let mut c = Vec::new();
        dtls_proto::tls13::extensions::emit_cookie(cookie, &mut c).map_err(internal)?;
        push_raw(&mut ext, ExtensionType::Cookie, c);
    }
    let hrr = ServerHello {
        server_version: ProtocolVersion::Dtls1_2,
        random: HELLO_RETRY_REQUEST_RANDOM,
        session_id: session_id.to_vec(),
        cipher_suite: suite,
        compression_method: dtls_proto::COMPRESSION_NULL,
        extensions: ext,
    };
    let mut body = Vec::new();
    hrr.emit(&mut body).map_err(internal)?;
    Ok(body)
}
