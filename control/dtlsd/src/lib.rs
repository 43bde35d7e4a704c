//! The `dtlsd` DTLS relay daemon: its configuration model, `certs`, `check-config`, and the
//! `serve` command (in the binary: shard threads, the control thread, signals).
//!
//! What this crate does: the typed configuration of `dtlsd serve` and `dtlsd connect`
//! ([`config`]) loaded from TOML (unknown keys are errors naming the key), command-line
//! flags merged over it, and validation that names every bad key; `dtlsd certs` writes a
//! test PKI ([`certs`]); `dtlsd check-config` validates a file and loads the PEM files it
//! names ([`check`]); the `--metrics` HTTP endpoint ([`metrics`]).
//!
//! What it does not do (yet): `dtlsd connect`, keepalive probes and SIGHUP reload.
//! `docs/dtlsd.md` documents every key and metric.

#![forbid(unsafe_code)]

pub mod certs;
pub mod check;
pub mod config;
pub mod metrics;
