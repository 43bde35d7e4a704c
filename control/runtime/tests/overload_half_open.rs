//! Issue 18, DoS: the half-open variant of `overload.rs`. Handshakes that stall after the
//! cookie, at twice the control plane's capacity, while established sessions carry bulk
//! traffic, through the daemon's path minus its sockets (the sans-IO shard core and the
//! control loop, [`common::daemon`]) on a virtual clock.
//!
//! Each overloaded turn brings twice what the control loop takes from a shard per turn
//! (`RuntimeConfig::inbound_budget`, 256 datagrams): the datagrams of real clients plus
//! ClientHellos from fresh 127.0.0.0/8 sources, each carrying a valid cookie for its
//! source (as a client that got our HelloVerifyRequest sends) and then nothing more: the
//! attacker never sends its second flight. Asserted with counters, not clocks:
//!
//! - shed first: the excess is dropped in the shard's fair stage or shed by control after
//!   the cookie, before any engine exists, each counted; the stage stays within its cap;
//! - established sessions keep every datagram and no session closes;
//! - the half-open handshakes that get in (one per overloaded turn,
//!   `overload_admit_per_turn`) never number more than `limits.max_half_open` (set to
//!   [`MAX_HALF_OPEN`] here: the oldest is shed for a newcomer, counted), and the heap the
//!   process holds above its start stays under [`MAX_HALF_OPEN`] × [`HALF_OPEN_BYTES`]
//!   plus the fair stage's cap;
//! - every stalled handshake ends: shed, or expired at the engine's `max_handshake_time`
//!   (120 s) and counted as a timeout; none is left once that time has passed;
//! - real clients complete, during the overload or shortly after. (Mostly after: the one
//!   admission per overloaded turn goes to whichever cookie-verified hello is first in
//!   control's lane, and the attackers' outnumber the real clients' there; see
//!   docs/security.md.)
//!
//! Run for DTLS 1.2 and for DTLS 1.3 attackers. Each test counts the process's heap with a
//! counting allocator: under nextest (the test command) each runs in a process of its own;
//! with `cargo test`, give it `--test-threads 1`. They print their figures (`--nocapture`).

mod common;

