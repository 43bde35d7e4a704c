//! Helpers of the AF_XDP tests that build network namespaces and run a test binary's roles
//! inside them (`ip netns exec <ns> <this binary> --exact <test>` with a role variable).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Runs `ip ARGS`; the reason when it fails or cannot run.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (namespaces, bpf() and AF_XDP need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// This test binary run again inside namespace `ns` as `test` only, with `role_var` set to
/// `role`; stdout and stderr piped.
pub fn spawn_role(ns: &str, test: &str, role_var: &str, role: &str) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let exe = exe.to_str().expect("utf-8 test binary path");
    Command::new("ip")
        .args(["netns", "exec", ns, exe, "--exact", test, "--nocapture"])
        .env(role_var, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn `ip netns exec`")
}

/// Reads `child`'s stdout up to its `READY` line; returns that line and the rest of the
/// stream. Panics with the child's stderr if it ends first.
pub fn wait_ready(child: &mut Child) -> (String, BufReader<ChildStdout>) {
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut ready = String::new();
    loop {
        ready.clear();
        let n = lines.read_line(&mut ready).expect("read the role's stdout");
        if n == 0 {
            let mut err = String::new();
            let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
            panic!("the AF_XDP side ended before it was ready:\n{err}");
        }
        if ready.starts_with("READY") {
            return (ready, lines);
        }
    }
}
