//! `dtlsd serve` and DTLS 1.3 records for retired epochs, over real loopback sockets
//! (issue 18, TESTING.md "Record layer": records of a retired epoch are accepted only for
//! a bounded time; the DTLS 1.3 shape "records for retired epochs").
//!
//! An authenticated client of our own engine sends records in each of its first epochs,
//! each echoed once, keeping a copy of every record it sent, then updates its keys five
//! times (RFC 9147 §8), each KeyUpdate acknowledged before the next: 3 → 8. Each KeyUpdate
//! reaching control retires the read epochs before its own (control's
//! `ShardCommand::RetireEpoch`, sent before the ACK that moves the client on), so at the
//! end the server reads epochs 8 and 7 and has retired 3 to 6. Then, from the client's
//! address and from another source address: the genuine records of epochs 3 to 6 again
//! (replays) and fresh ones sealed under those epochs' keys.
//!
//! Asserted from the daemon's counters and what comes back: every such record is dropped
//! and counted (an epoch whose two header bits match none the session holds resolves to a
//! retired one and is `retired_epoch`, RFC 9147 §4.2.2; epoch 3's bits are epoch 7's, so
//! its records fail authentication under epoch 7 and are `bad_tag`), none reaches the
//! backend or the control thread, the session is neither moved nor closed, and both it and
//! an innocent session keep echoing (each innocent datagram sent once, echoed once).
//!
//! Every wait has a deadline; the daemon is killed on drop.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::innocent::Innocent;
use common::{Client, Daemon, EchoBackend, TempDir, certs};

/// What an echo may take (a loaded 2-core machine, a debug build).
const ECHO: Duration = Duration::from_secs(10);
/// Records sent, and kept, per epoch before the KeyUpdates.
const PER_EPOCH: usize = 4;
/// KeyUpdates of the client: epoch 3 → 3 + `UPDATES`.
const UPDATES: u64 = 5;
/// RFC 9147 §6.1: the first application epoch.
const FIRST_EPOCH: u64 = 3;

/// Waits for the echo of `payload` (sent once, not resent); panics on another payload.
fn expect_echo(client: &mut Client, payload: &[u8], daemon: &Daemon) {
    let deadline = Instant::now() + ECHO;
    loop {
        let opened = client.turn(Duration::from_millis(20));
        for p in &opened.app {
            assert_eq!(
                p,
                payload,
                "unexpected echo: {:?}",
                String::from_utf8_lossy(p)
            );
        }
        if !opened.app.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no echo of {:?}: {}",
            String::from_utf8_lossy(payload),
            daemon.log()
        );
    }
}

