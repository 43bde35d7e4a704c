//! The daemon's per-peer log lines: one per handshake failure or refusal, one per session
//! established and one per session closed; never one per packet.
//!
//! Lines go through `tracing` under the target `dtlsd::session` with stable field names, so
//! both the human and the JSON format carry them and a fail2ban filter can match
//! `handshake failed peer=<HOST>:`. Handshake failures and refusals come from peers that
//! have not authenticated, so they are rate-limited: at most [`PER_SOURCE`] lines per source
//! address and [`GLOBAL`] lines in all per one-second window; the excess is counted
//! (`dtlsd_log_lines_suppressed_total`) and summarised in one line at the end of the window.
//! Session lines are not limited: each needs a completed, authenticated handshake.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use control::PeerIdentity;
use dtls_runtime::{
    Closed, ControlCounters, Established, HandshakeFailure, Peer, Refusal, SessionLog,
};

/// Failure lines per source address per window.
pub const PER_SOURCE: u32 = 5;
/// Failure lines in all per window.
pub const GLOBAL: u32 = 100;
/// The rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Sources tracked per window; past it every new source counts as suppressed.
const MAX_SOURCES: usize = 4096;

/// Counts lines per window, globally and per source address.
#[derive(Debug)]
pub struct RateLimiter {
    window_start: Option<Instant>,
    global: u32,
    /// Lines asked for per source this window, and whether one was suppressed.
    sources: HashMap<IpAddr, (u32, bool)>,
    suppressed: u64,
    suppressed_sources: usize,
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self {
            window_start: None,
            global: 0,
            sources: HashMap::new(),
            suppressed: 0,
            suppressed_sources: 0,
        }
    }

    /// Whether a line about `source` may be written at `now`.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        let known = self.sources.len() < MAX_SOURCES || self.sources.contains_key(&source);
        if !known {
            // Too many sources this window to tell apart: each line counts on its own.
            self.suppressed += 1;
            self.suppressed_sources += 1;
            return false;
        }
        let (count, suppressed) = self.sources.entry(source).or_default();
        *count += 1;
        if *count <= PER_SOURCE && self.global < GLOBAL {
            self.global += 1;
            return true;
        }
        if !*suppressed {
            *suppressed = true;
            self.suppressed_sources += 1;
        }
        self.suppressed += 1;
        false
    }

    /// Ends the window when it is over: returns `(lines suppressed, sources)` when any were.
    pub fn roll(&mut self, now: Instant) -> Option<(u64, usize)> {
        let start = self.window_start?;
        if now.saturating_duration_since(start) < WINDOW {
            return None;
        }
        let summary = (self.suppressed > 0).then_some((self.suppressed, self.suppressed_sources));
        self.window_start = None;
        self.global = 0;
        self.sources.clear();
        if self.sources.capacity() > MAX_SOURCES {
            self.sources.shrink_to(MAX_SOURCES);
        }
        self.suppressed = 0;
        self.suppressed_sources = 0;
        summary
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The daemon's [`SessionLog`].
pub struct DaemonLog {
    limiter: RateLimiter,
    counters: Arc<ControlCounters>,
}

impl std::fmt::Debug for DaemonLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonLog").finish_non_exhaustive()
    }
}

impl DaemonLog {
    /// A log counting suppressed lines in `counters`.
    pub fn new(counters: Arc<ControlCounters>) -> Self {
        Self {
            limiter: RateLimiter::new(),
            counters,
        }
    }

    fn allow(&mut self, now: Instant, peer: SocketAddr) -> bool {
        let allowed = self.limiter.allow(now, peer.ip());
        if !allowed {
            self.counters.log_lines_suppressed.fetch_add(1, Relaxed);
        }
        allowed
    }
}

/// `server` for connect-mode lines ("-" in serve mode).
fn server(peer: &Peer) -> String {
    peer.server.map_or_else(|| "-".into(), |s| s.to_string())
}

/// Bytes shown as text: printable ASCII as is, the rest as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Who a peer proved to be, for a log line: `psk:IDENTITY`, `cert:SUBJECT [SAN ...]` (the
/// end-entity certificate), or `none`.
pub fn describe_identity(identity: &PeerIdentity) -> String {
    match identity {
        PeerIdentity::None => "none".into(),
        PeerIdentity::Psk(id) => format!("psk:{}", printable(id)),
        PeerIdentity::Certificates(chain) => match chain.first() {
            None => "cert:(empty)".into(),
            Some(der) => describe_certificate(der.as_ref()),
        },
    }
}

fn describe_certificate(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return "cert:(unparsable)".into();
    };
    let mut out = format!("cert:{}", cert.subject());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|a| format!("IP:{}", IpAddr::from(a))),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|a| format!("IP:{}", IpAddr::from(a))),
                    _ => None,
                },
                GeneralName::URI(u) => Some(format!("URI:{u}")),
                GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
                _ => None,
            })
            .collect();
        if !names.is_empty() {
            let _ = write!(out, " [{}]", names.join(", "));
        }
    }
    out
}

