//! The hello extension block: parse, and round-trip whatever parses.
#![no_main]

use dtls_proto::{Extensions, ServerName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parsed in [Extensions::parse(data), Extensions::parse_list(data)] {
        let Ok(ext) = parsed else { continue };
        let _ = ext.check_server_hello();
        let mut out = Vec::new();
        match ext.emit(&mut out) {
            Ok(()) => assert_eq!(Extensions::parse(&out).as_ref(), Ok(&ext)),
            Err(_) => assert_eq!(ext.server_name, Some(ServerName::OtherTypesOnly)),
        }
    }
});
