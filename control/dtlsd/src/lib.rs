//! The `dtlsd` DTLS relay daemon as a library: its configuration model, `serve`
//! ([`serve::Server`]) and `connect` ([`connect::Client`]) over the shared shard/control
//! machinery ([`daemon`]), `certs`, `check-config` and the metrics endpoint. The binary adds
//! the command line, logging and signals; benchmarks and tests start servers in-process.
//!
//! What this crate does: the typed configuration of `dtlsd serve` and `dtlsd connect`
//! ([`config`]) loaded from TOML (unknown keys are errors naming the key), command-line
//! flags merged over it, and validation that names every bad key; `dtlsd certs` writes a
//! test PKI ([`certs`]); `dtlsd check-config` validates a file and loads the PEM files it
//! names ([`check`]), checking each certificate/key pair as start-up and reload do
//! ([`certcheck`]); start-up refuses a listen address another process holds unless told to
//! take it over ([`portprobe`]); the `--metrics` HTTP endpoint ([`metrics`]); the open-files
//! limit checked against the session caps at start ([`descriptors`]); per-peer log lines
//! ([`sessionlog`]); records whose CID names another node forwarded to it ([`forward`]).
//!
//! `docs/dtlsd.md` documents every command, key, signal and metric.

#![forbid(unsafe_code)]

pub mod activation;
pub mod admin;
pub mod certcheck;
pub mod certs;
pub mod check;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod descriptors;
pub mod forward;
pub mod keystore;
pub mod lifecycle;
pub mod metrics;
pub mod portprobe;
pub mod privileges;
pub mod serve;
pub mod sessionlog;
