//! B7 through the daemon: what an established session costs `dtlsd serve`'s resident set,
//! with real sessions over loopback (full ECDHE-ECDSA handshakes from our engine as a
//! client, one echoed datagram each so that every session has its upstream socket), for
//! DTLS 1.2 and 1.3.
//!
//! Two figures per version, RSS growth per session over `SESSIONS` sessions (after a warm-up
//! batch, so that lazily built tables are not counted): right after the handshakes (DTLS
//! 1.2 engines still in their completed-handshake grace period), and once that period
//! (30 s) is over. RSS holds what the allocator keeps of freed memory (the handshakes'
//! transient state, the finished 1.2 engines), so these are upper bounds of what a session
//! itself holds; `control/runtime/tests/session_memory.rs` counts the control loop's heap
//! exactly. The kernel's share (one connected upstream UDP socket per session, slab)
//! is not in RSS; operations.md says what it costs. The bounds are loose multiples of what
//! was measured (docs/benchmarks.md B7): memory held per session, never time, is what
//! fails this test.
//!
//! `cargo test -p dtlsd --test session_rss -- --nocapture` prints the figures.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::probe::{Samples, rss_kib};
use common::{Client, Daemon, EchoBackend, IO_TIMEOUT, TempDir, certs};
use control::{Config, ProtocolVersion};

/// Sessions measured per version (after `WARM_UP`).
const SESSIONS: usize = 1000;
const WARM_UP: usize = 100;
/// The daemon's completed-handshake grace period (`RuntimeConfig::completed_grace`) and a
/// margin for the control loop's timer.
const GRACE: Duration = Duration::from_secs(32);

/// Bounds on RSS per settled session, KiB: about 1.5 times what was measured (debug build,
/// 1.2: 4.8, 1.3: 24.0; see docs/benchmarks.md B7).
const BOUND_12_KIB: f64 = 8.0;
const BOUND_13_KIB: f64 = 36.0;

fn client_config(pki: &TempDir, version: ProtocolVersion) -> Arc<Config> {
    let base = Client::config(pki);
    Arc::new(Config {
        versions: vec![version],
        ..(*base).clone()
    })
}

/// `n` sessions to `server` from the loopback addresses `base`, `base + 1`, ... (one source
/// address each: the per-source session cap and handshake rate never bind), each having
/// echoed one datagram.
fn open(config: &Arc<Config>, server: SocketAddr, base: u32, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x7f00_0000 | (base + i as u32));
            let mut c = Client::connect_from(Arc::clone(config), server, ip.into(), IO_TIMEOUT);
            c.echo(format!("session {i}").as_bytes());
            c
        })
        .collect()
}

fn sessions(daemon: &Daemon) -> u64 {
    Samples::scrape(daemon.metrics()).total("dtlsd_sessions_active")
}

/// (KiB per session right after the handshakes, KiB per session once their grace period is
/// over).
fn measure(pki: &TempDir, backend: SocketAddr, version: ProtocolVersion, base: u32) -> (f64, f64) {
    let daemon = Daemon::start_serve_with_metrics(backend, pki, &["--shards", "1"]);
    let config = client_config(pki, version);
    let warm = open(&config, daemon.listen, base, WARM_UP);
    let before = rss_kib(daemon.pid());
    let sessions_opened = open(&config, daemon.listen, base + 0x1000, SESSIONS);
    let right_after = rss_kib(daemon.pid());
    std::thread::sleep(GRACE);
    let settled = rss_kib(daemon.pid());
    assert_eq!(
        sessions(&daemon),
        (WARM_UP + SESSIONS) as u64,
        "every session is still there"
    );
    drop((warm, sessions_opened));
    println!(
        "dtlsd serve {version:?}: RSS {before} KiB with {WARM_UP} sessions; {SESSIONS} more: \
         +{} KiB right after, +{} KiB once their grace period is over",
        right_after as i64 - before as i64,
        settled as i64 - before as i64,
    );
    let n = SESSIONS as f64;
    (
        (right_after as f64 - before as f64) / n,
        (settled as f64 - before as f64) / n,
    )
}

#[test]
fn rss_per_established_session_through_serve_is_bounded() {
    let pki = TempDir::new("session-rss");
    certs(&pki);
    let backend = EchoBackend::start();
    // Both versions at once (one daemon each): the waits overlap.
    let ((g12, s12), (g13, s13)) = std::thread::scope(|s| {
        let v12 = s.spawn(|| measure(&pki, backend.addr, ProtocolVersion::Dtls1_2, 0x01_0000));
        let v13 = measure(&pki, backend.addr, ProtocolVersion::Dtls1_3, 0x02_0000);
        (v12.join().expect("1.2 measurement"), v13)
    });
    println!("RSS per session, KiB: version, right after the handshakes, settled");
    println!("1.2  {g12:.2}  {s12:.2}");
    println!("1.3  {g13:.2}  {s13:.2}");
    assert!(s12 <= BOUND_12_KIB, "1.2: {s12:.2} KiB per settled session");
    assert!(s13 <= BOUND_13_KIB, "1.3: {s13:.2} KiB per settled session");
}
