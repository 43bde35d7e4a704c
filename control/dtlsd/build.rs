//! Records the git commit the binary is built from, for `dtlsd_build_info` and
//! `dtlsd --version` readers: `DTLSD_GIT_COMMIT` (the environment's value when set, as a
//! packaging build from a tarball may do; else `git rev-parse`; else `unknown`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DTLSD_GIT_COMMIT");
    let commit = std::env::var("DTLSD_GIT_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|c| !c.is_empty())
    });
    // Rebuild when HEAD moves (a commit, a checkout).
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
    println!(
        "cargo:rustc-env=DTLSD_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
