//! Unit tests of `certcheck` on rcgen-generated files, at fixed times.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use time::OffsetDateTime;

use super::*;

#[path = "../tests/pki/mod.rs"]
mod pki;

use pki::Validity;

/// 2030-06-01T00:00:00Z, the "now" of these tests.
const NOW: u64 = 1_906_502_400;
const DAY: i64 = 86_400;

fn at(offset_secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(i64::try_from(NOW).expect("fits") + offset_secs)
        .expect("valid time")
}

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(NOW))
}

/// Valid from 100 days before NOW to 100 days after.
fn current() -> Validity {
    Validity {
        not_before: at(-100 * DAY),
        not_after: at(100 * DAY),
    }
}

fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dtlsd-certcheck-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Checks `chain` (PEM blocks in this order) with `key_pem` (mode 0600) at NOW.
fn check(chain: &[&str], key_pem: &str) -> Checked {
    let dir = scratch();
    let paths = CertKeyPaths {
        cert: pki::write(&dir, "server.pem", &chain.concat(), 0o644),
        key: pki::write(&dir, "server.key", key_pem, 0o600),
    };
    let checked = check_cert_key(&paths, now());
    let _ = std::fs::remove_dir_all(&dir);
    checked
}

/// `(field key, severity, message)` of each finding.
fn summary(checked: &Checked) -> Vec<(&'static str, Severity, String)> {
    checked
        .findings
        .iter()
        .map(|f| (f.field.key(), f.severity, f.problem.to_string()))
        .collect()
}

fn only_error(checked: &Checked) -> (&'static str, String) {
    let s = summary(checked);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].1, Severity::Error, "{s:?}");
    assert!(checked.loaded.is_none());
    (s[0].0, s[0].2.clone())
}

#[test]
fn a_good_chain_passes_with_or_without_its_root() {
    let root = pki::root("Root");
    let int = pki::intermediate("Intermediate", &root);
    let (leaf, key) = pki::leaf(current(), &int);
    for chain in [
        vec![leaf.as_str(), &int.pem()],
        vec![leaf.as_str(), &int.pem(), &root.pem()],
    ] {
        let checked = check(&chain, &key.serialize_pem());
        assert!(checked.findings.is_empty(), "{:?}", summary(&checked));
        let loaded = checked.loaded.expect("loaded");
        assert_eq!(loaded.chain.len(), chain.len());
    }
    // An end entity alone, issued by a root the peer holds: complete as far as can be told.
    let (direct, key) = pki::leaf(current(), &root);
    assert!(check(&[&direct], &key.serialize_pem()).findings.is_empty());
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let root = pki::root("Root");
    let (leaf, _) = pki::leaf(current(), &root);
    let checked = check(&[&leaf], &pki::other_key_pem());
    let (field, message) = only_error(&checked);
    assert_eq!(field, "key");
    assert!(
        message.contains("does not match the certificate"),
        "{message}"
    );
    assert!(message.contains("(ECDSA P-256)"), "{message}");
}

#[test]
fn an_rsa_key_for_an_ecdsa_certificate_is_a_mismatch() {
    let root = pki::root("Root");
    let (leaf, _) = pki::leaf(current(), &root);
    let rsa = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("RSA key");
    let (field, message) = only_error(&check(&[&leaf], &rsa.serialize_pem()));
    assert_eq!(field, "key");
    assert!(message.contains("(RSA) does not match"), "{message}");
}

