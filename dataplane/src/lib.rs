//! The DTLS data plane.
//!
//! What it does: DTLS record wire formats, in-place record protection (AES-GCM,
//! ChaCha20-Poly1305), the anti-replay window and per-key limits. Later: the session
//! table, shards and the io_uring / mmsg backends.
//!
//! What it does not do: handshakes. It never parses a ClientHello; records it cannot
//! handle go to the control plane as whole datagrams.
