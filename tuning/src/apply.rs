//! `dtls-tune apply --yes`: writes the sysctls of `emit --sysctl` that differ from the
//! running values into `proc/sys` under the root, after printing the difference. Nothing
//! else is applied, and nothing without `--yes`; nothing is persisted (install the
//! `emit --sysctl` file for that).

use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};

use crate::emit::Sysctl;
use crate::host::{Host, sysctl_path};

/// The difference between the running and the wanted values, as `-`/`+` lines; empty when
/// nothing changes.
pub fn diff(sysctls: &[Sysctl]) -> String {
    let mut out = String::new();
    for s in sysctls.iter().filter(|s| s.changes()) {
        let _ = writeln!(
            out,
            "-{} = {}\n+{} = {}",
            s.key,
            s.current.as_deref().unwrap_or("(unreadable)"),
            s.key,
            s.wanted
        );
    }
    out
}

/// Writes every changing sysctl; `yes` must be true. Returns how many were written.
///
/// # Errors
/// Without `yes` (nothing is written), or the first write that fails (earlier ones stay).
pub fn apply(host: &Host, sysctls: &[Sysctl], yes: bool) -> Result<usize> {
    let changes: Vec<&Sysctl> = sysctls.iter().filter(|s| s.changes()).collect();
    if changes.is_empty() {
        return Ok(0);
    }
    if !yes {
        bail!("refusing to change {} sysctls without --yes", changes.len());
    }
    for s in &changes {
        let path = host.path(&sysctl_path(s.key));
        std::fs::write(&path, format!("{}\n", s.wanted))
            .with_context(|| format!("writing {} to {}", s.wanted, path.display()))?;
    }
    Ok(changes.len())
}
