//! ServerKeyExchange and ClientKeyExchange for the ECDHE, PSK and ECDHE_PSK key
//! exchanges (RFC 8422 §5.4 / §5.7, RFC 4279 §2, RFC 5489 §2). Both messages have no
//! self-describing type: parsing needs the negotiated [`KeyExchange`].

use crate::WireError;
use crate::codec::{Reader, put_u16, put_vec8, put_vec16};
use crate::codes::{CURVE_TYPE_NAMED_CURVE, HandshakeType, NamedGroup, SignatureScheme};
use crate::message::hello::RANDOM_LEN;
use crate::suites::KeyExchange;

/// `ServerECDHParams` with a named curve (RFC 8422 §5.4):
/// `ECCurveType curve_type = named_curve(3); NamedCurve namedcurve; opaque point <1..2^8-1>;`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EcdheParams {
    /// The group.
    pub group: NamedGroup,
    /// The server's ephemeral public key (uncompressed point or X25519 u-coordinate).
    pub public: Vec<u8>,
}

impl EcdheParams {
    fn parse_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let curve_type = r.u8()?;
        // RFC 8422 §5.4: explicit_prime / explicit_char2 are deprecated; only named curves.
        if curve_type != CURVE_TYPE_NAMED_CURVE {
            return Err(WireError::IllegalValue {
                what: "ECCurveType not named_curve",
            });
        }
        let group = NamedGroup::from_u16(r.u16()?);
        let public = nonempty_point(r)?;
        Ok(EcdheParams { group, public })
    }

    /// Appends the encoded params: exactly the bytes the server signs.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.public.is_empty() {
            return Err(WireError::IllegalValue {
                what: "empty point",
            });
        }
        out.push(CURVE_TYPE_NAMED_CURVE);
        put_u16(out, self.group.to_u16());
        put_vec8(out, &self.public, "ECPoint")
    }

    /// The data covered by the ServerKeyExchange signature (RFC 8422 §5.4 /
    /// RFC 5246 §7.4.3): `client_random + server_random + ServerECDHParams`.
    pub fn signed_message(
        &self,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
    ) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(2 * RANDOM_LEN + 4 + self.public.len());
        out.extend_from_slice(client_random);
        out.extend_from_slice(server_random);
        self.emit(&mut out)?;
        Ok(out)
    }
}

/// `opaque point <1..2^8-1>` (RFC 8422 §5.4 / §5.7).
fn nonempty_point(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let point = r.vec8()?;
    if point.is_empty() {
        return Err(WireError::BadLength { what: "ECPoint" });
    }
    Ok(point.to_vec())
}

/// `digitally-signed struct` in TLS 1.2 (RFC 5246 §4.7):
/// `SignatureAndHashAlgorithm algorithm; opaque signature<0..2^16-1>;`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigitallySigned {
    /// The scheme (hash + signature algorithm pair).
    pub scheme: SignatureScheme,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl DigitallySigned {
    fn parse_from(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let scheme = SignatureScheme::from_u16(r.u16()?);
        let signature = r.vec16()?.to_vec();
        Ok(DigitallySigned { scheme, signature })
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_u16(out, self.scheme.to_u16());
        put_vec16(out, &self.signature, "signature")
    }
}

/// ServerKeyExchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerKeyExchange {
    /// ECDHE_ECDSA / ECDHE_RSA (RFC 8422 §5.4): params then their signature.
    Ecdhe {
        /// The ephemeral key.
        params: EcdheParams,
        /// Signature over [`EcdheParams::signed_message`].
        signature: DigitallySigned,
    },
    /// PSK (RFC 4279 §2): `opaque psk_identity_hint<0..2^16-1>`.
    Psk {
        /// Identity hint (possibly empty).
        identity_hint: Vec<u8>,
    },
    /// ECDHE_PSK (RFC 5489 §2): identity hint then params, no signature.
    EcdhePsk {
        /// Identity hint (possibly empty).
        identity_hint: Vec<u8>,
        /// The ephemeral key.
        params: EcdheParams,
    },
}

