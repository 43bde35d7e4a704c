//! RFC 5077 session tickets: the server's session state sealed under rotating AES-256-GCM
//! keys, so that resumption needs no server-side cache.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use rustls_pki_types::UnixTime;
use zeroize::Zeroizing;

use crate::{Error, MASTER_SECRET_LEN, MasterSecret, Rng};

/// Length of a ticket key name (RFC 5077 §4 recommended format: `key_name[16]`).
pub const TICKET_KEY_NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Serialization format version of [`SessionState`].
const STATE_VERSION: u8 = 1;
/// Fixed part of a serialized state: version, suite, EMS flag, master secret, issue time,
/// lifetime, identity length.
const STATE_FIXED_LEN: usize = 1 + 2 + 1 + MASTER_SECRET_LEN + 8 + 4 + 2;

/// What the server needs to resume a session (RFC 5077 §4 `StatePlaintext`, less the fields
/// DTLS 1.2 with AEAD suites does not use).
#[derive(Debug)]
pub struct SessionState {
    /// The negotiated cipher suite code.
    pub cipher_suite: u16,
    /// The session's master secret.
    pub master_secret: MasterSecret,
    /// Whether the session used extended_master_secret (RFC 7627 §5.3: a resumption must
    /// match the original session's EMS use).
    pub extended_master_secret: bool,
    /// Who the peer proved to be: its end-entity certificate DER, its PSK identity, or empty.
    pub peer_identity: Vec<u8>,
    /// When the ticket was issued.
    pub issued_at: UnixTime,
    /// How long the ticket may be used after `issued_at`.
    pub lifetime: Duration,
}

impl SessionState {
    /// Serialized form (version 1):
    /// `version(1) ‖ suite(2) ‖ ems(1) ‖ master_secret(48) ‖ issued_at(8) ‖ lifetime(4) ‖
    /// identity_len(2) ‖ identity`.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let identity_len =
            u16::try_from(self.peer_identity.len()).map_err(|_| Error::SessionStateTooLarge {
                len: self.peer_identity.len(),
            })?;
        let lifetime = u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX);
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.cipher_suite.to_be_bytes());
        out.push(u8::from(self.extended_master_secret));
        out.extend_from_slice(self.master_secret.as_bytes());
        out.extend_from_slice(&self.issued_at.as_secs().to_be_bytes());
        out.extend_from_slice(&lifetime.to_be_bytes());
        out.extend_from_slice(&identity_len.to_be_bytes());
        out.extend_from_slice(&self.peer_identity);
        Ok(())
    }

    /// Parses exactly one serialized state; every length is checked against the bytes
    /// present before it is used, and trailing bytes are rejected.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        if r.take::<1>()?[0] != STATE_VERSION {
            return Err(Error::TicketRejected);
        }
        let cipher_suite = u16::from_be_bytes(r.take()?);
        let extended_master_secret = match r.take::<1>()?[0] {
            0 => false,
            1 => true,
            _ => return Err(Error::TicketRejected),
        };
        let master_secret = MasterSecret::from_bytes(r.take()?);
        let issued_at =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::from_be_bytes(r.take()?)));
        let lifetime = Duration::from_secs(u64::from(u32::from_be_bytes(r.take()?)));
        let identity_len = usize::from(u16::from_be_bytes(r.take()?));
        if r.0.len() != identity_len {
            return Err(Error::TicketRejected);
        }
        Ok(Self {
            cipher_suite,
            master_secret,
            extended_master_secret,
            peer_identity: r.0.to_vec(),
            issued_at,
            lifetime,
        })
    }
}

/// Serialization format version of [`SessionState13`] (a DTLS 1.2 state, version 1, does
/// not decode as one, nor the other way round).
const STATE13_VERSION: u8 = 0x13;
/// Fixed part of a serialized DTLS 1.3 state: version, suite, PSK length, ticket_age_add,
/// issue time, lifetime, identity kind, identity length.
const STATE13_FIXED_LEN: usize = 1 + 2 + 1 + 4 + 8 + 4 + 1 + 2;

