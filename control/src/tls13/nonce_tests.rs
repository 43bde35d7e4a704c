//! (key, nonce) never repeat across retransmissions and KeyUpdates (TESTING.md
//! "Adversarial", record layer; issue 18): every protected record either engine seals in a
//! session with loss (so flights are resent) and several KeyUpdates both ways.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use dtls_proto::NamedGroup;

use super::ENGINE_SEQUENCE_RESERVE;
use super::adversarial_tests::{engine, server};
use super::tests::{client13, pair, server13, settle};
use crate::Event;
use crate::pair_tests::Pair;

/// RFC 9147 §4.2.3 / RFC 8446 §5.3: the per-record nonce is the epoch key's IV XOR the
/// record's sequence number, and each epoch has its own key (its own traffic secret,
/// RFC 9147 §6.1, RFC 8446 §7.3), so a (key, nonce) pair repeats exactly when a write
/// epoch seals two records under one sequence number. Every datagram in five is lost,
/// both ways, from the first ClientHello on: flights, ACKs and KeyUpdates are resent.
/// Over the handshake and six requested KeyUpdates (three asked by each side, each
/// answered by one of the other side's: both move from epoch 3 to 9), no engine seals one (epoch, sequence number) twice, retransmits
/// take new numbers, and every number of an epoch handed to the data plane lies below the
/// sequence it starts at (`write.next_sequence`).
/// Runs both sides' timers until neither has one, or `limit` passed.
pub(super) fn quiet(pair: &mut Pair, limit: Duration) {
    let end = pair.now + limit;
    loop {
        pair.exchange();
        let next = [pair.client.poll_timeout(), server(pair).poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) if at <= end => {
                pair.now = pair.now.max(at);
                let now = pair.now;
                pair.client.handle_timeout(now);
                server(pair).handle_timeout(now);
            }
            _ => return,
        }
    }
}

#[test]
fn key_and_nonce_never_repeat_across_retransmits_and_key_updates() {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut pair = pair(client, server13());
    let count = Rc::new(Cell::new(0u64));
    let seen = Rc::clone(&count);
    pair.filter = Box::new(move |_, _| {
        seen.set(seen.get() + 1);
        seen.get() % 5 != 3
    });
    settle(&mut pair, Duration::from_secs(30));
    assert!(pair.client.is_established() && server(&mut pair).is_established());
    for round in 0..6 {
        pair.now += Duration::from_secs(5);
        let now = pair.now;
        let started = if round % 2 == 0 {
            pair.client.update_keys(now, true)
        } else {
            server(&mut pair).update_keys(now, true)
        };
        assert!(started, "round {round}");
        quiet(&mut pair, Duration::from_secs(60));
    }
    // Every write epoch handed to the data plane, with the sequence it starts at.
    let handed = |events: &[Event]| -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for e in events {
            match e {
                Event::KeysReady(keys) => {
                    if let crate::RecordKeys::Dtls13 { write, .. } = &keys.records {
                        out.push((write.epoch, write.next_sequence));
                    }
                }
                Event::KeysUpdated(k) => {
                    out.extend(k.write.as_ref().map(|w| (w.epoch, w.next_sequence)));
                }
                _ => {}
            }
        }
        out
    };
    let client_handed = handed(&pair.client_events);
    let server_handed = handed(&pair.server_events);
    let client_sealed = engine(&mut pair.client).core.transport.sealed.clone();
    let server_sealed = engine(server(&mut pair)).core.transport.sealed.clone();
    let resent =
        pair.client.stats().timer_retransmits + server(&mut pair).stats().timer_retransmits;
    assert!(resent > 0, "the loss made the engines resend");
    for (side, sealed, handed) in [
        ("client", client_sealed, client_handed),
        ("server", server_sealed, server_handed),
    ] {
        let epochs: Vec<u64> = handed.iter().map(|(e, _)| *e).collect();
        assert_eq!(
            epochs,
            (3..=9).collect::<Vec<_>>(),
            "{side}: epochs handed on"
        );
        let mut numbers: Vec<(u64, u64)> = sealed.iter().map(|r| (r.epoch, r.sequence)).collect();
        let total = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), total, "{side}: a record number sealed twice");
        for (epoch, start) in handed {
            assert_eq!(start, ENGINE_SEQUENCE_RESERVE, "{side}: epoch {epoch}");
            assert!(
                numbers.iter().all(|(e, s)| *e != epoch || *s < start),
                "{side}: the engine sealed at or past {start} in epoch {epoch}"
            );
        }
        // The KeyUpdate moving a side to epoch N + 1 goes out in epoch N.
        for epoch in 2..=8 {
            assert!(
                numbers.iter().any(|(e, _)| *e == epoch),
                "{side}: no record sealed in epoch {epoch}"
            );
        }
        println!("{side}: {total} protected records sealed, all distinct");
    }
}
