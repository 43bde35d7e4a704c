//! What machine a benchmark ran on: CPU model, core count, kernel, the CPU features that
//! decide which AEAD code path aws-lc takes.

use std::fs;

/// Host facts recorded next to every result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Kernel release (/proc/sys/kernel/osrelease).
    pub kernel: String,
    /// AES-NI present (`aes` flag).
    pub aes_ni: bool,
    /// Carry-less multiply present (`pclmulqdq`), used by GHASH.
    pub pclmulqdq: bool,
    /// Vector AES present (`vaes`).
    pub vaes: bool,
    /// Vector carry-less multiply present (`vpclmulqdq`).
    pub vpclmulqdq: bool,
    /// AVX2 present.
    pub avx2: bool,
    /// AVX-512F present.
    pub avx512f: bool,
    /// ARMv8 AES extension present (`aes` in `Features` on aarch64).
    pub arm_aes: bool,
}

impl HostInfo {
    /// The `host` object of every result document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "kernel": self.kernel,
            "aead_impl": self.aead_impl(),
            "flags": {
                "aes_ni": self.aes_ni,
                "pclmulqdq": self.pclmulqdq,
                "vaes": self.vaes,
                "vpclmulqdq": self.vpclmulqdq,
                "avx2": self.avx2,
                "avx512f": self.avx512f,
                "arm_aes": self.arm_aes,
            },
        })
    }

    /// Reads /proc; fields it cannot read stay empty or false.
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(&cpuinfo)
    }

    /// Parses /proc/cpuinfo text (first CPU's entries).
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let cpu = field("model name")
            .or_else(|| field("CPU part").map(|p| format!("CPU part {p}")))
            .unwrap_or_else(|| "unknown".into());
        let flags = field("flags").unwrap_or_default();
        let arm_features = field("Features").unwrap_or_default();
        let has = |set: &str, f: &str| set.split_whitespace().any(|x| x == f);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            aes_ni: has(&flags, "aes"),
            pclmulqdq: has(&flags, "pclmulqdq"),
            vaes: has(&flags, "vaes"),
            vpclmulqdq: has(&flags, "vpclmulqdq"),
            avx2: has(&flags, "avx2"),
            avx512f: has(&flags, "avx512f"),
            arm_aes: has(&arm_features, "aes"),
        }
    }

    /// Best guess at the AES-GCM code path aws-lc selects from these flags.
    pub fn aead_impl(&self) -> &'static str {
        if self.vaes && self.vpclmulqdq && self.avx512f {
            "aws-lc AES-GCM VAES/VPCLMULQDQ AVX-512"
        } else if self.vaes && self.vpclmulqdq && self.avx2 {
            "aws-lc AES-GCM VAES/VPCLMULQDQ AVX2"
        } else if self.aes_ni && self.pclmulqdq {
            "aws-lc AES-GCM AES-NI/PCLMULQDQ"
        } else if self.arm_aes {
            "aws-lc AES-GCM ARMv8 crypto extensions"
        } else {
            "aws-lc AES-GCM constant-time software"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_x86_flags() {
        let text = "processor\t: 0\nmodel name\t: Test CPU @ 3GHz\nflags\t\t: fpu sse2 aes pclmulqdq avx2 vaes vpclmulqdq\n\nprocessor\t: 1\n";
        let h = HostInfo::from_cpuinfo(text);
        assert_eq!(h.cpu, "Test CPU @ 3GHz");
        assert!(h.aes_ni && h.pclmulqdq && h.vaes && h.vpclmulqdq && h.avx2);
        assert!(!h.avx512f);
        assert_eq!(h.aead_impl(), "aws-lc AES-GCM VAES/VPCLMULQDQ AVX2");
        let none = HostInfo::from_cpuinfo("flags : fpu sse2 aesx\n");
        assert!(!none.aes_ni);
        assert_eq!(none.cpu, "unknown");
    }
}
