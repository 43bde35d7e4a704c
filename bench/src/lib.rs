//! dtls-bench as a library: benchmarks of the DTLS data plane and their reports.
//!
//! What it does: B0 (record seal/open vs raw aws-lc-rs, [`records`]); the load generator
//! ([`loadgen`]: our own client engine, record layer and batched I/O against an in-process
//! `dtlsd`) behind [`quick`], [`throughput`] (B1/B2, R1), [`latency`] (B3, HdrHistogram
//! `.hgrm`/`.hlog` through [`hist`]), [`handshakes`] (B4), [`flood`] (B5) and [`overload`] (B10); OpenSSL on the
//! same machine ([`peers`], B8); the regression gate ([`compare`]) and suite summary
//! ([`summary`]); the UDP impairment proxy ([`impair`]); host detection ([`host`]) and
//! reports ([`report`]). [`commands`] holds the data-plane subcommands' arguments;
//! [`validity`] what an invalid run does to the exit code.
//!
//! What it does not do: pass/fail on wall time. Figures are reported with a ratio to a
//! baseline measured in the same run.
#![forbid(unsafe_code)]

pub mod commands;
pub mod compare;
pub mod flood;
pub mod handshakes;
pub mod hiccup;
pub mod hist;
pub mod host;
pub mod impair;
pub mod latency;
pub mod loadgen;
pub mod overload;
pub mod peers;
pub mod quick;
pub mod records;
pub mod report;
pub mod summary;
pub mod throughput;
pub mod validity;