#[test]
fn validity_at_the_given_time() {
    let root = pki::root("Root");
    let case = |not_before: i64, not_after: i64| {
        let (leaf, key) = pki::leaf(
            Validity {
                not_before: at(not_before),
                not_after: at(not_after),
            },
            &root,
        );
        summary(&check(&[&leaf], &key.serialize_pem()))
    };
    let expired = case(-100 * DAY, -1);
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].1, Severity::Error);
    assert!(
        expired[0].2.contains("certificate #1 (CN=localhost)")
            && expired[0].2.contains("expired on 2030-05-31T23:59:59Z"),
        "{expired:?}"
    );
    let early = case(1, 100 * DAY);
    assert_eq!(early[0].1, Severity::Error);
    assert!(
        early[0]
            .2
            .contains("is not valid before 2030-06-01T00:00:01Z"),
        "{early:?}"
    );
    let soon = case(-DAY, 5 * DAY + 3600);
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert_eq!(soon[0].1, Severity::Warning);
    assert!(
        soon[0]
            .2
            .contains("expires in 5 days (2030-06-06T01:00:00Z)"),
        "{soon:?}"
    );
    // notAfter is inclusive (RFC 5280 §4.1.2.5): valid, with a warning.
    let last_second = case(-DAY, 0);
    assert_eq!(last_second[0].1, Severity::Warning, "{last_second:?}");
    assert!(last_second[0].2.contains("expires in 0 minutes"));
    // Fourteen days and more: nothing to say.
    assert!(case(-DAY, 14 * DAY).is_empty());
    assert_eq!(case(-DAY, 14 * DAY - 1)[0].1, Severity::Warning);
}

