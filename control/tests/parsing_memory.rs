//! Memory bound of the handshake reassembler (TESTING.md "Parsing": a fragment claiming
//! msg_len 2^24-1 allocates nothing before the bound check; memory is capped per message and
//! per handshake). Alone in its test binary so that the process's peak virtual memory is only
//! moved by this test.

mod support;

use std::time::Duration;

use control::CipherSuite;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::*;

const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
const LIMIT: Duration = Duration::from_secs(30);

/// Current and peak virtual memory of this process (kB), from /proc.
fn vm_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("field in /proc/self/status")
    };
    (field("VmSize:"), field("VmPeak:"))
}

fn pair_with_server_flight_held() -> Pair {
    let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
    cfg.s2c.hold = true;
    let mut p = Pair::new(cfg);
    assert!(p.drive_until(LIMIT, |p| !p.s2c.held.is_empty()));
    p.release_held_s2c();
    assert!(p.drive_until(LIMIT, |p| !p.s2c.held.is_empty()));
    p
}

fn release(p: &mut Pair) {
    p.s2c.impairment.hold = false;
    p.release_held_s2c();
}

fn complete(p: &mut Pair, what: &str) {
    assert!(
        p.handshake(LIMIT),
        "{what}: {:?} / {:?}",
        p.client.failed,
        p.server.failed
    );
    p.assert_keys_match();
}

/// Set in the re-executed child that does the measurement.
const CHILD_ENV: &str = "H5_PARSING_MEMORY_CHILD";

/// Runs the measurement in a child process of this test binary with one malloc arena, so
/// that per-thread arena reservations (64 MiB of address space each) do not hide a 16 MiB
/// allocation in the peak.
#[test]
fn fragments_claiming_16_mib_messages_allocate_nothing_big() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return measure();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "fragments_claiming_16_mib_messages_allocate_nothing_big",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .expect("re-run the test binary");
    assert!(
        out.status.success(),
        "measurement failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 passed"),
        "child did not run the test:\n{text}"
    );
}

fn measure() {
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    let (size1, peak1) = vm_kb();
    let threshold = size1 + 12 * 1024;
    assert!(
        peak1 < threshold,
        "probe not sensitive: size {size1} kB, peak {peak1} kB"
    );
    // 200 fragments, each claiming a (2^24 - 1)-byte message, for current and future
    // message_seq values and several message types.
    for i in 0..200u32 {
        let frag = RawFragment {
            msg_type: [
                HT_SERVER_HELLO,
                HT_CERTIFICATE,
                HT_SERVER_KEY_EXCHANGE,
                HT_SERVER_HELLO_DONE,
            ][i as usize % 4],
            length: 0xff_ffff,
            message_seq: (1 + i % 8) as u16,
            fragment_offset: i * 1000,
            body: vec![0x42; 1000],
        };
        p.deliver_to_client(&handshake_datagram(300 + u64::from(i), DTLS_1_2, &[frag]));
    }
    let (_, peak2) = vm_kb();
    assert!(
        peak2 < threshold,
        "peak virtual memory rose from {size1} kB to {peak2} kB: a claimed length was allocated"
    );
    // Never fatal from a spoofer, never answered.
    assert!(p.client.failed.is_none(), "{:?}", p.client.failed);
    assert_eq!(p.client.sent.len(), sent);
    release(&mut p);
    complete(&mut p, "after 16 MiB claims");
    // Positive control: a real 16 MiB allocation does move the probe.
    let probe = vec![1u8; 16 << 20];
    let (_, peak3) = vm_kb();
    assert!(
        peak3 >= threshold,
        "probe blind: peak {peak3} kB < {threshold} kB"
    );
    drop(probe);
}
