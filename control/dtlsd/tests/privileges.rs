//! `--user`/`--group`: the daemon binds and reads as root, then every thread runs as the
//! user, and sessions still work.

mod common;

use common::{Client, Daemon, EchoBackend, TempDir, certs};

/// The ids on `field` (`Uid:` or `Gid:`) of a /proc status file: real, effective, saved, fs.
fn ids(status_path: &str, field: &str) -> Vec<u32> {
    std::fs::read_to_string(status_path)
        .unwrap_or_else(|e| panic!("{status_path}: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status_path}"))
        .split_whitespace()
        .map(|n| n.parse().expect("an id"))
        .collect()
}

#[test]
fn serve_drops_to_the_user_after_binding_and_still_relays() {
    let pki = TempDir::new("privileges");
    certs(&pki);
    if !nix::unistd::geteuid().is_root() {
        // Unprivileged: --user is refused with a clear reason before anything starts.
        let out = std::process::Command::new(common::DTLSD)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "127.0.0.1:9",
            ])
            .args([
                "--psk",
                "a:00ff",
                "--user",
                "nobody",
                "--admin-socket",
                "off",
            ])
            .output()
            .expect("run dtlsd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("needs dtlsd to start as root"), "{stderr}");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user lookup")
        .expect("a `nobody` user");
    let nogroup = nix::unistd::Group::from_gid(nobody.gid)
        .expect("group lookup")
        .expect("nobody's group");
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(
        backend.addr,
        &pki,
        // A port below 1024 would work too: bound before the drop. The admin socket's
        // directory stays root's, so it is off here.
        &["--user", "nobody", "--shards", "2", "--admin-socket", "off"],
    );
    // "listening" is logged before the drop: wait for the drop's own line.
    common::wait_until(
        "the privilege drop",
        || serve.log(),
        || serve.log().contains("dropped privileges"),
    );
    let (uid, gid) = (nobody.uid.as_raw(), nogroup.gid.as_raw());
    let pid = serve.pid();
    // Every thread (shards, control, metrics) changed, not only the main one.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .map(|t| t.expect("task").path().join("status"))
        .collect();
    assert!(tasks.len() > 2, "{tasks:?}");
    for status in tasks {
        let status = status.to_str().expect("utf-8");
        assert_eq!(ids(status, "Uid:"), vec![uid; 4], "{status}");
        assert_eq!(ids(status, "Gid:"), vec![gid; 4], "{status}");
    }
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let groups = groups
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .expect("Groups:");
    assert_eq!(groups.trim(), gid.to_string());
    assert!(
        serve.log().contains("dropped privileges"),
        "{}",
        serve.log()
    );
    let mut client = Client::connect(Client::config(&pki), serve.listen);
    client.echo(b"relayed by nobody");
}

#[test]
fn an_unknown_user_is_named_by_its_key() {
    let out = std::process::Command::new(common::DTLSD)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
        ])
        .args(["--psk", "a:00ff", "--user", "no-such-user-dtlsd"])
        .output()
        .expect("run dtlsd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serve.user: no user `no-such-user-dtlsd` on this system"),
        "{stderr}"
    );
}
