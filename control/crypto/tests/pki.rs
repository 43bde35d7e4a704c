//! Certificates, keys, signatures and chain verification, through the public API, on a
//! freshly generated test PKI.

use std::path::PathBuf;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
};
use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::test_pki::{TestPki, generate_test_pki};
use dtls_crypto::{
    CertificateVerifier, Error, PeerVerifier, SigningKey, SigningKeyKind, pem, verify_signature,
};
use dtls_proto::SignatureScheme;

/// A fixed verification time (2033-05-18), inside rcgen's default validity (1975..4096).
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000_000))
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dtls-crypto-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn certs(pem_text: &str) -> Vec<CertificateDer<'static>> {
    pem::parse_certificates(pem_text.as_bytes()).expect("generated PEM parses")
}

/// Minimal base64 (standard alphabet, padded) to write PEM in other key formats.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Reads one DER TLV at `der[pos..]`: returns (tag, content range, next position).
fn tlv(der: &[u8], pos: usize) -> (u8, std::ops::Range<usize>, usize) {
    let tag = der[pos];
    let (len, header) = match der[pos + 1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(der[pos + 2]), 3),
        0x82 => (
            usize::from(der[pos + 2]) << 8 | usize::from(der[pos + 3]),
            4,
        ),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    let start = pos + header;
    (tag, start..start + len, start + len)
}

/// The `privateKey` OCTET STRING of a PKCS#8 PrivateKeyInfo (for RSA: RSAPrivateKey, i.e.
/// PKCS#1).
fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    let (_, outer, _) = tlv(pkcs8, 0);
    let (_, _, next) = tlv(pkcs8, outer.start); // version
    let (_, _, next) = tlv(pkcs8, next); // algorithm
    let (tag, key, _) = tlv(pkcs8, next);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    pkcs8[key].to_vec()
}

fn pkcs8_der(key_pem: &str) -> Vec<u8> {
    match pem::parse_private_key(key_pem.as_bytes()).expect("key parses") {
        dtls_crypto::pki_types::PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
        _ => panic!("rcgen writes PKCS#8"),
    }
}

/// A self-signed certificate and key of the given rcgen algorithm.
fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (CertificateDer<'static>, String) {
    let key = if alg == &rcgen::PKCS_RSA_SHA256 {
        rcgen::KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048)
    } else {
        rcgen::KeyPair::generate_for(alg)
    }
    .expect("key generation");
    let params = rcgen::CertificateParams::new(vec!["signer.test".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.der().clone(), key.serialize_pem())
}

#[test]
fn generated_files_load_with_standard_labels() {
    let dir = scratch_dir("files");
    let paths = generate_test_pki(&dir).expect("PKI generation");
    for cert in [
        &paths.ca_cert,
        &paths.server_cert,
        &paths.client_cert,
        &paths.server_rsa_cert,
    ] {
        let text = std::fs::read_to_string(cert).expect("written");
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        assert_eq!(pem::load_certificates(cert).expect("loads").len(), 1);
    }
    for key in [
        &paths.server_key,
        &paths.client_key,
        &paths.server_rsa_key,
        &paths.ca_key,
    ] {
        let text = std::fs::read_to_string(key).expect("written");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    }
    assert_eq!(
        SigningKey::from_pem_file(&paths.server_key)
            .expect("loads")
            .kind(),
        SigningKeyKind::EcdsaP256
    );
    assert_eq!(
        SigningKey::from_pem_file(&paths.server_rsa_key)
            .expect("loads")
            .kind(),
        SigningKeyKind::Rsa
    );
    let verifier = CertificateVerifier::from_pem_file(&paths.ca_cert).expect("CA loads");
    let chain = pem::load_certificates(&paths.server_cert).expect("loads");
    verifier
        .verify_server(&chain, "localhost", now())
        .expect("generated server chain verifies");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn every_key_format_loads() {
    // PKCS#8 for every kind.
    for (alg, kind) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, SigningKeyKind::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, SigningKeyKind::EcdsaP384),
        (&rcgen::PKCS_ED25519, SigningKeyKind::Ed25519),
        (&rcgen::PKCS_RSA_SHA256, SigningKeyKind::Rsa),
    ] {
        let (_, key_pem) = self_signed(alg);
        let key = SigningKey::from_pem_slice(key_pem.as_bytes()).expect("PKCS#8 loads");
        assert_eq!(key.kind(), kind);
        assert_eq!(key.kind().is_ecdsa_family(), kind != SigningKeyKind::Rsa);
    }
    // SEC1 ("EC PRIVATE KEY") for both curves.
    for (alg, signing, kind) in [
        (
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            SigningKeyKind::EcdsaP256,
        ),
        (
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            SigningKeyKind::EcdsaP384,
        ),
    ] {
        let (_, key_pem) = self_signed(alg);
        let pair = EcdsaKeyPair::from_pkcs8(signing, &pkcs8_der(&key_pem)).expect("PKCS#8");
        let sec1 = pair.private_key().as_der().expect("SEC1 export");
        let sec1_pem = to_pem("EC PRIVATE KEY", sec1.as_ref());
        let key = SigningKey::from_pem_slice(sec1_pem.as_bytes()).expect("SEC1 loads");
        assert_eq!(key.kind(), kind);
        assert_eq!(
            key.public_key(),
            aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref()
        );
    }
    // PKCS#1 ("RSA PRIVATE KEY").
    let (cert, key_pem) = self_signed(&rcgen::PKCS_RSA_SHA256);
    let pkcs1_pem = to_pem("RSA PRIVATE KEY", &pkcs8_inner(&pkcs8_der(&key_pem)));
    let key = SigningKey::from_pem_slice(pkcs1_pem.as_bytes()).expect("PKCS#1 loads");
    assert_eq!(key.kind(), SigningKeyKind::Rsa);
    let sig = key
        .sign(SignatureScheme::RsaPkcs1Sha256, b"m")
        .expect("sign");
    verify_signature(SignatureScheme::RsaPkcs1Sha256, &cert, b"m", &sig).expect("verifies");
}

