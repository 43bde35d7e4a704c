//! The server's stateless front door (RFC 6347 §4.2.1).
//!
//! A ClientHello without a valid cookie is answered with a HelloVerifyRequest computed
//! from HMAC(secret, peer address, ClientHello parameters) and nothing is allocated or
//! kept for it. The answer is written into the caller's buffer and is never larger than
//! the datagram that caused it. Only a ClientHello with a valid cookie (current or
//! previous secret) is parsed fully and becomes a [`VerifiedClientHello`], from which
//! [`Connection::server`](crate::Connection::server) builds an engine.
//!
//! A ClientHello in fragments is put together in the acceptor's [`HelloPool`] (fixed,
//! preallocated: no allocation per unverified hello, a flood evicts only other unverified
//! hellos) and judged like an unfragmented one when complete; the answer is then bounded by
//! the bytes of every datagram that carried its fragments.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::record::{ContentType, HEADER_LEN, RecordRepr, Records};
use dtls_crypto::{CookieKeys, Rng};
use dtls_proto::{
    AlertDescription, AlertLevel, ClientHello, HANDSHAKE_HEADER_LEN, HandshakeHeader,
    HandshakeRepr, HandshakeType, ProtocolVersion,
};

use crate::acceptor13::{self, Hello13, RetryState};
use crate::config::{Config, ConfigError};
use crate::events::Transmit;
use crate::hello_pool::{HelloPool, HelloPoolConfig, HelloPoolStats, Offer};

/// Acceptor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptorConfig {
    /// Require the cookie exchange (default `true`). Without it every well-formed
    /// ClientHello becomes a connection: only for trusted networks and tests.
    pub require_cookie: bool,
    /// How often the cookie secret rotates (the previous one stays valid for one more
    /// period). Default 60 s.
    pub cookie_rotation: Duration,
    /// The pool that puts fragmented ClientHellos together.
    pub hello_pool: HelloPoolConfig,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        Self {
            require_cookie: true,
            cookie_rotation: Duration::from_secs(60),
            hello_pool: HelloPoolConfig::default(),
        }
    }
}

/// Why the acceptor ignored a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The first record is not an epoch-0 handshake record carrying a ClientHello.
    NotClientHello,
    /// A fragment of a ClientHello the pool refused (longer than a slot, or out of bounds).
    Fragmented,
    /// A fragment of a ClientHello held in the pool until the rest arrives.
    Reassembling,
    /// The ClientHello does not parse.
    Malformed,
    /// The caller's buffer cannot hold the answer.
    BufferTooSmall,
    /// The answer would be larger than the ClientHello (never sent: no amplification).
    ResponseTooLarge,
}

/// A ClientHello that carried a valid cookie (or arrived with cookies disabled).
/// Only the [`Acceptor`] creates these.
#[derive(Debug, Clone)]
pub struct VerifiedClientHello {
    pub(crate) peer: SocketAddr,
    pub(crate) record_sequence: u64,
    pub(crate) message_seq: u16,
    pub(crate) hello: ClientHello,
    /// The message as it enters the handshake hash (unfragmented header and body).
    pub(crate) transcript: Vec<u8>,
    /// DTLS 1.3: the second ClientHello's verified cookie, with what our stateless
    /// HelloRetryRequest chose (RFC 8446 §4.4.1).
    pub(crate) retry: Option<RetryState>,
}

impl VerifiedClientHello {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The parsed ClientHello.
    pub fn client_hello(&self) -> &ClientHello {
        &self.hello
    }

    /// Whether the ClientHello offers DTLS 1.3 in supported_versions (RFC 8446 §4.2.1).
    pub fn offers_dtls13(&self) -> bool {
        self.hello
            .extensions
            .raw(dtls_proto::ExtensionType::SupportedVersions)
            .and_then(|data| {
                dtls_proto::tls13::extensions::parse_supported_versions_client(data).ok()
            })
            .is_some_and(|versions| versions.contains(&ProtocolVersion::Dtls1_3))
    }