impl ServerKeyExchange {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::ServerKeyExchange;

    /// Parses a ServerKeyExchange body for the negotiated key exchange.
    pub fn parse(body: &[u8], kx: KeyExchange) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ServerKeyExchange");
        let msg = match kx {
            KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa => ServerKeyExchange::Ecdhe {
                params: EcdheParams::parse_from(&mut r)?,
                signature: DigitallySigned::parse_from(&mut r)?,
            },
            KeyExchange::Psk => ServerKeyExchange::Psk {
                identity_hint: r.vec16()?.to_vec(),
            },
            KeyExchange::EcdhePsk => ServerKeyExchange::EcdhePsk {
                identity_hint: r.vec16()?.to_vec(),
                params: EcdheParams::parse_from(&mut r)?,
            },
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            ServerKeyExchange::Ecdhe { params, signature } => {
                params.emit(out)?;
                signature.emit(out)
            }
            ServerKeyExchange::Psk { identity_hint } => {
                put_vec16(out, identity_hint, "psk_identity_hint")
            }
            ServerKeyExchange::EcdhePsk {
                identity_hint,
                params,
            } => {
                put_vec16(out, identity_hint, "psk_identity_hint")?;
                params.emit(out)
            }
        }
    }

    /// The ECDHE params, if this exchange has them.
    pub fn ecdhe_params(&self) -> Option<&EcdheParams> {
        match self {
            ServerKeyExchange::Ecdhe { params, .. }
            | ServerKeyExchange::EcdhePsk { params, .. } => Some(params),
            ServerKeyExchange::Psk { .. } => None,
        }
    }
}

/// ClientKeyExchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKeyExchange {
    /// ECDHE (RFC 8422 §5.7): `opaque point <1..2^8-1>`.
    Ecdhe {
        /// The client's ephemeral public key.
        public: Vec<u8>,
    },
    /// PSK (RFC 4279 §2): `opaque psk_identity<0..2^16-1>`.
    Psk {
        /// The PSK identity.
        identity: Vec<u8>,
    },
    /// ECDHE_PSK (RFC 5489 §2): identity then the ECDHE public key.
    EcdhePsk {
        /// The PSK identity.
        identity: Vec<u8>,
        /// The client's ephemeral public key.
        public: Vec<u8>,
    },
}

impl ClientKeyExchange {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::ClientKeyExchange;

    /// Parses a ClientKeyExchange body for the negotiated key exchange.
    pub fn parse(body: &[u8], kx: KeyExchange) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ClientKeyExchange");
        let msg = match kx {
            KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa => ClientKeyExchange::Ecdhe {
                public: nonempty_point(&mut r)?,
            },
            KeyExchange::Psk => ClientKeyExchange::Psk {
                identity: r.vec16()?.to_vec(),
            },
            KeyExchange::EcdhePsk => ClientKeyExchange::EcdhePsk {
                identity: r.vec16()?.to_vec(),
                public: nonempty_point(&mut r)?,
            },
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let point = |out: &mut Vec<u8>, p: &[u8]| {
            if p.is_empty() {
                return Err(WireError::IllegalValue {
                    what: "empty point",
                });
            }
            put_vec8(out, p, "ECPoint")
        };
        match self {
            ClientKeyExchange::Ecdhe { public } => point(out, public),
            ClientKeyExchange::Psk { identity } => put_vec16(out, identity, "psk_identity"),
            ClientKeyExchange::EcdhePsk { identity, public } => {
                put_vec16(out, identity, "psk_identity")?;
                point(out, public)
            }
        }
    }
}

/// CertificateVerify (RFC 5246 §7.4.8): one `digitally-signed` over the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateVerify {
    /// Scheme and signature.
    pub signed: DigitallySigned,
}

impl CertificateVerify {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::CertificateVerify;

    /// Parses a CertificateVerify body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "CertificateVerify");
        let signed = DigitallySigned::parse_from(&mut r)?;
        r.finish()?;
        Ok(CertificateVerify { signed })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.signed.emit(out)
    }
}