/// Who the peer of a DTLS 1.3 session proved to be, as a ticket keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketPeer {
    /// Not authenticated (a server without client authentication).
    None,
    /// The external PSK identity the session was authenticated with.
    Psk(Vec<u8>),
    /// The peer's end-entity certificate (DER).
    Certificate(Vec<u8>),
}

impl TicketPeer {
    fn kind(&self) -> u8 {
        match self {
            Self::None => 0,
            Self::Psk(_) => 1,
            Self::Certificate(_) => 2,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::None => &[],
            Self::Psk(b) | Self::Certificate(b) => b,
        }
    }
}

/// What a DTLS 1.3 server needs to resume from a ticket (RFC 8446 §4.6.1, §2.2): the
/// resumption PSK derived for this ticket, its suite, its `ticket_age_add` (to recover the
/// client's view of the ticket age), when it was issued and for how long, and who the peer
/// was.
pub struct SessionState13 {
    /// The original session's cipher suite code (RFC 8446 §4.6.1: a ticket is resumed
    /// only with a suite of the same hash).
    pub cipher_suite: u16,
    /// The resumption PSK (`HKDF-Expand-Label(resumption_master_secret, "resumption",
    /// ticket_nonce, Hash.length)`).
    pub psk: Zeroizing<Vec<u8>>,
    /// The ticket's `ticket_age_add`.
    pub age_add: u32,
    /// Who the peer proved to be in the original session.
    pub peer: TicketPeer,
    /// When the ticket was issued.
    pub issued_at: UnixTime,
    /// How long the ticket may be used after `issued_at` (its `ticket_lifetime`).
    pub lifetime: Duration,
}