#[test]
fn bad_and_missing_files_give_clear_errors() {
    let dir = scratch_dir("bad");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let missing = dir.join("missing.pem");
    let err = pem::load_certificates(&missing).expect_err("missing file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    match err {
        Error::Pem { path: Some(p), .. } => assert_eq!(p, missing),
        other => panic!("expected a PEM error naming the file, got {other:?}"),
    }
    assert!(matches!(
        SigningKey::from_pem_file(&missing),
        Err(Error::Pem { path: Some(_), .. })
    ));

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").expect("write");
    assert!(matches!(
        pem::load_certificates(&garbage),
        Err(Error::NoCertificates { path: Some(_) })
    ));
    assert!(matches!(
        SigningKey::from_pem_file(&garbage),
        Err(Error::Pem { .. })
    ));
    // A certificate file given as a key, and a key file given as certificates.
    let pki = TestPki::generate().expect("PKI");
    assert!(SigningKey::from_pem_slice(pki.server.cert_pem.as_bytes()).is_err());
    assert!(matches!(
        pem::parse_certificates(pki.server.key_pem.as_bytes()),
        Err(Error::NoCertificates { path: None })
    ));
    // A broken base64 body.
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        pem::parse_certificates(broken.as_bytes()),
        Err(Error::Pem { .. })
    ));
    // A key type this crate does not sign with (P-521).
    let (_, p521) = self_signed(&rcgen::PKCS_ECDSA_P521_SHA512);
    assert!(matches!(
        SigningKey::from_pem_slice(p521.as_bytes()),
        Err(Error::UnsupportedPrivateKey { .. })
    ));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn sign_verify_round_trip_for_every_scheme() {
    let mut covered = Vec::new();
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let (cert, key_pem) = self_signed(alg);
        let key = SigningKey::from_pem_slice(key_pem.as_bytes()).expect("key loads");
        for &code in key.schemes() {
            let msg = b"client_random + server_random + ServerECDHParams";
            let sig = key.sign(code, msg).expect("sign");
            verify_signature(code, &cert, msg, &sig).expect("own signature verifies");
            assert!(matches!(
                verify_signature(code, &cert, b"other message", &sig),
                Err(Error::BadSignature { .. })
            ));
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(verify_signature(code, &cert, msg, &bad).is_err());
            covered.push(code);
        }
        // A scheme of another key type is refused for signing.
        let foreign = if key.kind() == SigningKeyKind::Rsa {
            SignatureScheme::Ed25519
        } else {
            SignatureScheme::RsaPssRsaeSha256
        };
        assert!(matches!(
            key.sign(foreign, b"m"),
            Err(Error::UnsupportedSignatureScheme { .. })
        ));
        assert_eq!(
            key.choose_scheme(&[SignatureScheme::from_u16(0x0201), foreign]),
            None
        );
        assert_eq!(
            key.choose_scheme(&[foreign, key.schemes()[0]]),
            Some(key.schemes()[0])
        );
    }
    covered.sort_unstable_by_key(|s| s.to_u16());
    let mut all = SignatureScheme::SUPPORTED.to_vec();
    all.sort_unstable_by_key(|s| s.to_u16());
    assert_eq!(covered, all, "every scheme exercised");
}

