//! Shared test support for the `control` integration tests.
//!
//! Each test binary uses a subset of these helpers; the rest is dead code there.
#![allow(dead_code)]

pub mod channel;
pub mod engines;
pub mod fixtures;
pub mod interop;
pub mod pair;
pub mod peers;
pub mod pki;
pub mod udp;
pub mod wire;
