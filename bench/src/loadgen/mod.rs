//! The load generator: DTLS 1.2 client sessions driven by **our own engine** against the
//! `dtlsd` daemon run in-process, with a UDP echo backend behind it.
//!
//! What it does:
//! - [`server`]: starts `dtlsd::serve::Server` on loopback with a generated test PKI and a
//!   UDP echo backend thread (`echo-backend`, batched through `dtls-io`);
//! - [`client`]: real handshakes with `control::Connection::client`, many at once on one
//!   thread (one UDP socket per session: the server keys sessions by peer address), the
//!   offered suite restricted to the chosen cipher;
//! - [`flow`]: the data phase: each session's records sealed and opened with
//!   `dataplane::record::{Sealer, Opener}` straight into and out of `dtls-io` batches
//!   (`TxBatch` with GSO, `RecvBatch` with GRO; mmsg backend on the generator side, one
//!   `UdpIo` per session, readiness through one epoll set); closed loop with a window of
//!   outstanding datagrams per session, or open loop at a fixed aggregate rate with latency
//!   recorded from the intended send time (coordinated omission corrected);
//! - [`cpu`]: CPU per thread from /proc, so that a saturated generator is reported.
//!
//! Every echoed payload is checked byte for byte: it carries the session's sequence number,
//! the (intended) send time, and a pattern derived from the sequence number.
//!
//! What it does not do: retransmit data (a lost datagram is counted, and a session whose
//! window stalls is reopened), or run a handshake of its own outside `control`.

pub mod client;
pub mod cpu;
pub mod flow;
mod protection;
pub mod run;
pub mod server;
pub mod threads;

use clap::ValueEnum;
use control::CipherSuite;

/// Record protection of a benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum CipherChoice {
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
    #[value(name = "aes128gcm")]
    Aes128Gcm,
    /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384.
    #[value(name = "aes256gcm")]
    Aes256Gcm,
    /// TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256.
    #[value(name = "chacha20")]
    Chacha20,
    /// The plaintext baseline: a real AES-128-GCM handshake, then null record protection
    /// (`RecordKey::null_baseline()`) both ways on both sides.
    #[value(name = "none")]
    None,
}

impl CipherChoice {
    /// The suite the client offers (only that one).
    pub fn suite(self) -> CipherSuite {
        match self {
            CipherChoice::Aes128Gcm | CipherChoice::None => CipherSuite::EcdheEcdsaAes128GcmSha256,
            CipherChoice::Aes256Gcm => CipherSuite::EcdheEcdsaAes256GcmSha384,
            CipherChoice::Chacha20 => CipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
        }
    }

    /// The DTLS 1.3 suite of the same AEAD; `None` for `none` (DTLS 1.3 has no null
    /// protection).
    pub fn suite13(self) -> Option<CipherSuite> {
        match self {
            CipherChoice::Aes128Gcm => Some(CipherSuite::Tls13Aes128GcmSha256),
            CipherChoice::Aes256Gcm => Some(CipherSuite::Tls13Aes256GcmSha384),
            CipherChoice::Chacha20 => Some(CipherSuite::Tls13Chacha20Poly1305Sha256),
            CipherChoice::None => None,
        }
    }

    /// Whether records are sent with null protection.
    pub fn is_null(self) -> bool {
        self == CipherChoice::None
    }

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            CipherChoice::Aes128Gcm => "aes128gcm",
            CipherChoice::Aes256Gcm => "aes256gcm",
            CipherChoice::Chacha20 => "chacha20",
            CipherChoice::None => "none",
        }
    }
}

/// Server-side datagram I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoChoice {
    /// io_uring, falling back to mmsg.
    Auto,
    /// io_uring.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

impl IoChoice {
    /// The daemon's setting.
    pub fn daemon(self) -> dtlsd::config::IoMode {
        match self {
            IoChoice::Auto => dtlsd::config::IoMode::Auto,
            IoChoice::Uring => dtlsd::config::IoMode::Uring,
            IoChoice::Mmsg => dtlsd::config::IoMode::Mmsg,
        }
    }

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Mmsg => "mmsg",
        }
    }
}

/// On/off switch for flags such as `--gso`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// `true` for `on`.
    pub fn on(self) -> bool {
        self == Switch::On
    }
}

/// Bytes of IPv4 + UDP headers per datagram, for wire rates.
pub const IP_UDP_HEADER: usize = 28;
/// Payload bytes of the generator's header: sequence number and send time.
pub const PAYLOAD_HEADER: usize = 16;
/// Smallest payload size (the header).
pub const MIN_PAYLOAD: usize = PAYLOAD_HEADER;

/// The pattern every payload carries after its header, shifted by the sequence number:
/// `pattern[seq % 251..][..len]`.
#[derive(Debug, Clone)]
pub struct Pattern(Vec<u8>);

impl Pattern {
    /// A pattern for payloads of up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self((0..max_payload + 256).map(|i| (i % 251) as u8).collect())
    }

    /// The body bytes of the payload with sequence number `seq`, `len` bytes.
    pub fn body(&self, seq: u64, len: usize) -> &[u8] {
        let start = (seq % 251) as usize;
        self.0.get(start..start + len).unwrap_or(&[])
    }

    /// Writes a payload of `out.len()` bytes into `out`: seq, time, pattern. Leaves `out`
    /// alone when it is shorter than the header or longer than the pattern allows.
    pub fn write(&self, out: &mut [u8], seq: u64, time_ns: u64) {
        let len = out.len();
        if len < PAYLOAD_HEADER {
            return;
        }
        let body = self.body(seq, len - PAYLOAD_HEADER);
        if body.len() != len - PAYLOAD_HEADER {
            return;
        }
        out[..8].copy_from_slice(&seq.to_le_bytes());
        out[8..16].copy_from_slice(&time_ns.to_le_bytes());
        out[16..].copy_from_slice(body);
    }

    /// Checks a payload of the expected length: returns its (seq, time) when every byte
    /// matches.
    pub fn check(&self, payload: &[u8], expected_len: usize) -> Option<(u64, u64)> {
        if payload.len() != expected_len || expected_len < PAYLOAD_HEADER {
            return None;
        }
        let seq = u64::from_le_bytes(payload[..8].try_into().ok()?);
        let time = u64::from_le_bytes(payload[8..16].try_into().ok()?);
        (payload[16..] == *self.body(seq, expected_len - PAYLOAD_HEADER)).then_some((seq, time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_round_trip_and_corruption() {
        let p = Pattern::new(1400);
        let mut buf = vec![0u8; 1200];
        p.write(&mut buf, 77, 123_456);
        assert_eq!(p.check(&buf, 1200), Some((77, 123_456)));
        buf[900] ^= 1;
        assert_eq!(p.check(&buf, 1200), None);
        assert_eq!(p.check(&buf[..1100], 1200), None);
    }
}
