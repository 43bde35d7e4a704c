//! The `dtlsd` DTLS relay daemon, first slice: its configuration model and the commands
//! that need no data plane.
//!
//! What this crate does: the typed configuration of `dtlsd serve` and `dtlsd connect`
//! ([`config`]) loaded from TOML (unknown keys are errors naming the key), command-line
//! flags merged over it, and validation that names every bad key; `dtlsd certs` writes a
//! test PKI ([`certs`]); `dtlsd check-config` validates a file and loads the PEM files it
//! names ([`check`]).
//!
//! What it does not do (yet): run `serve` or `connect` — no sockets, shards, metrics
//! endpoint or signal handling live here. `docs/dtlsd.md` documents every key.

#![forbid(unsafe_code)]

pub mod certs;
pub mod check;
pub mod config;