    /// The datagram that refuses this handshake without starting it: one epoch-0 record
    /// holding a fatal `description` alert, numbered like the server's first record would
    /// be (the client's record sequence number, RFC 6347 §4.2.1). At 15 bytes it is
    /// smaller than any ClientHello, so a refusal never amplifies.
    pub fn refusal(&self, description: dtls_proto::AlertDescription) -> Vec<u8> {
        let mut datagram = Vec::with_capacity(16);
        let alert = dtls_proto::Alert::fatal(description).to_bytes();
        let mut writer = crate::record_layer::RecordWriter::new(self.record_sequence);
        // Epoch 0 with a 2-byte body cannot exceed a record's length or the 48-bit
        // sequence space of a sequence number the client itself used.
        let _ = writer.push_record(
            &mut datagram,
            dataplane::record::ContentType::Alert,
            0,
            &[&alert],
        );
        datagram
    }
}

/// What to do with a datagram from an address without a connection.
#[derive(Debug)]
pub enum AcceptOutcome {
    /// Create a server connection with [`Connection::server`](crate::Connection::server).
    Accept(Box<VerifiedClientHello>),
    /// Send the answer written at the start of the caller's buffer (a HelloVerifyRequest,
    /// or a protocol_version alert for a client without DTLS 1.2).
    Reply(Transmit),
    /// Ignore the datagram.
    Drop(DropReason),
}

/// The fields of a ClientHello body that the cookie binds, as slices of the datagram.
struct HelloFields<'a> {
    version: &'a [u8],
    random: &'a [u8],
    session_id: &'a [u8],
    cookie: &'a [u8],
    cipher_suites: &'a [u8],
    compression_methods: &'a [u8],
    /// The extension block (with its length prefix), or empty.
    extensions: &'a [u8],
}

/// Reads the fixed part of a ClientHello body without allocating.
fn scan_hello(body: &[u8]) -> Option<HelloFields<'_>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn vec8<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = usize::from(*take(rest, 1)?.first()?);
        take(rest, len)
    }
    fn vec16<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let l = take(rest, 2)?;
        take(rest, usize::from(u16::from_be_bytes([l[0], l[1]])))
    }
    let mut rest = body;
    Some(HelloFields {
        version: take(&mut rest, 2)?,
        random: take(&mut rest, 32)?,
        session_id: vec8(&mut rest)?,
        cookie: vec8(&mut rest)?,
        cipher_suites: vec16(&mut rest)?,
        compression_methods: vec8(&mut rest)?,
        extensions: rest,
    })
}

/// The stateless cookie front of a server (see the module documentation).
#[derive(Debug)]
pub struct Acceptor {
    config: Arc<Config>,
    settings: AcceptorConfig,
    cookies: CookieKeys,
    pool: HelloPool,
    /// ClientHellos whose cookie did not verify (see [`Acceptor::cookies_rejected`]); a
    /// cell because hellos are judged through `&self` (the pool lends their bytes).
    cookies_rejected: Cell<u64>,
}

