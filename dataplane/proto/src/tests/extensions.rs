//! Extension block parsing rules.

use super::samples::{extensions_client, server_hello};
use crate::*;

/// Builds an extension block from (type, data) pairs.
fn block(exts: &[(u16, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (t, d) in exts {
        list.extend_from_slice(&t.to_be_bytes());
        list.extend_from_slice(&(d.len() as u16).to_be_bytes());
        list.extend_from_slice(d);
    }
    let mut out = (list.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&list);
    out
}

#[test]
fn client_extensions_round_trip() {
    let ext = extensions_client();
    let mut out = Vec::new();
    ext.emit(&mut out).expect("encodable");
    assert_eq!(Extensions::parse(&out), Ok(ext));
}

#[test]
fn duplicate_extensions_are_rejected() {
    // RFC 5246 §7.4.1.4: no two extensions of the same type, known or unknown.
    let dup_known = block(&[(23, &[]), (10, &[0, 2, 0, 29]), (23, &[])]);
    assert_eq!(
        Extensions::parse(&dup_known),
        Err(WireError::DuplicateExtension { ext_type: 23 })
    );
    let dup_unknown = block(&[(0x7777, &[1]), (0x7777, &[2])]);
    let err = Extensions::parse(&dup_unknown).expect_err("duplicate unknown");
    assert_eq!(err.alert(), AlertDescription::IllegalParameter);
    // Emitting a typed extension twice (once raw) is refused too.
    let mut ext = Extensions {
        extended_master_secret: true,
        ..Extensions::default()
    };
    ext.other.push(RawExtension {
        ext_type: ExtensionType::ExtendedMasterSecret,
        data: vec![],
    });
    assert_eq!(
        ext.emit(&mut Vec::new()),
        Err(WireError::DuplicateExtension { ext_type: 23 })
    );
}

#[test]
fn extension_content_rules() {
    let alert = |b: Vec<u8>| Extensions::parse(&b).map(|_| ()).map_err(|e| e.alert());
    use AlertDescription::{DecodeError, IllegalParameter};
    // EMS must be empty (RFC 7627 §5.1).
    assert_eq!(alert(block(&[(23, &[0])])), Err(DecodeError));
    // Unknown heartbeat mode: illegal_parameter (RFC 6520 §2).
    assert_eq!(alert(block(&[(15, &[3])])), Err(IllegalParameter));
    assert_eq!(alert(block(&[(15, &[])])), Err(DecodeError));
    // ec_point_formats without uncompressed (RFC 8422 §5.1.2).
    assert_eq!(alert(block(&[(11, &[1, 1])])), Err(IllegalParameter));
    assert_eq!(alert(block(&[(11, &[0])])), Err(DecodeError));
    // ALPN: empty protocol name, empty list.
    assert_eq!(alert(block(&[(16, &[0, 1, 0])])), Err(DecodeError));
    assert_eq!(alert(block(&[(16, &[0, 0])])), Err(DecodeError));
    // supported_groups with odd length; with a lying inner length.
    assert_eq!(alert(block(&[(10, &[0, 3, 0, 29, 0])])), Err(DecodeError));
    assert_eq!(alert(block(&[(10, &[0, 9, 0, 29])])), Err(DecodeError));
    // renegotiation_info with trailing bytes.
    assert_eq!(alert(block(&[(0xff01, &[0, 1])])), Err(DecodeError));
    // use_srtp: profiles then MKI must fill the data exactly.
    assert_eq!(alert(block(&[(14, &[0, 2, 0, 7])])), Err(DecodeError));
    let ok = Extensions::parse(&block(&[(14, &[0, 2, 0, 7, 1, 9])])).expect("valid");
    assert_eq!(
        ok.use_srtp,
        Some(UseSrtp {
            profiles: vec![SrtpProtectionProfile::AeadAes128Gcm],
            mki: vec![9]
        })
    );
    // server_name: two host_names; NUL in the name; another name type only.
    let two = [0, 8, 0, 0, 1, b'a', 0, 0, 1, b'b'];
    assert_eq!(alert(block(&[(0, &two)])), Err(IllegalParameter));
    let nul = [0, 4, 0, 0, 1, 0];
    assert_eq!(alert(block(&[(0, &nul)])), Err(IllegalParameter));
    let other = Extensions::parse(&block(&[(0, &[0, 4, 7, 0, 1, b'x'])])).expect("valid");
    assert_eq!(other.server_name, Some(ServerName::OtherTypesOnly));
    // Outer block length lies.
    assert_eq!(alert(vec![0, 10, 0, 23, 0, 0]), Err(DecodeError));
    // Unknown extensions are kept in order.
    let kept = Extensions::parse(&block(&[(0x9999, &[1, 2]), (22, &[])])).expect("valid");
    assert_eq!(
        kept.other
            .iter()
            .map(|e| e.ext_type.to_u16())
            .collect::<Vec<_>>(),
        [0x9999, 22]
    );
    assert_eq!(
        kept.present_types(),
        [
            ExtensionType::Unknown(0x9999),
            ExtensionType::EncryptThenMac
        ]
    );
}

#[test]
fn server_hello_extension_rules() {
    assert_eq!(server_hello().extensions.check_server_hello(), Ok(()));
    let mut ext = server_hello().extensions;
    ext.alpn = Some(vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(ext.check_server_hello().is_err());
    let mut ext = server_hello().extensions;
    ext.server_name = Some(ServerName::HostName("x".into()));
    assert!(ext.check_server_hello().is_err());
    let mut ext = server_hello().extensions;
    ext.use_srtp = Some(UseSrtp {
        profiles: vec![],
        mki: vec![],
    });
    assert!(ext.check_server_hello().is_err());
    let mut ext = server_hello().extensions;
    ext.session_ticket = Some(vec![1]);
    assert!(ext.check_server_hello().is_err());
}
