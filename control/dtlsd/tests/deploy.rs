//! What ships beside the daemon (control/dtlsd/deploy/): the systemd units pass
//! `systemd-analyze verify` with no warning and keep the settings the daemon relies on, and
//! the shipped configurations pass `dtlsd check-config` once their PEM files exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{DTLSD, TempDir};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// `key=value` lines of a unit file, in order (comments and section headers left out).
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn value<'a>(entries: &'a [(String, String)], key: &str) -> &'a str {
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// A TOML file's `drain_timeout` in seconds (0 when absent).
fn drain_timeout(config: &Path) -> u64 {
    let text = std::fs::read_to_string(config).expect("read config");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("drain_timeout = "))
        .map_or(0, |v| v.trim().parse().expect("an integer"))
}

#[test]
fn the_units_verify_cleanly_and_keep_what_the_daemon_relies_on() {
    let scratch = TempDir::new("deploy-units");
    for (mode, config) in [("serve", "serve.toml"), ("connect", "connect.toml")] {
        let name = format!("dtlsd-{mode}@.service");
        let text = std::fs::read_to_string(deploy(&name)).expect("read unit");
        let e = unit_entries(&text);
        // sd_notify: the daemon sends READY/RELOADING/STOPPING and watchdog pings.
        assert_eq!(value(&e, "Type"), "notify", "{name}");
        assert!(value(&e, "WatchdogSec").parse::<u64>().is_ok(), "{name}");
        assert_eq!(value(&e, "ExecReload"), "/bin/kill -HUP $MAINPID", "{name}");
        let exec = value(&e, "ExecStart");
        assert!(
            exec.starts_with(&format!(
                "/usr/bin/dtlsd {mode} --config /etc/dtlsd/%i.toml"
            )),
            "{name}: {exec}"
        );
        // The admin socket lives in the runtime directory the unit creates (mode 0700).
        assert!(
            exec.contains("--admin-socket /run/dtlsd/"),
            "{name}: {exec}"
        );
        assert_eq!(value(&e, "RuntimeDirectory"), "dtlsd", "{name}");
        assert_eq!(value(&e, "RuntimeDirectoryMode"), "0700", "{name}");
        // Stopping waits out the shipped configuration's drain window.
        let stop: u64 = value(&e, "TimeoutStopSec").parse().expect("seconds");
        assert!(stop > drain_timeout(&deploy(config)), "{name}");
        // Unprivileged and confined.
        assert_eq!(value(&e, "User"), "dtlsd", "{name}");
        assert_eq!(value(&e, "NoNewPrivileges"), "yes", "{name}");
        assert_eq!(value(&e, "ProtectSystem"), "strict", "{name}");
        assert_eq!(value(&e, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
        // io_uring, the default backend, is outside @system-service.
        let filter = value(&e, "SystemCallFilter");
        for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert!(filter.split(' ').any(|c| c == call), "{name}: {filter}");
        }
        // systemd's own check, with the binary this build made in place of /usr/bin/dtlsd.
        let unit = scratch.path().join(&name);
        std::fs::write(&unit, text.replace("/usr/bin/dtlsd", DTLSD)).expect("write unit");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(scratch.path().join(format!("dtlsd-{mode}@test.service")))
            .output()
            .expect("systemd-analyze (scripts/test.sh installs it: apt-get install systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: systemd-analyze verify:\n{stderr}"
        );
    }
}

/// The optional socket unit: a datagram socket with SO_REUSEPORT (the daemon's other shards
/// bind beside it) on the shipped configuration's listen address, that systemd accepts.
#[test]
fn the_socket_unit_verifies_and_matches_the_shipped_listen_address() {
    let scratch = TempDir::new("deploy-socket");
    let text = std::fs::read_to_string(deploy("dtlsd-serve@.socket")).expect("read unit");
    let e = unit_entries(&text);
    assert_eq!(value(&e, "ReusePort"), "yes");
    let config = std::fs::read_to_string(deploy("serve.toml")).expect("read config");
    let listen = value(&e, "ListenDatagram");
    assert!(
        config.contains(&format!("listen = \"{listen}\"")),
        "{listen} is not serve.toml's listen"
    );
    let service = std::fs::read_to_string(deploy("dtlsd-serve@.service")).expect("read unit");
    std::fs::write(
        scratch.path().join("dtlsd-serve@.service"),
        service.replace("/usr/bin/dtlsd", DTLSD),
    )
    .expect("write unit");
    std::fs::write(scratch.path().join("dtlsd-serve@.socket"), &text).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(scratch.path().join("dtlsd-serve@test.socket"))
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn the_shipped_configurations_check_once_their_pem_files_exist() {
    let etc = TempDir::new("deploy-etc");
    for config in ["serve.toml", "connect.toml"] {
        std::fs::copy(deploy(config), etc.path().join(config)).expect("copy config");
    }
    // Without the PEM files, check-config names the missing file and exits 2.
    let out = Command::new(DTLSD)
        .arg("check-config")
        .arg(etc.path().join("serve.toml"))
        .output()
        .expect("run dtlsd");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the test PKI beside them (relative paths are relative to the file), both pass.
    common::certs(&etc);
    for (config, kind) in [("serve.toml", "serve"), ("connect.toml", "connect")] {
        let out = Command::new(DTLSD)
            .arg("check-config")
            .arg(etc.path().join(config))
            .output()
            .expect("run dtlsd");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("ok ({kind} config)")),
            "{config}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
