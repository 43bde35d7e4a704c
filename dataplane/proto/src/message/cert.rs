//! Certificate and CertificateRequest (RFC 5246 §7.4.2, §7.4.4).

use crate::WireError;
use crate::codec::{Prefix, Reader, put_u16, put_vec16, put_vec24, u16_list, with_len_prefix};
use crate::codes::{ClientCertificateType, HandshakeType, SignatureScheme};

/// Certificate: `opaque ASN.1Cert<1..2^24-1>; ASN.1Cert certificate_list<0..2^24-1>;`
/// The sender's certificate comes first; the list may be empty (a client without a
/// certificate, RFC 5246 §7.4.6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Certificate {
    /// DER certificates, end-entity first.
    pub chain: Vec<Vec<u8>>,
}

impl Certificate {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::Certificate;

    /// Parses a Certificate body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut outer = Reader::new(body, "Certificate");
        let list = outer.vec24()?;
        outer.finish()?;
        let mut r = Reader::new(list, "certificate_list");
        let mut chain = Vec::new();
        while !r.is_empty() {
            let cert = r.vec24()?;
            if cert.is_empty() {
                return Err(WireError::BadLength { what: "ASN.1Cert" });
            }
            chain.push(cert.to_vec());
        }
        Ok(Certificate { chain })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        with_len_prefix(out, Prefix::U24, "certificate_list", |out| {
            self.chain.iter().try_for_each(|cert| {
                if cert.is_empty() {
                    return Err(WireError::IllegalValue {
                        what: "empty certificate",
                    });
                }
                put_vec24(out, cert, "ASN.1Cert")
            })
        })
    }
}

/// CertificateRequest, TLS 1.2 form (RFC 5246 §7.4.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateRequest {
    /// `ClientCertificateType certificate_types<1..2^8-1>`.
    pub certificate_types: Vec<ClientCertificateType>,
    /// `SignatureAndHashAlgorithm supported_signature_algorithms<2..2^16-2>`.
    pub signature_schemes: Vec<SignatureScheme>,
    /// `DistinguishedName certificate_authorities<0..2^16-1>`, each
    /// `opaque DistinguishedName<1..2^16-1>` (DER).
    pub certificate_authorities: Vec<Vec<u8>>,
}

impl CertificateRequest {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::CertificateRequest;

    /// Parses a CertificateRequest body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "CertificateRequest");
        let types = r.vec8()?;
        if types.is_empty() {
            return Err(WireError::BadLength {
                what: "certificate_types",
            });
        }
        let schemes = u16_list(r.vec16()?, 2, "supported_signature_algorithms")?;
        let cas = r.vec16()?;
        r.finish()?;
        let mut ca_reader = Reader::new(cas, "certificate_authorities");
        let mut certificate_authorities = Vec::new();
        while !ca_reader.is_empty() {
            let dn = ca_reader.vec16()?;
            if dn.is_empty() {
                return Err(WireError::BadLength {
                    what: "DistinguishedName",
                });
            }
            certificate_authorities.push(dn.to_vec());
        }
        Ok(CertificateRequest {
            certificate_types: types
                .iter()
                .map(|t| ClientCertificateType::from_u8(*t))
                .collect(),
            signature_schemes: schemes.into_iter().map(SignatureScheme::from_u16).collect(),
            certificate_authorities,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.certificate_types.is_empty() || self.signature_schemes.is_empty() {
            return Err(WireError::IllegalValue {
                what: "CertificateRequest with an empty list",
            });
        }
        with_len_prefix(out, Prefix::U8, "certificate_types", |out| {
            out.extend(self.certificate_types.iter().map(|t| t.to_u8()));
            Ok(())
        })?;
        with_len_prefix(out, Prefix::U16, "supported_signature_algorithms", |out| {
            self.signature_schemes
                .iter()
                .for_each(|s| put_u16(out, s.to_u16()));
            Ok(())
        })?;
        with_len_prefix(out, Prefix::U16, "certificate_authorities", |out| {
            self.certificate_authorities.iter().try_for_each(|dn| {
                if dn.is_empty() {
                    return Err(WireError::IllegalValue {
                        what: "empty DistinguishedName",
                    });
                }
                put_vec16(out, dn, "DistinguishedName")
            })
        })
    }
}
