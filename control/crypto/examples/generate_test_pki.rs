//! Writes a test PKI into the directory given as the only argument:
//! `cargo run -p dtls-crypto --example generate_test_pki -- DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: generate_test_pki DIR");
        return ExitCode::FAILURE;
    };
    match dtls_crypto::test_pki::generate_test_pki(&dir) {
        Ok(paths) => {
            println!("{paths:#?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
