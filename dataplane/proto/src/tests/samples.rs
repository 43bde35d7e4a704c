//! Realistic sample messages shared by the tests.

use crate::*;

pub(crate) fn extensions_client() -> Extensions {
    Extensions {
        server_name: Some(ServerName::HostName("localhost".into())),
        supported_groups: Some(NamedGroup::SUPPORTED.to_vec()),
        ec_point_formats: Some(vec![EC_POINT_FORMAT_UNCOMPRESSED]),
        signature_algorithms: Some(SignatureScheme::SUPPORTED.to_vec()),
        use_srtp: Some(UseSrtp {
            profiles: vec![
                SrtpProtectionProfile::AeadAes128Gcm,
                SrtpProtectionProfile::Aes128CmHmacSha1_80,
            ],
            mki: vec![],
        }),
        heartbeat: Some(HeartbeatMode::PeerAllowedToSend),
        alpn: Some(vec![b"h2".to_vec(), b"webrtc".to_vec()]),
        extended_master_secret: true,
        session_ticket: Some(vec![]),
        renegotiation_info: Some(vec![]),
        other: vec![RawExtension {
            ext_type: ExtensionType::Padding,
            data: vec![0; 5],
        }],
    }
}

pub(crate) fn client_hello() -> ClientHello {
    ClientHello {
        client_version: ProtocolVersion::Dtls1_2,
        random: [7; 32],
        session_id: vec![1; 32],
        cookie: vec![0xc0; 20],
        cipher_suites: vec![
            CipherSuite::EcdheEcdsaAes128GcmSha256,
            CipherSuite::PskAes128GcmSha256,
            CipherSuite::EmptyRenegotiationInfoScsv,
            CipherSuite::Unknown(0x0a0a),
        ],
        compression_methods: vec![COMPRESSION_NULL],
        extensions: extensions_client(),
    }
}

pub(crate) fn server_hello() -> ServerHello {
    ServerHello {
        server_version: ProtocolVersion::Dtls1_2,
        random: [9; 32],
        session_id: vec![],
        cipher_suite: CipherSuite::EcdheRsaAes256GcmSha384,
        compression_method: 0,
        extensions: Extensions {
            server_name: Some(ServerName::Acknowledged),
            ec_point_formats: Some(vec![0]),
            alpn: Some(vec![b"h2".to_vec()]),
            extended_master_secret: true,
            renegotiation_info: Some(vec![]),
            ..Extensions::default()
        },
    }
}

fn params() -> EcdheParams {
    EcdheParams {
        group: NamedGroup::X25519,
        public: vec![0x42; 32],
    }
}

/// One sample of every message type, with the key exchange needed to parse it.
pub(crate) fn all_messages() -> Vec<(HandshakeMessage, Option<KeyExchange>)> {
    use HandshakeMessage as M;
    vec![
        (M::HelloRequest(HelloRequest), None),
        (M::ClientHello(client_hello()), None),
        (M::ServerHello(server_hello()), None),
        (
            M::HelloVerifyRequest(HelloVerifyRequest {
                server_version: ProtocolVersion::Dtls1_0,
                cookie: vec![0xab; 255],
            }),
            None,
        ),
        (
            M::NewSessionTicket(NewSessionTicket {
                lifetime_hint: 7200,
                ticket: vec![5; 100],
            }),
            None,
        ),
        (
            M::Certificate(Certificate {
                chain: vec![vec![0x30; 300], vec![0x30, 0x82, 1]],
            }),
            None,
        ),
        (
            M::ServerKeyExchange(ServerKeyExchange::Ecdhe {
                params: params(),
                signature: DigitallySigned {
                    scheme: SignatureScheme::EcdsaSecp256r1Sha256,
                    signature: vec![0x30; 71],
                },
            }),
            Some(KeyExchange::EcdheEcdsa),
        ),
        (
            M::ServerKeyExchange(ServerKeyExchange::Psk {
                identity_hint: b"hint".to_vec(),
            }),
            Some(KeyExchange::Psk),
        ),
        (
            M::ServerKeyExchange(ServerKeyExchange::EcdhePsk {
                identity_hint: vec![],
                params: params(),
            }),
            Some(KeyExchange::EcdhePsk),
        ),
        (
            M::CertificateRequest(CertificateRequest {
                certificate_types: vec![
                    ClientCertificateType::EcdsaSign,
                    ClientCertificateType::RsaSign,
                ],
                signature_schemes: SignatureScheme::SUPPORTED.to_vec(),
                certificate_authorities: vec![vec![0x30, 3, 1, 2, 3]],
            }),
            None,
        ),
        (M::ServerHelloDone(ServerHelloDone), None),
        (
            M::CertificateVerify(CertificateVerify {
                signed: DigitallySigned {
                    scheme: SignatureScheme::Ed25519,
                    signature: vec![1; 64],
                },
            }),
            None,
        ),
        (
            M::ClientKeyExchange(ClientKeyExchange::Ecdhe {
                public: vec![4; 65],
            }),
            Some(KeyExchange::EcdheRsa),
        ),
        (
            M::ClientKeyExchange(ClientKeyExchange::Psk {
                identity: b"client1".to_vec(),
            }),
            Some(KeyExchange::Psk),
        ),
        (
            M::ClientKeyExchange(ClientKeyExchange::EcdhePsk {
                identity: b"client1".to_vec(),
                public: vec![9; 32],
            }),
            Some(KeyExchange::EcdhePsk),
        ),
        (
            M::Finished(Finished {
                verify_data: [3; 12],
            }),
            None,
        ),
    ]
}
