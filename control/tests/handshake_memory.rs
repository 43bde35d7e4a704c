//! What a handshake fragment that claims more than it carries costs on the heap (TESTING.md
//! "Parsing": no allocation of a claimed length; "DoS": per-handshake and global buffer
//! caps), measured with a counting allocator over as many engines as a control thread keeps
//! half-open (4096).
//!
//! One test alone in its binary, so that nothing else moves the allocator's counts while it
//! measures. It prints its figures (`--nocapture` shows them). The acceptor's cookie check
//! is off here: a cookie is what lets such fragments reach an engine at all (dos.rs tests the
//! cookie front); what is measured is the engine after it.

mod support;

use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{CipherSuite, Connection};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::engines::{claim, peer, server_engines};
use support::fixtures::*;
use support::wire::*;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// `RuntimeConfig::max_half_open`'s default.
const ENGINES: usize = 4096;
/// PSK: no signature per engine, so building 4096 of them is quick.
const PSK: CipherSuite = CipherSuite::PskAes128GcmSha256;

/// Bytes allocated and not freed since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    let c = region.change();
    // stats_alloc already counts a realloc's growth in bytes_allocated (and its shrinking in
    // bytes_deallocated); bytes_reallocated is the same change again.
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// Resident set size of this process, KiB.
fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A 26-byte fragment: a 12-byte header claiming a `claimed`-byte message, and 14 bytes.
fn claim26(msg_type: u8, message_seq: u16, claimed: u32, offset: u32) -> Vec<u8> {
    let datagram = claim(msg_type, message_seq, claimed, offset, 14);
    assert_eq!(
        datagram.len(),
        13 + 26,
        "one record header and the fragment"
    );
    datagram
}

/// Feeds `datagram` to every engine (from its own peer) and returns (heap bytes still held
/// afterwards, RSS growth in KiB).
fn feed_all(engines: &mut [Connection], datagram: &[u8], now: Instant) -> (isize, i64) {
    let rss = rss_kib();
    let region = Region::new(GLOBAL);
    for (i, conn) in engines.iter_mut().enumerate() {
        conn.handle_datagram(now, test_wall(), peer(i), datagram);
    }
    let held = live(&region);
    let rss = rss_kib() - rss;
    for conn in engines.iter() {
        assert!(!conn.is_finished(), "a claim is never fatal");
    }
    (held, rss)
}

fn report(what: &str, held: isize, rss_kib: i64, n: usize) {
    println!(
        "{what}: heap +{held} B ({} B per engine), RSS +{rss_kib} KiB",
        held / n as isize
    );
}

#[test]
fn fragments_claiming_large_messages_cost_their_own_size_not_the_claim() {
    let now = Instant::now();
    let config = Arc::new(server_config(&[PSK]));

    // The case: after the cookie, a fragment claiming a 64 KiB message. A client's
    // Certificate is capped below that, so nothing at all is kept.
    let mut engines = server_engines(&config, ENGINES, now);
    let (held, rss) = feed_all(&mut engines, &claim26(HT_CERTIFICATE, 1, 65_536, 0), now);
    report("64 KiB Certificate claims, server", held, rss, ENGINES);
    assert!(
        held <= 16 * ENGINES as isize,
        "{held} B held for {ENGINES} claims of 64 KiB"
    );
    drop(engines);

    // A claim within the caps (32 KiB), at the start and in the middle of the message:
    // each engine keeps about the 14 bytes it received plus its bookkeeping.
    for offset in [0, 20_000] {
        let mut engines = server_engines(&config, ENGINES, now);
        let (held, rss) = feed_all(
            &mut engines,
            &claim26(HT_CERTIFICATE, 1, 32_768, offset),
            now,
        );
        report(
            &format!("32 KiB Certificate claims at offset {offset}, server"),
            held,
            rss,
            ENGINES,
        );
        assert!(
            held <= 256 * ENGINES as isize,
            "{held} B held for {ENGINES} claims of 32 KiB"
        );
        drop(engines);
    }

    // A client receiving a server's flight keeps room for real chains (64 KiB), and a claim
    // of that size still costs only what arrived.
    let client_config = Arc::new(client_config(&[PSK]));
    let server = server_addr();
    let mut clients: Vec<Connection> = (0..ENGINES)
        .map(|i| {
            let rng = Box::new(SeededRng::new(i as u64));
            let mut conn = Connection::client(Arc::clone(&client_config), rng, now, server, None)
                .expect("client engine");
            let mut buf = vec![0u8; 2048];
            while conn.poll_transmit(now, &mut buf).is_some() {}
            conn
        })
        .collect();
    let datagram = claim26(HT_SERVER_HELLO, 0, 65_536, 0);
    let rss = rss_kib();
    let region = Region::new(GLOBAL);
    for conn in &mut clients {
        conn.handle_datagram(now, test_wall(), server, &datagram);
    }
    let held = live(&region);
    report(
        "64 KiB ServerHello claims, client",
        held,
        rss_kib() - rss,
        ENGINES,
    );
    assert!(
        held <= 256 * ENGINES as isize,
        "{held} B held for {ENGINES} claims of 64 KiB"
    );
    assert!(clients.iter().all(|c| !c.is_finished()));
}
