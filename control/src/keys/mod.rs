//! Key material produced by the handshake: the master secret holder, the RFC 5705
//! exporter and resumption tickets.

pub(crate) mod exporter;
pub(crate) mod handoff;
pub(crate) mod session;
pub(crate) mod ticket;