#[test]
fn signature_with_wrong_key_type_fails() {
    let (ec_cert, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, rsa_pem) = self_signed(&rcgen::PKCS_RSA_SHA256);
    let rsa = SigningKey::from_pem_slice(rsa_pem.as_bytes()).expect("key");
    let sig = rsa
        .sign(SignatureScheme::RsaPssRsaeSha256, b"m")
        .expect("sign");
    assert!(matches!(
        verify_signature(SignatureScheme::RsaPssRsaeSha256, &ec_cert, b"m", &sig),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn chain_verification_accepts_the_pki_and_rejects_the_rest() {
    let pki = TestPki::generate().expect("PKI");
    let ca = CertificateVerifier::new(&certs(&pki.ca.cert_pem)).expect("CA");
    let server = certs(&pki.server.cert_pem);
    let client = certs(&pki.client.cert_pem);

    ca.verify_server(&server, "localhost", now())
        .expect("DNS name");
    ca.verify_server(&server, "127.0.0.1", now())
        .expect("IP address");
    ca.verify_server(&certs(&pki.server_rsa.cert_pem), "localhost", now())
        .expect("RSA server");
    ca.verify_client(&client, now()).expect("client");

    assert!(matches!(
        ca.verify_server(&server, "example.com", now()),
        Err(Error::InvalidCertificate { .. })
    ));
    assert!(matches!(
        ca.verify_server(&server, "127.0.0.2", now()),
        Err(Error::InvalidCertificate { .. })
    ));
    assert!(matches!(
        ca.verify_server(&server, "not a name!", now()),
        Err(Error::InvalidServerName { .. })
    ));
    // Wrong purpose: a client certificate is no server certificate and vice versa.
    assert!(ca.verify_server(&client, "client.test", now()).is_err());
    assert!(ca.verify_client(&server, now()).is_err());
    // Not yet valid (rcgen's default validity starts in 1975).
    assert!(matches!(
        ca.verify_server(
            &server,
            "localhost",
            UnixTime::since_unix_epoch(Default::default())
        ),
        Err(Error::InvalidCertificate {
            source: webpki::Error::CertNotValidYet { .. }
        })
    ));
    // An untrusted CA (same subject name, other key: the issuer signature fails).
    let other = TestPki::generate().expect("PKI");
    let other_ca = CertificateVerifier::new(&certs(&other.ca.cert_pem)).expect("CA");
    assert!(matches!(
        other_ca.verify_server(&server, "localhost", now()),
        Err(Error::InvalidCertificate { .. })
    ));
    assert!(other_ca.verify_client(&client, now()).is_err());
    // Empty chains and no anchors.
    assert!(matches!(
        ca.verify_client(&[], now()),
        Err(Error::EmptyCertificateChain)
    ));
    assert!(matches!(
        CertificateVerifier::new(&[]),
        Err(Error::NoTrustAnchors)
    ));

    // The policy wrapper.
    let strict = PeerVerifier::WebPki(other_ca);
    assert!(strict.verify_server(&server, "localhost", now()).is_err());
    let insecure = PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly;
    insecure
        .verify_server(&server, "anything", now())
        .expect("insecure mode accepts a parsable certificate");
    insecure
        .verify_client(&client, now())
        .expect("insecure mode");
    assert!(matches!(
        insecure.verify_client(&[], now()),
        Err(Error::EmptyCertificateChain)
    ));
    assert!(
        insecure
            .verify_client(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])], now())
            .is_err()
    );
}

#[test]
fn shared_configuration_types_are_send_and_sync() {
    use std::marker::PhantomData;
    fn send_sync<T: Send + Sync>(_: PhantomData<T>) -> bool {
        true
    }
    assert!(send_sync(PhantomData::<SigningKey>));
    assert!(send_sync(PhantomData::<CertificateVerifier>));
    assert!(send_sync(PhantomData::<PeerVerifier>));
    assert!(send_sync(PhantomData::<dtls_crypto::TicketKeys>));
    assert!(send_sync(PhantomData::<dtls_crypto::CookieKeys>));
    assert!(send_sync(PhantomData::<dtls_crypto::MasterSecret>));
}
