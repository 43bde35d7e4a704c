//! CPU lists in the kernel's list format (`0-3,8,10-11`, cpuset(7)) and the CPU topology
//! under `sys/devices/system`.

use std::collections::BTreeMap;

use crate::host::Host;

/// Parses a kernel CPU list; empty text and `(null)` are the empty list. `None` when a part
/// is not a number or a range.
pub fn parse_list(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() || text == "(null)" {
        return Some(Vec::new());
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// Formats CPUs as a kernel CPU list with ranges (sorted): `[0, 1, 2, 5]` is `0-2,5`.
pub fn format_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Formats CPUs as a hexadecimal mask in the kernel's comma-separated 32-bit groups
/// (`smp_affinity`, `rps_cpus`): `[0, 1, 33]` is `2,00000003`.
pub fn format_mask(cpus: &[usize]) -> String {
    let words = cpus.iter().max().map_or(1, |m| m / 32 + 1);
    let mut groups = vec![0u32; words];
    for &c in cpus {
        groups[c / 32] |= 1 << (c % 32);
    }
    let mut out: Vec<String> = groups.iter().rev().map(|g| format!("{g:08x}")).collect();
    // The kernel prints the leading group without padding.
    if let Some(first) = out.first_mut() {
        *first = format!("{:x}", groups[words - 1]);
    }
    out.join(",")
}

/// Parses a kernel hexadecimal CPU mask (`ff`, `1,00000000`).
pub fn parse_mask(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for (word, group) in text.trim().rsplit(',').enumerate() {
        let bits = u32::from_str_radix(group.trim(), 16).ok()?;
        for bit in 0..32 {
            if bits & (1 << bit) != 0 {
                cpus.push(word * 32 + bit);
            }
        }
    }
    Some(cpus)
}

/// The CPUs of a host and how they relate.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Online CPUs.
    pub online: Vec<usize>,
    /// Each CPU's hyperthread siblings (itself included).
    pub siblings: BTreeMap<usize, Vec<usize>>,
    /// Each CPU's NUMA node (absent: no NUMA information).
    pub node: BTreeMap<usize, usize>,
    /// `isolcpus=` CPUs.
    pub isolated: Vec<usize>,
    /// `nohz_full=` CPUs.
    pub nohz_full: Vec<usize>,
    /// `smt/active`: `Some(true)` when SMT is on.
    pub smt_active: Option<bool>,
}

impl Topology {
    /// Reads the topology under `sys/devices/system`.
    pub fn read(host: &Host) -> Self {
        let list = |rel: &str| {
            host.read(rel)
                .and_then(|t| parse_list(&t))
                .unwrap_or_default()
        };
        let online = list("sys/devices/system/cpu/online");
        let mut siblings = BTreeMap::new();
        for &cpu in &online {
            let s = list(&format!(
                "sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            ));
            siblings.insert(cpu, if s.is_empty() { vec![cpu] } else { s });
        }
        let mut node = BTreeMap::new();
        for name in host.list("sys/devices/system/node") {
            let Some(n) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
                continue;
            };
            for cpu in list(&format!("sys/devices/system/node/{name}/cpulist")) {
                node.insert(cpu, n);
            }
        }
        Self {
            online,
            siblings,
            node,
            isolated: list("sys/devices/system/cpu/isolated"),
            nohz_full: list("sys/devices/system/cpu/nohz_full"),
            smt_active: host
                .read("sys/devices/system/cpu/smt/active")
                .map(|v| v == "1"),
        }
    }

    /// One CPU per physical core (the lowest-numbered sibling), in order.
    pub fn physical_cores(&self) -> Vec<usize> {
        let mut cores: Vec<usize> = self
            .online
            .iter()
            .map(|c| {
                self.siblings
                    .get(c)
                    .and_then(|s| s.iter().min().copied())
                    .unwrap_or(*c)
            })
            .collect();
        cores.sort_unstable();
        cores.dedup();
        cores
    }

    /// The siblings of `cpu` other than itself.
    pub fn other_siblings(&self, cpu: usize) -> Vec<usize> {
        self.siblings
            .get(&cpu)
            .map(|s| s.iter().copied().filter(|&c| c != cpu).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_masks_round_trip() {
        assert_eq!(parse_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(format_list(&[8, 0, 1, 2, 5, 7]), "0-2,5,7-8");
        assert_eq!(parse_list("(null)"), Some(vec![]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), None);
        assert_eq!(format_mask(&[0, 1, 33]), "2,00000003");
        assert_eq!(parse_mask("2,00000003"), Some(vec![0, 1, 33]));
        assert_eq!(format_mask(&[3]), "8");
        assert_eq!(parse_mask("ff"), Some((0..8).collect()));
    }
}