use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{AcceptOutcome, Acceptor, AcceptorConfig};
use dtls_crypto::{COOKIE_SECRET_LEN, CookieKeys, SeededRng};
use dtls_proto::ProtocolVersion;
use dtls_runtime::{Limits, RuntimeConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use common::daemon::Daemon;
use common::overload::{
    CAPACITY, ESTABLISHED, OVERLOAD_TURNS, Outcome, REAL, RECORDS_PER_TURN, STAGE_CAP, TICK,
    assert_no_session_drops, established_then_real, first_hello, outcome, send_bulk, spoofed, turn,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `limits.max_half_open` of this run (the daemon's default is 4096): small enough that
/// one admission per overloaded turn reaches it within the overload.
const MAX_HALF_OPEN: usize = 128;
/// Rust heap a half-open server handshake may hold: its engine (transcript, the flight it
/// retransmits with our certificate chain) and its table entries. Measured here: 2.8 KiB
/// (the printed figure; aws-lc's own `malloc`, the ECDHE key, is not seen by the Rust
/// allocator). A regression that keeps a hello or a buffer of `max_handshake_buffer`
/// per handshake breaks it.
const HALF_OPEN_BYTES: u64 = 8 * 1024;
/// The same for a DTLS 1.3 server handshake (its key schedule, the transcript and a flight
/// with the certificate chain and its signature): measured 9.8 KiB.
const HALF_OPEN_BYTES_13: u64 = 16 * 1024;
/// The engine's `max_handshake_time` (`RetransmitConfig`'s default): a stalled handshake
/// has failed by then.
const HANDSHAKE_TIME: Duration = Duration::from_secs(120);

/// A whole DTLS 1.2 ClientHello in one record, without a cookie, turned into the hello a
/// client sends back with `cookie` (RFC 6347 §4.2.1): the cookie after the session id,
/// the three lengths grown by it, message_seq 1, record sequence 1.
fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    // Record header (13 bytes), handshake header (12), then client_version (2) and
    // random (32), the session id and the cookie.
    const BODY: usize = 13 + 12;
    let session_id = usize::from(hello[BODY + 34]);
    let at = BODY + 35 + session_id;
    assert_eq!(hello[at], 0, "a hello without a cookie");
    let mut out = Vec::with_capacity(hello.len() + cookie.len());
    out.extend_from_slice(&hello[..at]);
    out.push(u8::try_from(cookie.len()).expect("a cookie of at most 255 bytes"));
    out.extend_from_slice(cookie);
    out.extend_from_slice(&hello[at + 1..]);
    let grow = |out: &mut Vec<u8>, at: usize, width: usize| {
        let field = &mut out[at..at + width];
        let value = field.iter().fold(0usize, |v, b| v << 8 | usize::from(*b)) + cookie.len();
        for (i, b) in field.iter_mut().enumerate() {
            *b = (value >> (8 * (width - 1 - i))) as u8;
        }
    };
    grow(&mut out, 11, 2); // record length
    grow(&mut out, 14, 3); // handshake length
    grow(&mut out, 22, 3); // fragment length
    out[17..19].copy_from_slice(&1u16.to_be_bytes()); // message_seq
    out[5..11].copy_from_slice(&[0, 0, 0, 0, 0, 1]); // record sequence number
    out
}

/// The cookie of a HelloVerifyRequest datagram: after the record and handshake headers
/// and server_version (RFC 6347 §4.2.1).
fn cookie_of(hello_verify_request: &[u8]) -> &[u8] {
    const AT: usize = 13 + 12 + 2;
    let len = usize::from(hello_verify_request[AT]);
    &hello_verify_request[AT + 1..AT + 1 + len]
}

/// Heap bytes held now above the start of `region` (stats_alloc counts a reallocation's
/// growth in `bytes_allocated` and its shrinking in `bytes_deallocated`;
/// `bytes_reallocated` is the same change again).
fn heap_above(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

#[test]
fn handshakes_stalled_after_the_cookie_at_twice_capacity_stay_under_the_half_open_cap_and_expire() {
    half_open_overload(ProtocolVersion::Dtls1_2);
}

/// The same with DTLS 1.3 attackers: each source's ClientHello carries the cookie of the
/// HelloRetryRequest the server made for it (RFC 9147 §5.1), X25519 key share and all,
/// and then nothing. (The established sessions and real clients are DTLS 1.2 as above.)
#[test]
fn dtls13_handshakes_stalled_after_the_cookie_at_twice_capacity_stay_under_the_half_open_cap_and_expire()
 {
    half_open_overload(ProtocolVersion::Dtls1_3);
}

/// A DTLS 1.3 attacker's cookie-bearing ClientHellos, one per source, without a client
/// engine per source: every source sends the same first ClientHello (one X25519
/// datagram), so the server's HelloRetryRequests differ only in their cookie (bound to
/// the source's address and the hello's hash), and the second ClientHello of one engine
/// serves every source with its own cookie written in.
struct Hello13 {
    first: Vec<u8>,
    second: Vec<u8>,
    /// Where the cookie sits in a HelloRetryRequest and in the second ClientHello, and its
    /// length.
    in_retry: usize,
    in_second: usize,
    len: usize,
    retry_len: usize,
}

impl Hello13 {
    fn new(cookies: &mut Acceptor, now: Instant) -> Self {
        let config = control::Config {
            versions: vec![ProtocolVersion::Dtls1_3],
            tls13_groups: vec![control::NamedGroup::X25519],
            server_name: Some("localhost".into()),
            ..control::Config::new(common::verifier())
        };
        let mut client = control::Connection::client(
            Arc::new(config),
            Box::new(SeededRng::new(13)),
            now,
            common::overload::SERVER,
            None,
        )
        .expect("client config is valid");
        let mut buf = vec![0u8; 4096];
        let t = client.poll_transmit(now, &mut buf).expect("a ClientHello");
        let first = buf[..t.len].to_vec();
        assert!(
            client.poll_transmit(now, &mut buf).is_none(),
            "one datagram"
        );
        let mut reply = vec![0u8; 4096];
        let retry = match cookies.handle_datagram(now, spoofed(u32::MAX), &first, &mut reply) {
            AcceptOutcome::Reply(t) => reply[..t.len].to_vec(),
            other => panic!("a HelloRetryRequest, got {other:?}"),
        };
        // RFC 8446 §4.2.2: extension type 44 (cookie), its length, the cookie's length.
        let (in_retry, len) = (0..retry.len().saturating_sub(6))
            .find_map(|i| {
                let ext = u16::from_be_bytes([retry[i + 2], retry[i + 3]]) as usize;
                let cookie = u16::from_be_bytes([retry[i + 4], retry[i + 5]]) as usize;
                (retry[i..i + 2] == [0, 44] && ext == cookie + 2 && i + 6 + cookie <= retry.len())
                    .then_some((i + 6, cookie))
            })
            .expect("a cookie extension in the HelloRetryRequest");
        client.handle_datagram(now, common::test_wall(), common::overload::SERVER, &retry);
        let t = client
            .poll_transmit(now, &mut buf)
            .expect("the second ClientHello");
        let second = buf[..t.len].to_vec();
        let in_second = second
            .windows(len)
            .position(|w| w == &retry[in_retry..in_retry + len])
            .expect("the cookie in the second ClientHello");
        Self {
            first,
            second,
            in_retry,
            in_second,
            len,
            retry_len: retry.len(),
        }
    }

    /// `source`'s second ClientHello, with the cookie the server gives `source`.
    fn for_source(&self, cookies: &mut Acceptor, source: SocketAddr, now: Instant) -> Vec<u8> {
        let mut reply = vec![0u8; 4096];
        let retry = match cookies.handle_datagram(now, source, &self.first, &mut reply) {
            AcceptOutcome::Reply(t) => &reply[..t.len],
            other => panic!("a HelloRetryRequest for {source}, got {other:?}"),
        };
        assert_eq!(retry.len(), self.retry_len, "cookies of one length");
        let mut hello = self.second.clone();
        hello[self.in_second..self.in_second + self.len]
            .copy_from_slice(&retry[self.in_retry..self.in_retry + self.len]);
        hello
    }
}

fn half_open_overload(version: ProtocolVersion) {
    let start = Instant::now();
    let half_open_bytes = match version {
        ProtocolVersion::Dtls1_3 => HALF_OPEN_BYTES_13,
        _ => HALF_OPEN_BYTES,
    };
    // Cookie secrets the test shares with the daemon (as a fleet shares them), so it can
    // give each attacking source its own valid cookie without a round trip per source.
    let keys = Arc::new(CookieKeys::from_secrets(
        &[7; COOKIE_SECRET_LEN],
        None,
        start,
    ));
    let mut server =
        common::server_config(vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2]);
    server.cookie_keys = Some(Arc::clone(&keys));
    let mut cookies = Acceptor::new(
        Arc::new(server.clone()),
        AcceptorConfig::default(),
        &mut SeededRng::new(5),
        start,
    )
    .expect("server config is valid");
    let runtime = RuntimeConfig {
        limits: Limits {
            max_half_open: MAX_HALF_OPEN,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let mut daemon = Daemon::with_runtime(server, start, runtime);
    let mut peers = established_then_real(&mut daemon, start, ESTABLISHED, REAL);
    let hello = first_hello(start);
    let hello13 = (version == ProtocolVersion::Dtls1_3).then(|| Hello13::new(&mut cookies, start));
    // A first run through the daemon, so that what it allocates once (tables, the shard's
    // stage and pools) is in before the heap is measured.
    let mut reply = vec![0u8; 4096];
    let mut cookie_hello = |source: SocketAddr, now: Instant| -> Vec<u8> {
        if let Some(h) = &hello13 {
            return h.for_source(&mut cookies, source, now);
        }
        match cookies.handle_datagram(now, source, &hello, &mut reply) {
            AcceptOutcome::Reply(t) => with_cookie(&hello, cookie_of(&reply[..t.len])),
            other => panic!("a HelloVerifyRequest for {source}, got {other:?}"),
        }
    };
    let upstream_before = daemon.flush_upstream();
    let before = daemon.shard_stats();
    let control_before = daemon.ctl.counters().snapshot();
    let region = Region::new(GLOBAL);

    let (mut next_spoofed, mut to_attackers, mut relayed, mut sent_records) = (0u32, 0, 0, 0);
    let (mut stage_peak, mut half_open_peak, mut heap_peak) = (0, 0, 0i64);
    let mut now = start;
    for t in 0..OVERLOAD_TURNS {
        now += TICK;
        let in_before = daemon.shard_stats().datagrams_in;
        for p in &mut peers[ESTABLISHED..] {
            p.send(&mut daemon, now);
        }
        let real = (daemon.shard_stats().datagrams_in - in_before) as usize;
        for _ in real..2 * CAPACITY {
            let source = spoofed(next_spoofed);
            next_spoofed += 1;
            let d = cookie_hello(source, now);
            daemon.receive(now, source, &d);
        }
        sent_records += send_bulk(
            &mut daemon,
            &mut peers[..ESTABLISHED],
            now,
            t,
            RECORDS_PER_TURN,
        );
        stage_peak = stage_peak.max(daemon.staged());
        to_attackers += turn(&mut daemon, &mut peers, now, Some(t));
        relayed += daemon.flush_upstream();
        let half_open = daemon.ctl.half_open();
        assert!(
            half_open <= MAX_HALF_OPEN,
            "{half_open} half-open handshakes in turn {t}"
        );
        half_open_peak = half_open_peak.max(half_open);
        heap_peak = heap_peak.max(heap_above(&region));
    }
    let Outcome {
        during,
        stats,
        control,
        shed_stage,
        shed_control,
        started,
    } = outcome(&mut daemon, &peers, &before, &control_before);
    let half_open_shed = control.half_open_shed - control_before.half_open_shed;
    println!(
        "{version:?}: {OVERLOAD_TURNS} turns at {} handshake datagrams per turn (capacity {CAPACITY}): {next_spoofed} cookie-bearing hellos that stall; shed: {shed_stage} in the fair stage, {shed_control} by control after the cookie; {started} handshakes admitted (engines), {half_open_shed} half-open shed for newer ones, half-open peak {half_open_peak} (cap {MAX_HALF_OPEN}); {to_attackers} datagrams to the attackers' addresses; fair stage peak {stage_peak} B; heap above the start: peak {heap_peak} B ({} B per half-open handshake at the cap); established: {sent_records} records sent, {relayed} relayed; real handshakes completed during the overload: {} of {REAL} (turns {during:?})",
        2 * CAPACITY,
        heap_peak / MAX_HALF_OPEN as i64,
        during.len(),
    );

    // Shed first, counted, within the caps.
    assert!(shed_stage > 0 && shed_control > 0, "nothing was shed");
    assert!(stage_peak <= STAGE_CAP, "fair stage held {stage_peak} B");
    assert_eq!(stats.drop_queue_full - before.drop_queue_full, 0);
    assert_eq!(half_open_peak, MAX_HALF_OPEN, "the cap was reached");
    assert!(half_open_shed > 0, "the oldest were shed for newcomers");
    assert!(
        heap_peak <= (MAX_HALF_OPEN as u64 * half_open_bytes + STAGE_CAP) as i64,
        "heap {heap_peak} B above the start"
    );
    // Established sessions keep every datagram.
    assert_eq!(
        relayed, sent_records,
        "every record of an established session"
    );
    assert_eq!(upstream_before, 0);
    assert_no_session_drops(&before, &stats);
    assert_eq!(control.sessions_closed, 0, "no session closed");

    // After the overload: real clients complete, and every stalled handshake ends within
    // the engine's handshake time (the last ones got in at the overload's end).
    let mut after = 0u32;
    let mut real_done_after = None;
    let until = HANDSHAKE_TIME + Duration::from_secs(5);
    while TICK * after < until
        && (daemon.ctl.half_open() > 0 || peers[ESTABLISHED..].iter().any(|p| p.sealer.is_none()))
    {
        after += 1;
        now += TICK;
        for p in &mut peers[ESTABLISHED..] {
            p.send(&mut daemon, now);
        }
        turn(&mut daemon, &mut peers, now, None);
        if real_done_after.is_none() && peers[ESTABLISHED..].iter().all(|p| p.sealer.is_some()) {
            real_done_after = Some(TICK * after);
        }
    }
    let control = daemon.ctl.counters().snapshot();
    let expired = control.handshakes_failed_timeout - control_before.handshakes_failed_timeout;
    let started = control.handshakes_started - control_before.handshakes_started;
    let completed = control.handshakes_completed - control_before.handshakes_completed;
    let half_open_shed = control.half_open_shed - control_before.half_open_shed;
    let done_after = peers[ESTABLISHED..]
        .iter()
        .filter(|p| p.sealer.is_some())
        .count();
    println!(
        "after the overload: {done_after} of {REAL} real clients done (the last {real_done_after:?} after it); {:?} after it, {} half-open left; of {started} handshakes started: {completed} completed, {half_open_shed} shed, {expired} expired (timeout); heap above the start now {} B",
        TICK * after,
        daemon.ctl.half_open(),
        heap_above(&region),
    );
    // Shortly after: within the real clients' own retransmission timers (1 s doubling,
    // RFC 6347 §4.2.4.1: their next try after 30 s of overload comes within about 30 s).
    assert_eq!(done_after, REAL, "every real client completes");
    assert!(
        real_done_after.is_some_and(|d| d <= Duration::from_secs(40)),
        "real clients done {real_done_after:?} after the overload"
    );
    assert_eq!(
        daemon.ctl.half_open(),
        0,
        "no stalled handshake outlives its time"
    );
    assert!(expired > 0, "stalled handshakes expire, counted");
    assert_eq!(
        started,
        completed + half_open_shed + expired,
        "every handshake completed, was shed or expired"
    );
    assert_eq!(completed as usize, REAL, "only the real clients completed");
    assert_eq!(daemon.ctl.installed_sessions(), ESTABLISHED + REAL);
    assert_eq!(control.sessions_closed, 0);
}
