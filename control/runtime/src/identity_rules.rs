//! Who may connect among clients whose certificate verified: ghostunnel's `--allow-cn`,
//! `--allow-dns` and `--allow-uri`, as a [`ClientIdentityPolicy`] the engine applies right
//! after the chain verifies (so a refused client never gets keys).
//!
//! A certificate is admitted when any rule matches: its subject has a common name in
//! [`IdentityRules::cn`] (exact), a DNS subject alternative name in [`IdentityRules::dns`]
//! (exact, ASCII case-insensitive, as DNS names compare; no wildcards), or a URI subject
//! alternative name in [`IdentityRules::uri`] (exact, e.g. a SPIFFE ID). Rules with no
//! entries admit every verified certificate.

use control::{ClientIdentityPolicy, IdentityRefused};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Longest identity text a refusal carries into a log line.
const MAX_LOGGED: usize = 256;

/// Allowed client identities (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityRules {
    /// Allowed subject common names.
    pub cn: Vec<String>,
    /// Allowed DNS subject alternative names.
    pub dns: Vec<String>,
    /// Allowed URI subject alternative names.
    pub uri: Vec<String>,
}

impl IdentityRules {
    /// Whether no rule is set (every verified certificate is admitted).
    pub fn is_empty(&self) -> bool {
        self.cn.is_empty() && self.dns.is_empty() && self.uri.is_empty()
    }
}

/// The names a certificate shows, as the rules read them.
#[derive(Debug, Default)]
struct Names {
    cn: Vec<String>,
    dns: Vec<String>,
    uri: Vec<String>,
}

fn names(der: &[u8]) -> Option<Names> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names = Names {
        cn: cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect(),
        ..Names::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
                GeneralName::URI(u) => names.uri.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Some(names)
}

/// `names` for a log line: printable characters only, at most [`MAX_LOGGED`] of them.
fn describe(names: &Names) -> String {
    let mut parts = Vec::new();
    for (kind, list) in [("cn", &names.cn), ("dns", &names.dns), ("uri", &names.uri)] {
        parts.extend(list.iter().map(|n| format!("{kind}={n}")));
    }
    if parts.is_empty() {
        return "(no cn, dns or uri name)".into();
    }
    parts
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_LOGGED)
        .collect()
}

impl ClientIdentityPolicy for IdentityRules {
    fn check(&self, end_entity: &[u8]) -> Result<(), IdentityRefused> {
        if self.is_empty() {
            return Ok(());
        }
        // The chain verified, so the certificate parses; one that does not is refused.
        let Some(names) = names(end_entity) else {
            return Err(IdentityRefused {
                identity: "(unparsable certificate)".into(),
            });
        };
        let admitted = names.cn.iter().any(|n| self.cn.contains(n))
            || names
                .dns
                .iter()
                .any(|n| self.dns.iter().any(|d| d.eq_ignore_ascii_case(n)))
            || names.uri.iter().any(|n| self.uri.contains(n));
        if admitted {
            Ok(())
        } else {
            Err(IdentityRefused {
                identity: describe(&names),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: &str, sans: &[&str]) -> Vec<u8> {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.strip_prefix("uri:") {
                Some(uri) => SanType::URI(uri.try_into().expect("uri")),
                None => SanType::DnsName((*s).try_into().expect("dns")),
            })
            .collect();
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn any_rule_admits_and_none_refuses_naming_the_identity() {
        let cert = certificate(
            "alice",
            &["alice.example.net", "uri:spiffe://example.net/alice"],
        );
        let rules = |cn: &[&str], dns: &[&str], uri: &[&str]| IdentityRules {
            cn: cn.iter().map(|s| (*s).to_owned()).collect(),
            dns: dns.iter().map(|s| (*s).to_owned()).collect(),
            uri: uri.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(IdentityRules::default().check(&cert), Ok(()));
        assert_eq!(rules(&["alice"], &[], &[]).check(&cert), Ok(()));
        assert_eq!(rules(&[], &["ALICE.example.net"], &[]).check(&cert), Ok(()));
        assert_eq!(
            rules(&["bob"], &[], &["spiffe://example.net/alice"]).check(&cert),
            Ok(())
        );
        let refused = rules(
            &["bob"],
            &["bob.example.net"],
            &["spiffe://example.net/bob"],
        )
        .check(&cert)
        .expect_err("no rule matches");
        assert_eq!(
            refused.identity,
            "cn=alice dns=alice.example.net uri=spiffe://example.net/alice"
        );
        // Common names compare exactly; a CN is not a DNS name.
        assert!(rules(&["Alice"], &["alice"], &[]).check(&cert).is_err());
        assert!(rules(&["x"], &[], &[]).check(&[0x30, 0x00]).is_err());
    }
}