impl SessionLog for DaemonLog {
    fn handshake_failed(&mut self, now: Instant, f: &HandshakeFailure<'_>) {
        if !self.allow(now, f.peer.addr) {
            return;
        }
        let alert_sent = f.alert_sent.map(|a| format!("{a:?}"));
        let alert_received = f.alert_received.map(|a| format!("{a:?}"));
        let psk_identity = f.claimed.psk_identity.map(printable);
        tracing::warn!(
            target: "dtlsd::session",
            peer = %f.peer.addr,
            server = %server(&f.peer),
            version = %f.version,
            reason = %f.error,
            alert_sent = %alert_sent.as_deref().unwrap_or("-"),
            alert_received = %alert_received.as_deref().unwrap_or("-"),
            sni = %f.claimed.server_name.unwrap_or("-"),
            psk_identity = %psk_identity.as_deref().unwrap_or("-"),
            "handshake failed"
        );
    }

    fn handshake_refused(&mut self, now: Instant, peer: Peer, refusal: Refusal, alert: bool) {
        if !self.allow(now, peer.addr) {
            return;
        }
        tracing::warn!(
            target: "dtlsd::session",
            peer = %peer.addr,
            server = %server(&peer),
            reason = %refusal.as_str(),
            alert_sent = %if alert { "InternalError" } else { "-" },
            "handshake refused"
        );
    }

    fn renegotiation_refused(
        &mut self,
        now: Instant,
        peer: Peer,
        version: &'static str,
        alert_sent: bool,
    ) {
        if !self.allow(now, peer.addr) {
            return;
        }
        tracing::warn!(
            target: "dtlsd::session",
            peer = %peer.addr,
            server = %server(&peer),
            version = %version,
            alert_sent = %if alert_sent { "NoRenegotiation" } else { "-" },
            "renegotiation refused; the session goes on"
        );
    }

    fn handshake_shed(&mut self, _now: Instant, peer: Peer) {
        tracing::debug!(
            target: "dtlsd::session",
            peer = %peer.addr,
            "half-open handshake shed for a newer one"
        );
    }

    fn session_established(&mut self, _now: Instant, s: &Established<'_>) {
        tracing::info!(
            target: "dtlsd::session",
            peer = %s.peer.addr,
            server = %server(&s.peer),
            version = %s.version,
            suite = ?s.suite,
            identity = %describe_identity(s.identity),
            resumed = s.resumed,
            shard = s.shard,
            handshake_ms = s.handshake_time.as_millis() as u64,
            "session established"
        );
    }

    fn session_closed(&mut self, _now: Instant, s: &Closed<'_>) {
        let reason = match s.reason {
            dtls_shard::CloseReason::FatalAlert { description } => {
                format!("fatal_alert({description})")
            }
            dtls_shard::CloseReason::Rejected(e) => format!("install_refused({e})"),
            other => other.as_str().to_owned(),
        };
        tracing::info!(
            target: "dtlsd::session",
            peer = %s.peer.addr,
            server = %server(&s.peer),
            reason = %reason,
            duration_s = s.duration.map_or(0.0, |d| d.as_secs_f64()),
            identity = %s.identity.map_or_else(|| "-".into(), describe_identity),
            records_in = s.stats.records_opened,
            records_out = s.stats.records_sealed,
            bytes_in = s.stats.plaintext_in,
            bytes_out = s.stats.plaintext_out,
            "session closed"
        );
    }

    fn tick(&mut self, now: Instant) {
        if let Some((lines, sources)) = self.limiter.roll(now) {
            tracing::warn!(
                target: "dtlsd::session",
                suppressed = lines,
                sources,
                "handshake failure lines suppressed in the last second (rate limit)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_per_source_and_global_with_a_summary() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new();
        let noisy: IpAddr = "10.0.0.1".parse().expect("literal");
        let allowed = (0..50).filter(|_| r.allow(t0, noisy)).count();
        assert_eq!(allowed, PER_SOURCE as usize);
        let others = (0..200u8)
            .map(|i| IpAddr::from([10, 1, 0, i]))
            .filter(|ip| r.allow(t0, *ip))
            .count();
        assert_eq!(others, (GLOBAL - PER_SOURCE) as usize);
        assert_eq!(r.roll(t0 + Duration::from_millis(500)), None, "window open");
        let (lines, sources) = r.roll(t0 + WINDOW).expect("summary");
        assert_eq!(lines, 45 + 200 - 95);
        assert_eq!(sources, 1 + 105);
        // A new window starts clean.
        assert!(r.allow(t0 + WINDOW, noisy));
        assert_eq!(r.roll(t0 + WINDOW * 2), None);
    }

    #[test]
    fn identities_read_well_and_escape_control_bytes() {
        assert_eq!(describe_identity(&PeerIdentity::None), "none");
        assert_eq!(
            describe_identity(&PeerIdentity::Psk(b"client\n\"1\"".to_vec())),
            "psk:client\\x0a\\x221\\x22"
        );
        let pki = dtls_crypto::test_pki::TestPki::generate().expect("test PKI");
        let chain =
            dtls_crypto::pem::parse_certificates(pki.server.cert_pem.as_bytes()).expect("PEM");
        let described = describe_identity(&PeerIdentity::Certificates(chain));
        assert!(described.starts_with("cert:"), "{described}");
        assert!(described.contains("DNS:localhost"), "{described}");
        assert!(described.contains("IP:127.0.0.1"), "{described}");
    }
}