impl Acceptor {
    /// An acceptor whose first cookie secret comes from `rng`.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn new(
        config: Arc<Config>,
        settings: AcceptorConfig,
        rng: &mut dyn Rng,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            settings,
            cookies: CookieKeys::new(rng, now, settings.cookie_rotation),
            pool: HelloPool::new(settings.hello_pool),
            cookies_rejected: Cell::new(0),
        })
    }

    /// ClientHellos so far that carried a cookie which did not verify: forged, altered,
    /// expired, or issued to another address (the cookie binds the peer's address: RFC
    /// 6347 §4.2.1, RFC 9147 §5.1). Each is answered as a hello without one would be (a
    /// fresh stateless HelloVerifyRequest or HelloRetryRequest, never larger than the
    /// hello), so no handshake starts from it.
    pub fn cookies_rejected(&self) -> u64 {
        self.cookies_rejected.get()
    }

    /// Fragmented ClientHellos being put together now.
    pub fn hello_pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The counters of the pool of fragmented ClientHellos.
    pub fn hello_pool_stats(&self) -> HelloPoolStats {
        self.pool.stats()
    }

    /// The server configuration connections accepted here should use.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Replaces the configuration new connections use (a reload of certificates, keys or
    /// PSKs); cookie secrets stay, so cookies issued before the reload remain valid.
    /// Connections already built keep the configuration they started with.
    ///
    /// # Errors
    /// [`ConfigError`] when the new configuration cannot work; the old one stays.
    pub fn replace_config(&mut self, config: Arc<Config>) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The cookie secrets in use: the configuration's shared ones when it has them
    /// ([`Config::cookie_keys`]), else this acceptor's own.
    fn cookies(&self) -> &CookieKeys {
        self.config.cookie_keys.as_deref().unwrap_or(&self.cookies)
    }

    /// When the cookie secret is next due to rotate.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cookies.poll_timeout()
    }

    /// Rotates the cookie secret when due.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) {
        self.cookies.handle_timeout(now, rng);
    }

    /// Judges one datagram from `peer`, which has no connection yet. Answers are written
    /// into `buf`. Allocates nothing unless the cookie is valid.
    pub fn handle_datagram(
        &mut self,
        _now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
    ) -> AcceptOutcome {
        let Some(record) = Records::new(datagram).next() else {
            return AcceptOutcome::Drop(DropReason::NotClientHello);
        };
        let Ok(repr) = RecordRepr::parse(&record.header) else {
            return AcceptOutcome::Drop(DropReason::NotClientHello);
        };
        if repr.epoch != 0 || repr.content_type != ContentType::Handshake {
            return AcceptOutcome::Drop(DropReason::NotClientHello);
        }
        let payload = record.header.payload();
        let Ok(header) = HandshakeHeader::new_checked(payload) else {
            return AcceptOutcome::Drop(DropReason::Malformed);
        };
        let Ok(hs) = HandshakeRepr::parse(&header) else {
            return AcceptOutcome::Drop(DropReason::Malformed);
        };
        if hs.msg_type != HandshakeType::ClientHello {
            return AcceptOutcome::Drop(DropReason::NotClientHello);
        }
        if hs.is_unfragmented() {
            return self.judge(
                peer,
                &repr,
                hs.message_seq,
                header.fragment(),
                datagram.len(),
                buf,
            );
        }
        let offer = self.pool.offer(
            peer,
            hs.message_seq,
            hs.length as usize,
            hs.fragment_offset as usize,
            header.fragment(),
            repr.sequence,
            datagram.len(),
        );
        match offer {
            Offer::Held => AcceptOutcome::Drop(DropReason::Reassembling),
            Offer::Refused => AcceptOutcome::Drop(DropReason::Fragmented),
            Offer::Complete(complete) => {
                // Answered as the hello's first record would be.
                let first = RecordRepr {
                    sequence: complete.record_sequence,
                    ..repr
                };
                let this = &*self;
                let outcome = this.judge(
                    peer,
                    &first,
                    complete.message_seq,
                    this.pool.body(&complete),
                    complete.datagram_bytes,
                    buf,
                );
                self.pool.release(complete.slot);
                outcome
            }
        }
    }

    /// Judges a whole ClientHello body from `peer` (carried by `request_len` bytes of
    /// datagrams, the bound of any answer).
    fn judge(
        &self,
        peer: SocketAddr,
        repr: &RecordRepr,
        message_seq: u16,
        body: &[u8],
        request_len: usize,
        buf: &mut [u8],
    ) -> AcceptOutcome {
        let datagram_len = request_len;
        let Some(fields) = scan_hello(body) else {
            return AcceptOutcome::Drop(DropReason::Malformed);
        };
        let version =
            ProtocolVersion::from_u16(u16::from_be_bytes([fields.version[0], fields.version[1]]));
        if !version.offers_dtls12() {
            // RFC 5246 §E.1 / RFC 6347 §4.1: a client that cannot do DTLS 1.2 gets a
            // protocol_version alert.
            return self.reply_alert(
                peer,
                repr,
                AlertDescription::ProtocolVersion,
                datagram_len,
                buf,
            );
        }
        // The DTLS 1.3 extensions, read in place (a malformed block is the engine's to
        // refuse, as before DTLS 1.3).
        let hello13 = Hello13::scan(fields.extensions).unwrap_or_default();
        if self.config.allows(ProtocolVersion::Dtls1_3) && hello13.offers(ProtocolVersion::Dtls1_3)
        {
            return self.judge13(
                peer,
                repr,
                message_seq,
                body,
                (&fields, &hello13),
                request_len,
                buf,
            );
        }
        // RFC 8446 §4.2.1: a client whose supported_versions has no version we negotiate
        // gets protocol_version (a client without the extension offers DTLS 1.2 only).
        let offers_dtls12 = !hello13.has_versions() || hello13.offers(ProtocolVersion::Dtls1_2);
        if !(self.config.allows(ProtocolVersion::Dtls1_2) && offers_dtls12) {
            return self.reply_alert(
                peer,
                repr,
                AlertDescription::ProtocolVersion,
                datagram_len,
                buf,
            );
        }
        let params: [&[u8]; 5] = [
            fields.version,
            fields.random,
            fields.session_id,
            fields.cipher_suites,
            fields.compression_methods,
        ];
        if self.settings.require_cookie && !self.cookies().verify(peer, &params, fields.cookie) {
            // RFC 6347 §4.2.1: a ClientHello whose cookie does not verify is treated as
            // one without: answered with a new HelloVerifyRequest, no state kept.
            if !fields.cookie.is_empty() {
                self.cookies_rejected.set(self.cookies_rejected.get() + 1);
            }
            return self.reply_hello_verify_request(
                peer,
                repr,
                message_seq,
                &params,
                datagram_len,
                buf,
            );
        }
        // The cookie is valid: now it is worth parsing (and allocating).
        Self::accept(peer, repr, message_seq, body, None)
    }

    /// A ClientHello worth an engine: parsed, with its transcript bytes.
    fn accept(
        peer: SocketAddr,
        repr: &RecordRepr,
        message_seq: u16,
        body: &[u8],
        retry: Option<RetryState>,
    ) -> AcceptOutcome {
        let Ok(hello) = ClientHello::parse(body) else {
            return AcceptOutcome::Drop(DropReason::Malformed);
        };
        let mut transcript = Vec::with_capacity(HANDSHAKE_HEADER_LEN + body.len());
        if dtls_proto::encode_message(
            HandshakeType::ClientHello,
            message_seq,
            body,
            &mut transcript,
        )
        .is_err()
        {
            return AcceptOutcome::Drop(DropReason::Malformed);
        }
        AcceptOutcome::Accept(Box::new(VerifiedClientHello {
            peer,
            record_sequence: repr.sequence,
            message_seq,
            hello,
            transcript,
            retry,
        }))
    }

    /// DTLS 1.3 (RFC 9147 §5.1): without a valid cookie, a stateless HelloRetryRequest
    /// carrying one, written into `buf` and never larger than the request; with one, the
    /// hello becomes an engine with the HelloRetryRequest's choices.
    #[allow(clippy::too_many_arguments)]
    fn judge13(
        &self,
        peer: SocketAddr,
        repr: &RecordRepr,
        message_seq: u16,
        body: &[u8],
        (fields, hello13): (&HelloFields<'_>, &Hello13<'_>),
        request_len: usize,
        buf: &mut [u8],
    ) -> AcceptOutcome {
        if !self.settings.require_cookie {
            return Self::accept(peer, repr, message_seq, body, None);
        }
        if let Some(retry) = hello13.cookie.and_then(|cookie| {
            acceptor13::check_cookie(self.cookies(), peer, cookie, fields.random)
        }) {
            return Self::accept(peer, repr, message_seq, body, Some(retry));
        }
        // RFC 9147 §5.1 leaves a cookie that does not verify to the stateless path: the
        // hello is answered as one without (a new HelloRetryRequest), and counted.
        if hello13.cookie.is_some() {
            self.cookies_rejected.set(self.cookies_rejected.get() + 1);
        }
        let Some((suite, group)) = acceptor13::choose(&self.config, fields.cipher_suites, hello13)
        else {
            // Nothing in common: the handshake could not complete (RFC 8446 §4.1.1).
            return self.reply_alert(
                peer,
                repr,
                AlertDescription::HandshakeFailure,
                request_len,
                buf,
            );
        };
        let Some(hash) = acceptor13::hash_client_hello(suite, body) else {
            return AcceptOutcome::Drop(DropReason::Malformed);
        };
        let named = acceptor13::retry_names_group(hello13, group);
        let mut cookie = [0u8; acceptor13::MAX_COOKIE13];
        let cookie_len = acceptor13::make_cookie(
            self.cookies(),
            peer,
            suite,
            group,
            named,
            &hash,
            fields.random,
            &mut cookie,
        );
        let named = named.then_some(group);
        let at = HEADER_LEN + HANDSHAKE_HEADER_LEN;
        let Some(body_len) = buf.get_mut(at..).and_then(|out| {
            // No legacy_session_id_echo in DTLS 1.3 (see ServerState13's ServerHello).
            acceptor13::write_hello_retry_request(out, &[], suite, named, &cookie[..cookie_len])
        }) else {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        };
        let total = at + body_len;
        // Bytes sent before the cookie is validated never exceed bytes received.
        if total > request_len {
            return AcceptOutcome::Drop(DropReason::ResponseTooLarge);
        }
        let rec = RecordRepr {
            content_type: ContentType::Handshake,
            version: dataplane::record::DTLS_1_2,
            epoch: 0,
            sequence: repr.sequence,
            length: (HANDSHAKE_HEADER_LEN + body_len) as u16,
        };
        if rec.emit_into(&mut buf[..HEADER_LEN]).is_err() {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        }
        // RFC 9147 §5.2: the HelloRetryRequest answers the ClientHello with its message_seq.
        let Ok(h) =
            HandshakeRepr::unfragmented(HandshakeType::ServerHello, message_seq, body_len as u32)
                .to_bytes()
        else {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        };
        buf[HEADER_LEN..at].copy_from_slice(&h);
        AcceptOutcome::Reply(Transmit {
            destination: peer,
            len: total,
            segment_size: None,
        })
    }

    /// Writes a HelloVerifyRequest into `buf`.
    fn reply_hello_verify_request(
        &self,
        peer: SocketAddr,
        record: &RecordRepr,
        message_seq: u16,
        params: &[&[u8]],
        request_len: usize,
        buf: &mut [u8],
    ) -> AcceptOutcome {
        let cookie = self.cookies().generate(peer, params);
        // body: server_version(2) cookie<0..255>
        let body_len = 2 + 1 + cookie.len();
        let total = HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len;
        // Bytes sent before the cookie is validated never exceed bytes received.
        if total > request_len {
            return AcceptOutcome::Drop(DropReason::ResponseTooLarge);
        }
        let Some(out) = buf.get_mut(..total) else {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        };
        let rec = RecordRepr {
            content_type: ContentType::Handshake,
            version: record.version,
            epoch: 0,
            // RFC 6347 §4.2.1: "the server MUST use the record sequence number in the
            // ClientHello as the record sequence number in the HelloVerifyRequest".
            sequence: record.sequence,
            length: (HANDSHAKE_HEADER_LEN + body_len) as u16,
        };
        if rec.emit_into(out).is_err() {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        }
        let hvr_header = HandshakeRepr::unfragmented(
            HandshakeType::HelloVerifyRequest,
            message_seq,
            body_len as u32,
        );
        let Ok(h) = hvr_header.to_bytes() else {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        };
        out[HEADER_LEN..HEADER_LEN + HANDSHAKE_HEADER_LEN].copy_from_slice(&h);
        let body = &mut out[HEADER_LEN + HANDSHAKE_HEADER_LEN..];
        // RFC 6347 §4.2.1: "DTLS 1.2 server implementations SHOULD use DTLS version 1.0
        // regardless of the version of TLS that is expected to be negotiated."
        body[..2].copy_from_slice(&ProtocolVersion::Dtls1_0.to_u16().to_be_bytes());
        body[2] = cookie.len() as u8;
        body[3..].copy_from_slice(&cookie);
        AcceptOutcome::Reply(Transmit {
            destination: peer,
            len: total,
            segment_size: None,
        })
    }

    /// Writes a fatal `description` alert into `buf`.
    fn reply_alert(
        &self,
        peer: SocketAddr,
        record: &RecordRepr,
        description: AlertDescription,
        request_len: usize,
        buf: &mut [u8],
    ) -> AcceptOutcome {
        let total = HEADER_LEN + 2;
        if total > request_len {
            return AcceptOutcome::Drop(DropReason::ResponseTooLarge);
        }
        let Some(out) = buf.get_mut(..total) else {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        };
        let rec = RecordRepr {
            content_type: ContentType::Alert,
            version: record.version,
            epoch: 0,
            sequence: record.sequence,
            length: 2,
        };
        if rec.emit_into(out).is_err() {
            return AcceptOutcome::Drop(DropReason::BufferTooSmall);
        }
        out[HEADER_LEN] = AlertLevel::Fatal.to_u8();
        out[HEADER_LEN + 1] = description.to_u8();
        AcceptOutcome::Reply(Transmit {
            destination: peer,
            len: total,
            segment_size: None,
        })
    }
}
