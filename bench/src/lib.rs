//! dtls-bench as a library: benchmarks of the DTLS data plane and their reports.
//!
//! What it does: B0 (record seal/open vs raw aws-lc-rs, [`records`]), host detection
//! ([`host`]), text and JSON reports ([`report`]). Later: load generator, scenarios,
//! HdrHistogram output, `compare`, the impairment proxy; `dtls-tune` uses this crate.
//!
//! What it does not do: pass/fail on wall time. Figures are reported with a ratio to a
//! baseline measured in the same run.
#![forbid(unsafe_code)]

pub mod host;
pub mod records;
pub mod report;