#[test]
fn records_for_retired_epochs_are_dropped_counted_and_never_reach_the_backend_dtls13() {
    let pki = TempDir::new("retired13");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut client = Client::connect(Client::config13(&pki), daemon.listen);
    let mut innocent = Innocent::new(Client::connect(Client::config13(&pki), daemon.listen));
    assert!(
        client.peer_cid().is_some(),
        "the server's CID in our records"
    );
    let metric = |name: &str| daemon.metric(name).unwrap_or(0);
    client.echo(b"before");

    // Genuine records of epochs 3 .. 3 + UPDATES, each echoed once, kept.
    let mut genuine: Vec<(u64, Vec<u8>)> = Vec::new();
    for update in 0..=UPDATES {
        let epoch = client.write_epoch13();
        assert_eq!(epoch, FIRST_EPOCH + update);
        for i in 0..PER_EPOCH {
            let payload = format!("epoch {epoch} record {i}").into_bytes();
            let record = client.seal_app13_in(epoch, &payload);
            client.send_datagram(&record);
            expect_echo(&mut client, &payload, &daemon);
            genuine.push((epoch, record));
        }
        innocent.echo(ECHO, || daemon.log());
        if update < UPDATES {
            client.update_keys13();
        }
    }
    let current = client.write_epoch13();
    assert_eq!(current, FIRST_EPOCH + UPDATES);
    assert_eq!(metric("dtlsd_key_updates_total"), UPDATES);
    // Retired: every epoch before the one that carried the last KeyUpdate.
    let retired: Vec<u64> = (FIRST_EPOCH..current - 1).collect();

    let series = |reason: &str| format!("dtlsd_drops_total{{shard=\"0\",reason=\"{reason}\"}}");
    let counters = [
        series("retired_epoch"),
        series("bad_tag"),
        "dtlsd_handshake_datagrams_forwarded_total{shard=\"0\"}".to_owned(),
        "dtlsd_upstream_datagrams_out_total{shard=\"0\"}".to_owned(),
        "dtlsd_records_opened_total{shard=\"0\"}".to_owned(),
        "dtlsd_sessions_moved_total{shard=\"0\"}".to_owned(),
        "dtlsd_control_sessions_closed_total".to_owned(),
    ];
    let read = || counters.iter().map(|c| metric(c)).collect::<Vec<u64>>();
    let before = read();

    // The attack: from the client's own address, then from another one, the genuine
    // records of the retired epochs replayed and fresh ones sealed under their keys.
    let elsewhere = UdpSocket::bind("127.0.0.2:0").expect("bind another source");
    let (mut sent, mut colliding) = (0u64, 0u64);
    for from_elsewhere in [false, true] {
        for &epoch in &retired {
            let mut records: Vec<Vec<u8>> = genuine
                .iter()
                .filter(|(e, _)| *e == epoch)
                .map(|(_, r)| r.clone())
                .collect();
            for i in 0..PER_EPOCH {
                let payload = format!("retired {epoch} fresh {i} {from_elsewhere}");
                records.push(client.seal_app13_in(epoch, payload.as_bytes()));
            }
            for record in &records {
                if from_elsewhere {
                    elsewhere
                        .send_to(record, daemon.listen)
                        .expect("send from elsewhere");
                } else {
                    client.send_datagram(record);
                }
                sent += 1;
                // The epoch bits (RFC 9147 §4.2.2) of a retired epoch that match a held one.
                colliding += u64::from(epoch & 3 == current & 3 || epoch & 3 == (current - 1) & 3);
            }
            // Nothing comes back for them; the innocent session goes on meanwhile.
            assert!(
                client.turn(Duration::from_millis(50)).app.is_empty(),
                "a record of retired epoch {epoch} was echoed"
            );
            innocent.echo(ECHO, || daemon.log());
        }
    }
    // Counted: each record once, by the shard, before anything else happens to it.
    common::wait_until(
        "every record of a retired epoch counted",
        || daemon.log(),
        || {
            let now = read();
            now[0] + now[1] >= before[0] + before[1] + sent
        },
    );
    // The session lives on in its current epoch.
    client.echo(b"after");
    innocent.echo(ECHO, || daemon.log());
    let after = read();
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    println!(
        "epochs {retired:?} retired, {current} current: {sent} records sent ({colliding} with a held epoch's bits); drops: {} retired_epoch, {} bad_tag; {} to control, {} to the backend, {} opened, {} moves, {} closes",
        delta[0], delta[1], delta[2], delta[3], delta[4], delta[5], delta[6]
    );
    assert_eq!(delta[0], sent - colliding, "retired_epoch drops");
    assert_eq!(delta[1], colliding, "bad_tag drops");
    assert_eq!(delta[2], 0, "nothing of a retired epoch reaches control");
    // The backend saw the innocent's echoes and the client's "after", nothing else.
    let innocent_since = retired.len() as u64 * 2 + 1;
    assert!(
        (innocent_since + 1..=innocent_since + 2).contains(&delta[3]),
        "{} datagrams to the backend",
        delta[3]
    );
    assert_eq!(
        delta[4], delta[3],
        "every record opened was the innocent's or \"after\""
    );
    assert_eq!(delta[5], 0, "no session moved");
    assert_eq!(delta[6], 0, "no session closed");
    assert_eq!(metric("dtlsd_sessions_active{shard=\"0\"}"), 2);
    innocent.assert_all_echoed();
}

/// Control's bound on an old read epoch when the peer never uses its new one
/// (`EPOCH_RETIRE_AFTER` in dtls-runtime; a record under the new epoch retires it at once).
const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// The bound itself (TESTING.md "Record layer": records of a retired epoch are accepted
/// only for a bounded time). After one KeyUpdate the client sends nothing under its new
/// epoch, so only control's timer can retire the old one: a record of the old epoch is
/// relayed right after the update (RFC 9147 §8 lets the peer's records in flight under it
/// arrive), and one sent once the bound has passed is dropped as `retired_epoch`; the new
/// epoch works throughout.
#[test]
fn the_old_epoch_is_refused_once_its_bound_has_passed_dtls13() {
    let pki = TempDir::new("retire-bound13");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve_with_metrics(backend.addr, &pki, &["--shards", "1"]);
    let mut client = Client::connect(Client::config13(&pki), daemon.listen);
    client.echo(b"before");
    client.update_keys13();
    assert_eq!(client.write_epoch13(), FIRST_EPOCH + 1);
    let retired = || {
        daemon
            .metric("dtlsd_drops_total{shard=\"0\",reason=\"retired_epoch\"}")
            .unwrap_or(0)
    };
    let updated = Instant::now();
    let within = b"old epoch, within the bound";
    let record = client.seal_app13_in(FIRST_EPOCH, within);
    client.send_datagram(&record);
    expect_echo(&mut client, within, &daemon);
    assert!(
        updated.elapsed() < RETIRE_AFTER,
        "the machine was too slow to send within the bound"
    );
    assert_eq!(retired(), 0);

    std::thread::sleep(RETIRE_AFTER.saturating_sub(updated.elapsed()) + Duration::from_secs(1));
    let late = client.seal_app13_in(FIRST_EPOCH, b"old epoch, past the bound");
    client.send_datagram(&late);
    common::wait_until(
        "the late record counted",
        || daemon.log(),
        || retired() == 1,
    );
    assert!(
        client.turn(Duration::from_millis(200)).app.is_empty(),
        "a record of the retired epoch was echoed"
    );
    client.echo(b"the new epoch");
}
