//! Fixture trees and the binary, for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use dtls_tune::Inspection;
use dtls_tune::target::Overrides;

/// `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Inspects fixture `root` with config fixture `config` (if any).
pub fn inspect(root: &str, config: Option<&str>, overrides: &Overrides) -> Inspection {
    let config = config.map(fixture);
    Inspection::new(&fixture(root), config.as_deref(), overrides).expect("fixture inspects")
}

/// Copies a fixture tree into a fresh temporary directory (for tests that write).
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture(name), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readdir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs the `dtls-tune` binary.
pub fn run(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dtls-tune"))
        .args(args)
        .output()
        .expect("dtls-tune runs")
}

/// Fixture paths as strings for command lines.
pub fn arg(name: &str) -> String {
    fixture(name).display().to_string()
}