impl fmt::Debug for SessionState13 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionState13")
            .field("cipher_suite", &self.cipher_suite)
            .field("issued_at", &self.issued_at.as_secs())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl SessionState13 {
    /// Serialized form: `version(1) ‖ suite(2) ‖ psk_len(1) ‖ psk ‖ age_add(4) ‖
    /// issued_at(8) ‖ lifetime(4) ‖ identity_kind(1) ‖ identity_len(2) ‖ identity`.
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let identity = self.peer.bytes();
        let too_large = |len| Error::SessionStateTooLarge { len };
        let identity_len = u16::try_from(identity.len()).map_err(|_| too_large(identity.len()))?;
        let psk_len = u8::try_from(self.psk.len()).map_err(|_| too_large(self.psk.len()))?;
        let lifetime = u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX);
        out.push(STATE13_VERSION);
        out.extend_from_slice(&self.cipher_suite.to_be_bytes());
        out.push(psk_len);
        out.extend_from_slice(&self.psk);
        out.extend_from_slice(&self.age_add.to_be_bytes());
        out.extend_from_slice(&self.issued_at.as_secs().to_be_bytes());
        out.extend_from_slice(&lifetime.to_be_bytes());
        out.push(self.peer.kind());
        out.extend_from_slice(&identity_len.to_be_bytes());
        out.extend_from_slice(identity);
        Ok(())
    }

    /// Parses exactly one serialized state, every length checked before use.
    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        if r.take::<1>()?[0] != STATE13_VERSION {
            return Err(Error::TicketRejected);
        }
        let cipher_suite = u16::from_be_bytes(r.take()?);
        let psk_len = usize::from(r.take::<1>()?[0]);
        let psk = Zeroizing::new(r.take_slice(psk_len)?.to_vec());
        let age_add = u32::from_be_bytes(r.take()?);
        let issued_at =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::from_be_bytes(r.take()?)));
        let lifetime = Duration::from_secs(u64::from(u32::from_be_bytes(r.take()?)));
        let kind = r.take::<1>()?[0];
        let identity_len = usize::from(u16::from_be_bytes(r.take()?));
        if r.0.len() != identity_len {
            return Err(Error::TicketRejected);
        }
        let identity = r.0.to_vec();
        let peer = match kind {
            0 if identity.is_empty() => TicketPeer::None,
            1 => TicketPeer::Psk(identity),
            2 => TicketPeer::Certificate(identity),
            _ => return Err(Error::TicketRejected),
        };
        Ok(Self {
            cipher_suite,
            psk,
            age_add,
            peer,
            issued_at,
            lifetime,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(Error::TicketRejected)?;
        self.0 = rest;
        Ok(*head)
    }

    fn take_slice(&mut self, len: usize) -> Result<&[u8], Error> {
        if self.0.len() < len {
            return Err(Error::TicketRejected);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// One ticket key: a random 16-byte name, an AES-256-GCM key, and a nonce counter.
struct TicketKey {
    name: [u8; TICKET_KEY_NAME_LEN],
    key: LessSafeKey,
    nonce_prefix: [u8; 4],
    counter: u64,
    created_secs: u64,
}

impl TicketKey {
    fn generate(rng: &mut dyn Rng, now: UnixTime) -> Result<Self, Error> {
        let mut name = [0u8; TICKET_KEY_NAME_LEN];
        rng.fill(&mut name);
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..]);
        let mut nonce_prefix = [0u8; 4];
        rng.fill(&mut nonce_prefix);
        let key =
            UnboundKey::new(&AES_256_GCM, &secret[..]).map_err(|_| Error::TicketSealFailed)?;
        Ok(Self {
            name,
            key: LessSafeKey::new(key),
            nonce_prefix,
            counter: 0,
            created_secs: now.as_secs(),
        })
    }

    /// A key derived from a 32-byte secret that several servers share (a key store), so a
    /// ticket one seals another opens: the name and the AES key are HMAC-SHA256 of the
    /// secret over fixed labels, the same everywhere. The nonce must still never repeat
    /// under the shared key: each server starts at a random 4-byte prefix and a random
    /// 63-bit counter, so two servers' nonces meet only if both prefixes and their counter
    /// ranges do (about 2^-62 per pair of servers at 2^32 tickets each).
    fn from_secret(
        secret: &[u8; TICKET_SECRET_LEN],
        rng: &mut dyn Rng,
        now: UnixTime,
    ) -> Result<Self, Error> {
        let prk = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut name = [0u8; TICKET_KEY_NAME_LEN];
        name.copy_from_slice(
            &hmac::sign(&prk, b"dtls ticket key name").as_ref()[..TICKET_KEY_NAME_LEN],
        );
        let mut aes = Zeroizing::new([0u8; 32]);
        aes.copy_from_slice(hmac::sign(&prk, b"dtls ticket key aes-256-gcm").as_ref());
        let mut nonce_prefix = [0u8; 4];
        rng.fill(&mut nonce_prefix);
        let mut counter = [0u8; 8];
        rng.fill(&mut counter);
        let key = UnboundKey::new(&AES_256_GCM, &aes[..]).map_err(|_| Error::TicketSealFailed)?;
        Ok(Self {
            name,
            key: LessSafeKey::new(key),
            nonce_prefix,
            counter: u64::from_be_bytes(counter) >> 1,
            created_secs: now.as_secs(),
        })
    }
}

/// Length of a shared ticket secret ([`TicketKeys::from_secrets`]).
pub const TICKET_SECRET_LEN: usize = 32;

/// The server's ticket keys: the current key seals, the previous key still opens tickets
/// until they would have expired anyway.
///
/// Ticket layout (RFC 5077 §4 recommended structure, with an AEAD instead of CBC + HMAC):
/// `key_name(16) ‖ nonce(12) ‖ AES-256-GCM(state) ‖ tag(16)`, the key name being the
/// additional data. Nonces are a random per-key prefix and a counter, never repeated under
/// one key.
pub struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
    /// When the previous key stopped sealing (seconds since the epoch).
    previous_retired_secs: u64,
    rotation_interval: Duration,
    ticket_lifetime: Duration,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("has_previous", &self.previous.is_some())
            .field("rotation_interval", &self.rotation_interval)
            .field("ticket_lifetime", &self.ticket_lifetime)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Fresh keys from `rng`. Tickets live at most `ticket_lifetime`; the sealing key rotates
    /// every `rotation_interval`.
    ///
    /// # Errors
    /// [`Error::TicketSealFailed`] if aws-lc rejects the key (not expected).
    pub fn new(
        rng: &mut dyn Rng,
        now: UnixTime,
        rotation_interval: Duration,
        ticket_lifetime: Duration,
    ) -> Result<Self, Error> {
        Ok(Self {
            current: TicketKey::generate(rng, now)?,
            previous: None,
            previous_retired_secs: 0,
            rotation_interval,
            ticket_lifetime,
        })
    }

    /// Keys derived from shared secrets ([`TICKET_SECRET_LEN`] bytes each, e.g. from a key
    /// store every server of a fleet reads): `current` seals, `previous` (the secret it
    /// replaced) still opens for one ticket lifetime. They never rotate on their own: the
    /// store's owner rotates them by providing a new `current` with the old one as
    /// `previous`, and the server builds new keys from them (tickets of either still open).
    ///
    /// # Errors
    /// As [`TicketKeys::new`].
    pub fn from_secrets(
        current: &[u8; TICKET_SECRET_LEN],
        previous: Option<&[u8; TICKET_SECRET_LEN]>,
        rng: &mut dyn Rng,
        now: UnixTime,
        ticket_lifetime: Duration,
    ) -> Result<Self, Error> {
        Ok(Self {
            current: TicketKey::from_secret(current, rng, now)?,
            previous: previous
                .map(|p| TicketKey::from_secret(p, rng, now))
                .transpose()?,
            previous_retired_secs: now.as_secs(),
            rotation_interval: Duration::MAX,
            ticket_lifetime,
        })
    }

    /// The lifetime to announce in NewSessionTicket (`ticket_lifetime_hint`, RFC 5077 §3.3).
    pub fn ticket_lifetime(&self) -> Duration {
        self.ticket_lifetime
    }

    /// When [`TicketKeys::handle_timeout`] next has work: the rotation of the current key or
    /// the end of the previous key's acceptance, whichever is first.
    pub fn poll_timeout(&self) -> UnixTime {
        let rotate = self
            .current
            .created_secs
            .saturating_add(self.rotation_interval.as_secs());
        let drop_previous = self
            .previous
            .as_ref()
            .map(|_| self.previous_expiry_secs())
            .unwrap_or(u64::MAX);
        UnixTime::since_unix_epoch(Duration::from_secs(rotate.min(drop_previous)))
    }

    /// Rotates the sealing key when due and forgets the previous key once every ticket it
    /// sealed has expired. Returns whether the sealing key rotated.
    ///
    /// # Errors
    /// As [`TicketKeys::new`].
    pub fn handle_timeout(&mut self, now: UnixTime, rng: &mut dyn Rng) -> Result<bool, Error> {
        let now_secs = now.as_secs();
        if self.previous.is_some() && now_secs >= self.previous_expiry_secs() {
            self.previous = None;
        }
        let due = self
            .current
            .created_secs
            .saturating_add(self.rotation_interval.as_secs());
        if now_secs >= due {
            self.rotate(now, rng)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Rotates now: a new sealing key; the old one keeps opening tickets for one ticket
    /// lifetime; any older key is dropped.
    ///
    /// # Errors
    /// As [`TicketKeys::new`].
    pub fn rotate(&mut self, now: UnixTime, rng: &mut dyn Rng) -> Result<(), Error> {
        let next = TicketKey::generate(rng, now)?;
        self.previous = Some(std::mem::replace(&mut self.current, next));
        self.previous_retired_secs = now.as_secs();
        Ok(())
    }

    /// Replaces every key: no ticket sealed before now opens again (a reload that changed
    /// who may resume, e.g. a new client CA). Sealing continues under a fresh key.
    ///
    /// # Errors
    /// As [`TicketKeys::new`].
    pub fn revoke_all(&mut self, now: UnixTime, rng: &mut dyn Rng) -> Result<(), Error> {
        self.current = TicketKey::generate(rng, now)?;
        self.previous = None;
        Ok(())
    }

    fn previous_expiry_secs(&self) -> u64 {
        self.previous_retired_secs
            .saturating_add(self.ticket_lifetime.as_secs())
    }

    /// Seals `state` into a ticket under the current key.
    ///
    /// # Errors
    /// [`Error::SessionStateTooLarge`] when the peer identity exceeds 65535 bytes,
    /// [`Error::TicketSealFailed`] when the nonce space is spent or aws-lc fails.
    pub fn seal(&mut self, state: &SessionState) -> Result<Vec<u8>, Error> {
        self.seal_with(STATE_FIXED_LEN + state.peer_identity.len(), |out| {
            state.encode_into(out)
        })
    }

    /// Seals a DTLS 1.3 `state` into a ticket under the current key (RFC 8446 §4.6.1: the
    /// ticket is opaque to the client; ours is self-encrypted and self-authenticated).
    ///
    /// # Errors
    /// As [`TicketKeys::seal`].
    pub fn seal13(&mut self, state: &SessionState13) -> Result<Vec<u8>, Error> {
        self.seal_with(
            STATE13_FIXED_LEN + state.psk.len() + state.peer.bytes().len(),
            |out| state.encode_into(out),
        )
    }

    fn seal_with(
        &mut self,
        plain_len: usize,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
    ) -> Result<Vec<u8>, Error> {
        let key = &mut self.current;
        let counter = key.counter;
        key.counter = counter.checked_add(1).ok_or(Error::TicketSealFailed)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&key.nonce_prefix);
        nonce[4..].copy_from_slice(&counter.to_be_bytes());

        let header_len = TICKET_KEY_NAME_LEN + NONCE_LEN;
        // Zeroizing: on an early return the buffer may still hold the plaintext state. The
        // capacity is exact, so no reallocation leaves a plaintext copy behind.
        let mut ticket = Zeroizing::new(Vec::with_capacity(header_len + plain_len + TAG_LEN));
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        encode(&mut ticket)?;
        let tag = key
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut ticket[header_len..],
            )
            .map_err(|_| Error::TicketSealFailed)?;
        ticket.extend_from_slice(tag.as_ref());
        Ok(std::mem::take(&mut *ticket))
    }

    /// Opens a ticket sealed by the current or the previous key and checks it has not
    /// expired at `now` (its own lifetime, capped by this server's ticket lifetime).
    ///
    /// # Errors
    /// [`Error::TicketRejected`] when the ticket names no known key, fails authentication
    /// or is malformed; [`Error::TicketExpired`] when it is past its lifetime. Either way the
    /// server continues with a full handshake (RFC 5077 §3.1).
    pub fn open(&self, ticket: &[u8], now: UnixTime) -> Result<SessionState, Error> {
        let state = self.open_with(ticket, now, STATE_FIXED_LEN, SessionState::decode)?;
        self.check_expiry(state.issued_at, state.lifetime, now)?;
        Ok(state)
    }

    /// Opens a DTLS 1.3 ticket, as [`TicketKeys::open`]; a DTLS 1.2 ticket does not open
    /// here (nor a DTLS 1.3 ticket there: the states have different versions).
    ///
    /// # Errors
    /// As [`TicketKeys::open`].
    pub fn open13(&self, ticket: &[u8], now: UnixTime) -> Result<SessionState13, Error> {
        let state = self.open_with(ticket, now, STATE13_FIXED_LEN, SessionState13::decode)?;
        self.check_expiry(state.issued_at, state.lifetime, now)?;
        Ok(state)
    }

    fn check_expiry(
        &self,
        issued_at: UnixTime,
        lifetime: Duration,
        now: UnixTime,
    ) -> Result<(), Error> {
        let lifetime = lifetime.min(self.ticket_lifetime).as_secs();
        if now.as_secs() >= issued_at.as_secs().saturating_add(lifetime) {
            return Err(Error::TicketExpired);
        }
        Ok(())
    }

    fn open_with<T>(
        &self,
        ticket: &[u8],
        now: UnixTime,
        fixed_len: usize,
        decode: impl FnOnce(&[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (name, rest) = ticket
            .split_first_chunk::<TICKET_KEY_NAME_LEN>()
            .ok_or(Error::TicketRejected)?;
        let (nonce, sealed) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(Error::TicketRejected)?;
        if sealed.len() < TAG_LEN + fixed_len {
            return Err(Error::TicketRejected);
        }
        let key = if *name == self.current.name {
            &self.current
        } else {
            match &self.previous {
                Some(prev) if *name == prev.name && now.as_secs() < self.previous_expiry_secs() => {
                    prev
                }
                _ => return Err(Error::TicketRejected),
            }
        };
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(*name),
                &mut buf,
            )
            .map_err(|_| Error::TicketRejected)?;
        decode(plain)
    }
}

#[cfg(test)]
#[path = "ticket_tests.rs"]
mod tests;