#[test]
fn an_expired_intermediate_is_named() {
    let root = pki::root("Root");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Old CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = at(-300 * DAY);
    params.not_after = at(-DAY);
    let old = CertifiedIssuer::signed_by(params, KeyPair::generate().expect("key"), &root)
        .expect("old CA");
    let (leaf, key) = pki::leaf(current(), &old);
    let (field, message) = only_error(&check(&[&leaf, &old.pem()], &key.serialize_pem()));
    assert_eq!(field, "cert");
    assert!(message.contains("certificate #2 (CN=Old CA)"), "{message}");
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn a_chain_out_of_order_names_the_issuer_s_place() {
    let root = pki::root("Root");
    let int = pki::intermediate("Intermediate", &root);
    let (leaf, key) = pki::leaf(current(), &int);
    let (field, message) = only_error(&check(
        &[&leaf, &root.pem(), &int.pem()],
        &key.serialize_pem(),
    ));
    assert_eq!(field, "cert");
    assert!(
        message.contains("chain out of order in ") && message.contains(
            "certificate #1 (CN=localhost) is followed by certificate #2 (CN=Root), but its issuer is #3"
        ),
        "{message}"
    );
    // Reversed (root first): the key check fails too, since the first certificate is not
    // the end entity.
    let reversed = check(&[&root.pem(), &int.pem(), &leaf], &key.serialize_pem());
    let s = summary(&reversed);
    assert!(
        s.iter().any(|(k, _, m)| *k == "cert"
            && m.contains("certificate #1 (CN=Root) is self-issued (a root) but is followed by")),
        "{s:?}"
    );
    assert!(
        s.iter()
            .any(|(k, _, m)| *k == "key" && m.contains("does not match")),
        "{s:?}"
    );
}

#[test]
fn strays_duplicates_and_wrong_intermediates_are_refused() {
    let root = pki::root("Root");
    let int = pki::intermediate("Intermediate", &root);
    let (leaf, key) = pki::leaf(current(), &int);
    let key = key.serialize_pem();

    let unrelated = pki::root("Someone Else");
    let (_, stray) = only_error(&check(&[&leaf, &unrelated.pem()], &key));
    assert!(
        stray.contains("is followed by certificate #2 (CN=Someone Else), which did not issue it")
            && stray.contains("issuer CN=Intermediate"),
        "{stray}"
    );

    let (_, dup) = only_error(&check(&[&leaf, &int.pem(), &int.pem()], &key));
    assert!(
        dup.contains("certificate #3 (CN=Intermediate)")
            && dup.contains("duplicate of certificate #2"),
        "{dup}"
    );

    // Same name, another key: the names link, the signature does not.
    let reissued = pki::intermediate("Intermediate", &root);
    let (_, sig) = only_error(&check(&[&leaf, &reissued.pem()], &key));
    assert!(
        sig.contains("does not verify with the key of certificate #2"),
        "{sig}"
    );

    // An issuer that is not a CA.
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Not A CA");
    params.is_ca = IsCa::ExplicitNoCa;
    let not_ca = CertifiedIssuer::signed_by(params, KeyPair::generate().expect("key"), &root)
        .expect("non-CA issuer");
    let (leaf2, key2) = pki::leaf(current(), &not_ca);
    let (_, ca) = only_error(&check(&[&leaf2, &not_ca.pem()], &key2.serialize_pem()));
    assert!(ca.contains("is not a CA certificate"), "{ca}");
}

#[test]
fn encrypted_keys_are_refused_with_the_way_out() {
    let root = pki::root("Root");
    let (leaf, _) = pki::leaf(current(), &root);
    let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBAAECAwQF\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let (field, message) = only_error(&check(&[&leaf], pkcs8));
    assert_eq!(field, "key");
    assert!(
        message.contains("PKCS#8 ENCRYPTED PRIVATE KEY"),
        "{message}"
    );
    assert!(message.contains("openssl pkey -in "), "{message}");
    let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                  DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n\
                  MIIBAAECAwQF\n-----END EC PRIVATE KEY-----\n";
    let (_, message) = only_error(&check(&[&leaf], legacy));
    assert!(message.contains("Proc-Type: 4,ENCRYPTED"), "{message}");
}

#[test]
fn a_key_file_others_can_read_is_a_warning() {
    let root = pki::root("Root");
    let (leaf, key) = pki::leaf(current(), &root);
    for (mode, who) in [
        (0o640, Some("group")),
        (0o604, Some("others")),
        (0o644, Some("group and others")),
        (0o600, None),
        (0o620, None),
    ] {
        let dir = scratch();
        let paths = CertKeyPaths {
            cert: pki::write(&dir, "server.pem", &leaf, 0o644),
            key: pki::write(&dir, "server.key", &key.serialize_pem(), mode),
        };
        let checked = check_cert_key(&paths, now());
        let s = summary(&checked);
        match who {
            Some(who) => {
                assert_eq!(s.len(), 1, "{mode:o}: {s:?}");
                assert_eq!((s[0].0, s[0].1), ("key", Severity::Warning));
                assert!(
                    s[0].2
                        .contains(&format!("readable by {who} (mode {mode:04o})")),
                    "{s:?}"
                );
                assert!(s[0].2.contains("chmod 600"), "{s:?}");
                assert!(checked.loaded.is_some(), "warnings do not refuse the pair");
            }
            None => assert!(s.is_empty(), "{mode:o}: {s:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn load_certified_key_returns_errors_only_on_one_line() {
    let root = pki::root("Root");
    let (leaf, _) = pki::leaf(
        Validity {
            not_before: at(-DAY),
            not_after: at(-1),
        },
        &root,
    );
    let dir = scratch();
    let paths = CertKeyPaths {
        cert: pki::write(&dir, "server.pem", &leaf, 0o644),
        key: pki::write(&dir, "server.key", &pki::other_key_pem(), 0o644),
    };
    let err = load_certified_key(&paths, now()).expect_err("refused");
    let text = err.to_string();
    assert_eq!(err.0.len(), 2, "{text}");
    assert!(text.starts_with("cert: certificate #1"), "{text}");
    assert!(text.contains("; key: the private key in"), "{text}");
    assert!(
        !text.contains("readable by"),
        "warnings are not errors: {text}"
    );
    assert!(!text.contains('\n'));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn durations_in_words() {
    assert_eq!(in_words(0), "0 minutes");
    assert_eq!(in_words(60), "1 minute");
    assert_eq!(in_words(3_599), "59 minutes");
    assert_eq!(in_words(3_600), "1 hour");
    assert_eq!(in_words(86_399), "23 hours");
    assert_eq!(in_words(86_400), "1 day");
    assert_eq!(in_words(13 * 86_400 + 86_399), "13 days");
}

#[test]
fn names_stay_on_one_line() {
    assert_eq!(one_line("CN=a\nb\tc"), "CN=a\\nb\\tc");
}
