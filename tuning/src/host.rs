//! What `dtls-tune` reads from a host: files under a root directory (`/` for the machine it
//! runs on, a fixture tree in tests), plus the few things that are not files (`ethtool`'s
//! output, the io_uring probe) taken only on the live root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A host's `/proc` and `/sys` as seen under `root`.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    /// The host whose files are under `root` (`/` for this machine).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the machine `dtls-tune` runs on (root `/`): live probes run only then.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The file at `rel` (relative to the root), trimmed; `None` when it cannot be read.
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The absolute path of `rel` under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Whether `rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Names in directory `rel`, sorted; empty when it cannot be read.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// A sysctl by its dotted name (`net.core.rmem_max` is `proc/sys/net/core/rmem_max`).
    pub fn sysctl(&self, name: &str) -> Option<String> {
        self.read(&sysctl_path(name))
    }

    /// A sysctl holding one unsigned number.
    pub fn sysctl_u64(&self, name: &str) -> Option<u64> {
        self.sysctl(name)?.parse().ok()
    }

    /// `ethtool -i IF` and `ethtool -k IF` as `key: value` pairs (driver, features). On the
    /// live root it runs `ethtool`; under a fixture root it reads `ethtool/IF.txt`, the two
    /// outputs one after the other. `None` when neither is available.
    pub fn ethtool(&self, interface: &str) -> Option<BTreeMap<String, String>> {
        let text = if self.is_live() {
            let mut text = String::new();
            for flag in ["-i", "-k"] {
                let out = Command::new("ethtool")
                    .arg(flag)
                    .arg(interface)
                    .output()
                    .ok()?;
                if out.status.success() {
                    text.push_str(&String::from_utf8_lossy(&out.stdout));
                }
            }
            text
        } else {
            self.read(&format!("ethtool/{interface}.txt"))?
        };
        let map: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        (!map.is_empty()).then_some(map)
    }

    /// Whether a process whose `comm` is `name` runs (scans `proc/PID/comm`).
    pub fn process_running(&self, name: &str) -> bool {
        self.list("proc")
            .iter()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .any(|pid| self.read(&format!("proc/{pid}/comm")).as_deref() == Some(name))
    }

    /// The interface of the IPv4 default route (`proc/net/route`, destination 0).
    pub fn default_route_interface(&self) -> Option<String> {
        let table = self.read("proc/net/route")?;
        table.lines().skip(1).find_map(|line| {
            let mut cols = line.split_whitespace();
            let iface = cols.next()?;
            (cols.next()? == "00000000").then(|| iface.to_owned())
        })
    }

    /// A table of `/proc/net/snmp` (`Udp`, `Ip`, ...): each header name with its value.
    pub fn snmp(&self, table: &str) -> BTreeMap<String, u64> {
        let Some(text) = self.read("proc/net/snmp") else {
            return BTreeMap::new();
        };
        let prefix = format!("{table}:");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
        let [names, values, ..] = rows.as_slice() else {
            return BTreeMap::new();
        };
        names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect()
    }

    /// `proc/net/softnet_stat` summed over CPUs: (processed, dropped, time_squeeze). The
    /// columns are hexadecimal; the first three have meant this since before 2.6.
    pub fn softnet(&self) -> Option<(u64, u64, u64)> {
        let text = self.read("proc/net/softnet_stat")?;
        let mut sum = (0, 0, 0);
        for line in text.lines() {
            let cols: Vec<u64> = line
                .split_whitespace()
                .take(3)
                .filter_map(|c| u64::from_str_radix(c, 16).ok())
                .collect();
            if let [p, d, s] = cols[..] {
                sum = (sum.0 + p, sum.1 + d, sum.2 + s);
            }
        }
        Some(sum)
    }

    /// The soft limit of `Max locked memory` in `proc/self/limits`, bytes; `Some(None)` when
    /// unlimited.
    pub fn memlock_limit(&self) -> Option<Option<u64>> {
        let text = self.read("proc/self/limits")?;
        let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
        let soft = line
            .trim_start_matches("Max locked memory")
            .split_whitespace()
            .next()?;
        if soft == "unlimited" {
            Some(None)
        } else {
            soft.parse().ok().map(Some)
        }
    }

    /// The CPU flags of the first processor in `proc/cpuinfo` (`flags` on x86, `Features`
    /// on arm64).
    pub fn cpu_flags(&self) -> Vec<String> {
        let Some(text) = self.read("proc/cpuinfo") else {
            return Vec::new();
        };
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                matches!(k.trim(), "flags" | "Features").then(|| v.to_owned())
            })
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// The path under the root of sysctl `name`.
pub fn sysctl_path(name: &str) -> String {
    format!("proc/sys/{}", name.replace('.', "/"))
}
