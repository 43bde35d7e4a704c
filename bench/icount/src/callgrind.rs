//! Instruction counts from callgrind: this same binary runs one workload under
//! `valgrind --tool=callgrind` twice, with `k1` and `k2` iterations and the same setup, and
//! the per-iteration count is `(I(k2) - I(k1)) / (k2 - k1)`. Process start-up, key setup
//! and pre-sealing cancel out; what is left is deterministic for a given binary, valgrind
//! and CPU feature set (valgrind virtualizes CPUID, so aws-lc picks its code path from what
//! valgrind reports, never AVX-512).
//!
//! The client runs with an empty environment, fixed-width arguments and a fixed-length
//! executable path: its initial stack then has the same layout wherever and by whomever
//! it is run, so stack buffers keep their alignment (memcpy and the AEADs pick code paths
//! by alignment) and the counts stay identical across machines, checkouts and target dirs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::workload::Workload;

/// Length in bytes of the path the client is run under.
pub const CLIENT_PATH_LEN: usize = 200;

/// How to run valgrind.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The valgrind executable.
    pub valgrind: PathBuf,
    /// A symbolic link to this binary (run under valgrind with the `run` subcommand) whose path is always [`CLIENT_PATH_LEN`] bytes long: the
    /// client's initial stack holds its path, so a fixed length keeps the stack layout, and
    /// with it the alignment of stack buffers and the counts, independent of where the
    /// binary was built.
    pub client: PathBuf,
    /// Where callgrind writes its output files (created, removed by [`Runner::cleanup`]).
    pub scratch: PathBuf,
    /// Smaller iteration count.
    pub k1: u64,
    /// Larger iteration count; also the number of records sealed in setup.
    pub k2: u64,
}

impl Runner {
    /// A runner using `valgrind` on the current executable, scratch files in a fresh
    /// directory under the system temp dir.
    pub fn new(valgrind: PathBuf, k1: u64, k2: u64) -> Result<Self> {
        ensure!(k2 > k1, "k2 ({k2}) must exceed k1 ({k1})");
        // Children run with an empty environment, so resolve against PATH here.
        let valgrind = find_in_path(&valgrind).with_context(|| {
            format!("{} not found (is valgrind installed?)", valgrind.display())
        })?;
        let exe = std::env::current_exe().context("locating the dtls-icount executable")?;
        let scratch = std::env::temp_dir().join(format!("dtls-icount-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let dir_len = scratch.as_os_str().len();
        ensure!(
            dir_len + 2 <= CLIENT_PATH_LEN,
            "temporary directory path {} is too long (set TMPDIR)",
            scratch.display()
        );
        let client = scratch.join("x".repeat(CLIENT_PATH_LEN - dir_len - 1));
        std::os::unix::fs::symlink(&exe, &client)
            .with_context(|| format!("linking {}", client.display()))?;
        Ok(Self {
            valgrind,
            client,
            scratch,
            k1,
            k2,
        })
    }

    /// `valgrind --version`, e.g. `valgrind-3.19.0`.
    pub fn valgrind_version(&self) -> Result<String> {
        let out = Command::new(&self.valgrind)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", self.valgrind.display()))?;
        ensure!(out.status.success(), "valgrind --version failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The CPU features this binary sees when it runs under valgrind (what aws-lc's
    /// dispatch sees too).
    pub fn features_under_valgrind(&self) -> Result<String> {
        let out = Command::new(&self.valgrind)
            .env_clear()
            .args(["-q", "--tool=none"])
            .arg(&self.client)
            .arg("features")
            .output()
            .context("running `features` under valgrind")?;
        ensure!(
            out.status.success(),
            "`features` under valgrind failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Instructions of one whole run of `workload` with `iters` iterations.
    fn total(&self, workload: &Workload, iters: u64) -> Result<u64> {
        let out_file = self
            .scratch
            .join(format!("{}-{iters}.out", workload.name()));
        let out = Command::new(&self.valgrind)
            .args(["-q", "--tool=callgrind"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&self.client)
            .args(["run", workload.name()])
            // Fixed width: both runs get arguments of the same length.
            .arg(format!("{iters:020}"))
            .arg("--prepared")
            .arg(self.k2.to_string())
            // The same (empty) environment and working directory wherever this runs.
            .env_clear()
            .current_dir(&self.scratch)
            .output()
            .with_context(|| {
                format!(
                    "running {} (is valgrind installed?)",
                    self.valgrind.display()
                )
            })?;
        if !out.status.success() {
            bail!(
                "{} with {iters} iterations under callgrind failed ({}): {}",
                workload.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = std::fs::read_to_string(&out_file)
            .with_context(|| format!("reading {}", out_file.display()))?;
        // Best effort: the directory is removed at the end anyway.
        let _ = std::fs::remove_file(&out_file);
        parse_total(&text).with_context(|| format!("parsing {}", out_file.display()))
    }

    /// Instructions per iteration of `workload`.
    pub fn per_iteration(&self, workload: &Workload) -> Result<f64> {
        let small = self.total(workload, self.k1)?;
        let large = self.total(workload, self.k2)?;
        ensure!(
            large > small,
            "{}: {} iterations cost no more than {} ({large} <= {small})",
            workload.name(),
            self.k2,
            self.k1
        );
        // Counts stay far below 2^53: exact in f64.
        Ok((large - small) as f64 / (self.k2 - self.k1) as f64)
    }

    /// Removes the scratch directory.
    pub fn cleanup(&self) {
        remove_dir(&self.scratch);
    }
}

/// `program` itself when it names a path, else the first match in `PATH`.
fn find_in_path(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn remove_dir(dir: &Path) {
    // Best effort: a leftover directory in /tmp is harmless.
    let _ = std::fs::remove_dir_all(dir);
}

/// The total `Ir` of a callgrind output file: its `summary:` line, or the `totals:` line
/// that newer valgrind versions write.
pub fn parse_total(text: &str) -> Result<u64> {
    for key in ["summary:", "totals:"] {
        if let Some(line) = text.lines().find(|l| l.starts_with(key)) {
            let first = line[key.len()..]
                .split_whitespace()
                .next()
                .context("empty summary line")?;
            return first
                .parse()
                .with_context(|| format!("bad instruction count {first:?}"));
        }
    }
    bail!("no `summary:` or `totals:` line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_and_totals() {
        let text =
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfn=main\n1 5\nsummary: 123456\n";
        assert_eq!(parse_total(text).expect("parses"), 123_456);
        assert_eq!(parse_total("totals: 42 7\n").expect("parses"), 42);
        assert!(parse_total("events: Ir\n").is_err());
        assert!(parse_total("summary: x\n").is_err());
    }

    #[test]
    fn finds_programs_in_path() {
        let sh = find_in_path(Path::new("sh")).expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.is_file(), "{}", sh.display());
        assert_eq!(find_in_path(&sh), Some(sh.clone()));
        assert_eq!(find_in_path(Path::new("no-such-program-dtls-icount")), None);
        assert_eq!(find_in_path(Path::new("/no/such/valgrind")), None);
    }
}
