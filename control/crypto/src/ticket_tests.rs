//! Session-ticket tests: round trip, tampering, wrong key, expiry, rotation, and parsing of
//! lying lengths.

use super::*;
use crate::SeededRng;

const HOUR: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

fn state(issued: u64, identity: &[u8]) -> SessionState {
    SessionState {
        cipher_suite: 0xc02b,
        master_secret: MasterSecret::from_bytes([0x5a; MASTER_SECRET_LEN]),
        extended_master_secret: true,
        peer_identity: identity.to_vec(),
        issued_at: at(issued),
        lifetime: HOUR,
    }
}

fn keys(rng: &mut SeededRng) -> TicketKeys {
    TicketKeys::new(rng, at(1_000_000), Duration::from_secs(600), HOUR).expect("key setup")
}

fn same(a: &SessionState, b: &SessionState) {
    assert_eq!(a.cipher_suite, b.cipher_suite);
    assert_eq!(a.master_secret.as_bytes(), b.master_secret.as_bytes());
    assert_eq!(a.extended_master_secret, b.extended_master_secret);
    assert_eq!(a.peer_identity, b.peer_identity);
    assert_eq!(a.issued_at, b.issued_at);
    assert_eq!(a.lifetime, b.lifetime);
}

#[test]
fn round_trip_and_unique_nonces() {
    let mut rng = SeededRng::new(3);
    let mut keys = keys(&mut rng);
    let original = state(1_000_000, b"client1");
    let t1 = keys.seal(&original).expect("seal");
    let t2 = keys.seal(&original).expect("seal");
    assert_ne!(t1, t2, "nonce reused");
    assert_eq!(
        t1.len(),
        TICKET_KEY_NAME_LEN + NONCE_LEN + STATE_FIXED_LEN + 7 + TAG_LEN
    );
    // The master secret is not visible in the ticket.
    assert!(!t1.windows(8).any(|w| w == [0x5a; 8]));
    let opened = keys.open(&t1, at(1_000_100)).expect("valid ticket");
    same(&opened, &original);
    same(
        &keys.open(&t2, at(1_000_100)).expect("valid ticket"),
        &original,
    );

    let empty_identity = state(1_000_000, b"");
    let t3 = keys.seal(&empty_identity).expect("seal");
    same(
        &keys.open(&t3, at(1_000_000)).expect("valid"),
        &empty_identity,
    );
}

#[test]
fn tampered_truncated_and_foreign_tickets_rejected() {
    let mut rng = SeededRng::new(4);
    let mut keys = keys(&mut rng);
    let ticket = keys.seal(&state(1_000_000, b"id")).expect("seal");
    for i in 0..ticket.len() {
        let mut bad = ticket.clone();
        bad[i] ^= 0x01;
        assert!(
            matches!(keys.open(&bad, at(1_000_000)), Err(Error::TicketRejected)),
            "flip at byte {i} accepted"
        );
    }
    for len in 0..ticket.len() {
        assert!(matches!(
            keys.open(&ticket[..len], at(1_000_000)),
            Err(Error::TicketRejected)
        ));
    }
    // A ticket from other keys (different name and secret).
    let mut other = TicketKeys::new(
        &mut SeededRng::new(99),
        at(1_000_000),
        Duration::from_secs(600),
        HOUR,
    )
    .expect("key setup");
    let foreign = other.seal(&state(1_000_000, b"id")).expect("seal");
    assert!(matches!(
        keys.open(&foreign, at(1_000_000)),
        Err(Error::TicketRejected)
    ));
    // Same name, wrong key: still rejected by the tag.
    let mut spoofed = foreign.clone();
    spoofed[..TICKET_KEY_NAME_LEN].copy_from_slice(&ticket[..TICKET_KEY_NAME_LEN]);
    assert!(matches!(
        keys.open(&spoofed, at(1_000_000)),
        Err(Error::TicketRejected)
    ));
}

#[test]
fn expiry_uses_the_shorter_of_ticket_and_server_lifetime() {
    let mut rng = SeededRng::new(5);
    let mut keys = keys(&mut rng);
    let ticket = keys.seal(&state(1_000_000, b"id")).expect("seal");
    assert!(keys.open(&ticket, at(1_000_000 + 3599)).is_ok());
    assert!(matches!(
        keys.open(&ticket, at(1_000_000 + 3600)),
        Err(Error::TicketExpired)
    ));
    let mut long = state(1_000_000, b"id");
    long.lifetime = 100 * HOUR;
    let ticket = keys.seal(&long).expect("seal");
    assert!(matches!(
        keys.open(&ticket, at(1_000_000 + 3600)),
        Err(Error::TicketExpired)
    ));
}

#[test]
fn rotation_accepts_previous_key_until_its_tickets_expire() {
    let mut rng = SeededRng::new(6);
    let mut keys = keys(&mut rng);
    let t0 = 1_000_000;
    let old = keys.seal(&state(t0, b"id")).expect("seal");
    assert_eq!(keys.poll_timeout(), at(t0 + 600));
    assert!(!keys.handle_timeout(at(t0 + 599), &mut rng).expect("rotate"));
    assert!(keys.handle_timeout(at(t0 + 600), &mut rng).expect("rotate"));

    let new = keys.seal(&state(t0 + 600, b"id")).expect("seal");
    assert_ne!(old[..TICKET_KEY_NAME_LEN], new[..TICKET_KEY_NAME_LEN]);
    assert!(
        keys.open(&old, at(t0 + 601)).is_ok(),
        "previous key accepted"
    );
    assert!(keys.open(&new, at(t0 + 601)).is_ok());

    // A ticket under the second key that would itself live long (issued later).
    let late = keys.seal(&state(t0 + 3000, b"id")).expect("seal");

    // A second rotation drops the first key entirely.
    keys.rotate(at(t0 + 700), &mut rng).expect("rotate");
    assert!(matches!(
        keys.open(&old, at(t0 + 701)),
        Err(Error::TicketRejected)
    ));
    assert!(keys.open(&new, at(t0 + 701)).is_ok());
    // The previous key opens tickets for one ticket lifetime after it retired, then no more,
    // even for a ticket whose own lifetime has not run out.
    assert!(keys.open(&late, at(t0 + 700 + 3599)).is_ok());
    assert!(matches!(
        keys.open(&late, at(t0 + 700 + 3600)),
        Err(Error::TicketRejected)
    ));
    let key3_ticket = keys.seal(&state(t0 + 4000, b"id")).expect("seal");
    // Due for rotation again: the expired key is dropped, the current one becomes previous.
    assert!(
        keys.handle_timeout(at(t0 + 700 + 3600), &mut rng)
            .expect("rotate")
    );
    assert!(matches!(
        keys.open(&late, at(t0 + 700 + 3600)),
        Err(Error::TicketRejected)
    ));
    assert!(keys.open(&key3_ticket, at(t0 + 700 + 3600)).is_ok());
}

#[test]
fn session_state_parser_rejects_lying_lengths() {
    let mut good = Vec::new();
    state(5, b"abc").encode_into(&mut good).expect("encode");
    assert!(SessionState::decode(&good).is_ok());

    // Identity length claiming more or fewer bytes than present.
    let len_at = STATE_FIXED_LEN - 2;
    for claimed in [0u16, 2, 4, 0xffff] {
        let mut bad = good.clone();
        bad[len_at..len_at + 2].copy_from_slice(&claimed.to_be_bytes());
        assert!(matches!(
            SessionState::decode(&bad),
            Err(Error::TicketRejected)
        ));
    }
    // Trailing garbage, every truncation, bad version, bad EMS flag.
    assert!(SessionState::decode(&[good.as_slice(), &[0]].concat()).is_err());
    for len in 0..good.len() {
        assert!(SessionState::decode(&good[..len]).is_err());
    }
    let mut bad = good.clone();
    bad[0] = 2;
    assert!(SessionState::decode(&bad).is_err());
    let mut bad = good;
    bad[3] = 2;
    assert!(SessionState::decode(&bad).is_err());
}

#[test]
fn oversized_identity_is_refused() {
    let mut rng = SeededRng::new(7);
    let mut keys = keys(&mut rng);
    let big = state(1, &vec![0u8; 70_000]);
    assert!(matches!(
        keys.seal(&big),
        Err(Error::SessionStateTooLarge { len: 70_000 })
    ));
}

#[test]
fn revoke_all_invalidates_every_earlier_ticket() {
    let mut rng = SeededRng::new(9);
    let mut keys = keys(&mut rng);
    let before = keys.seal(&state(1_000_000, b"a")).expect("seal");
    keys.rotate(at(1_000_600), &mut rng).expect("rotate");
    let after_rotation = keys.seal(&state(1_000_600, b"b")).expect("seal");
    assert!(
        keys.open(&before, at(1_000_700)).is_ok(),
        "previous key opens"
    );
    keys.revoke_all(at(1_000_700), &mut rng).expect("revoke");
    assert!(keys.open(&before, at(1_000_700)).is_err());
    assert!(keys.open(&after_rotation, at(1_000_700)).is_err());
    let fresh = keys.seal(&state(1_000_700, b"c")).expect("seal");
    assert!(keys.open(&fresh, at(1_000_800)).is_ok());
}

fn state13(issued: u64, peer: TicketPeer) -> SessionState13 {
    SessionState13 {
        cipher_suite: 0x1302,
        psk: Zeroizing::new(vec![0x5a; 48]),
        age_add: 0xdead_beef,
        peer,
        issued_at: at(issued),
        lifetime: Duration::from_secs(3600),
    }
}

#[test]
fn dtls13_states_round_trip_and_do_not_open_as_dtls12_states() {
    let mut rng = SeededRng::new(13);
    let mut k = keys(&mut rng);
    for peer in [
        TicketPeer::None,
        TicketPeer::Psk(b"client".to_vec()),
        TicketPeer::Certificate(vec![0x30; 700]),
    ] {
        let ticket = k.seal13(&state13(1000, peer.clone())).expect("seal");
        let back = k.open13(&ticket, at(1001)).expect("open");
        assert_eq!(back.cipher_suite, 0x1302);
        assert_eq!(&back.psk[..], &[0x5a; 48][..]);
        assert_eq!(back.age_add, 0xdead_beef);
        assert_eq!(back.peer, peer);
        assert_eq!(back.issued_at.as_secs(), 1000);
        assert_eq!(back.lifetime, Duration::from_secs(3600));
        assert!(matches!(
            k.open(&ticket, at(1001)),
            Err(Error::TicketRejected)
        ));
        assert!(matches!(
            k.open13(&ticket, at(4600)),
            Err(Error::TicketExpired)
        ));
        let mut tampered = ticket.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            k.open13(&tampered, at(1001)),
            Err(Error::TicketRejected)
        ));
    }
    let ticket12 = k.seal(&state(1000, b"")).expect("seal");
    assert!(matches!(
        k.open13(&ticket12, at(1001)),
        Err(Error::TicketRejected)
    ));
}

#[test]
fn dtls13_state_parser_rejects_lying_lengths_and_unknown_kinds() {
    let mut out = Vec::new();
    state13(1, TicketPeer::Psk(b"id".to_vec()))
        .encode_into(&mut out)
        .expect("encode");
    assert!(SessionState13::decode(&out).is_ok());
    for cut in 0..out.len() {
        assert!(SessionState13::decode(&out[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = out.clone();
    longer.push(0);
    assert!(SessionState13::decode(&longer).is_err());
    let kind_at = out.len() - 2 - 2 - 1;
    let mut unknown = out.clone();
    unknown[kind_at] = 9;
    assert!(SessionState13::decode(&unknown).is_err());
}

#[test]
fn shared_secrets_open_on_every_server_and_rotate_without_loss() {
    // Two servers (different RNGs) built from one key store open each other's tickets.
    let (s1, s2, s3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let mut rng_a = SeededRng::new(1);
    let mut rng_b = SeededRng::new(2);
    let t0 = 1_000_000;
    let mut a = TicketKeys::from_secrets(&s1, None, &mut rng_a, at(t0), HOUR).expect("a");
    let mut b = TicketKeys::from_secrets(&s1, None, &mut rng_b, at(t0), HOUR).expect("b");
    let original = state(t0, b"client1");
    let from_a = a.seal(&original).expect("seal");
    let from_b = b.seal(&original).expect("seal");
    same(
        &b.open(&from_a, at(t0 + 1)).expect("a's ticket on b"),
        &original,
    );
    same(
        &a.open(&from_b, at(t0 + 1)).expect("b's ticket on a"),
        &original,
    );
    // Same key name, different nonces: the servers' nonce starts differ.
    assert_eq!(from_a[..TICKET_KEY_NAME_LEN], from_b[..TICKET_KEY_NAME_LEN]);
    assert_ne!(
        from_a[TICKET_KEY_NAME_LEN..TICKET_KEY_NAME_LEN + NONCE_LEN],
        from_b[TICKET_KEY_NAME_LEN..TICKET_KEY_NAME_LEN + NONCE_LEN]
    );
    // They never rotate on their own.
    assert!(
        !a.handle_timeout(at(t0 + 100 * 3600), &mut rng_a)
            .expect("timeout")
    );
    // Rotation by the store: s2 current, s1 previous. Old tickets still open, new ones
    // seal under s2 and open on a server that has s2 (with any previous).
    let mut a =
        TicketKeys::from_secrets(&s2, Some(&s1), &mut rng_a, at(t0 + 10), HOUR).expect("rotated");
    same(&a.open(&from_b, at(t0 + 20)).expect("previous"), &original);
    let new = a.seal(&original).expect("seal");
    let c = TicketKeys::from_secrets(&s2, None, &mut rng_b, at(t0 + 10), HOUR).expect("c");
    same(&c.open(&new, at(t0 + 20)).expect("current"), &original);
    // A secret neither current nor previous opens nothing of theirs.
    let d = TicketKeys::from_secrets(&s3, Some(&s2), &mut rng_b, at(t0 + 10), HOUR).expect("d");
    assert!(d.open(&from_a, at(t0 + 20)).is_err());
    // The previous secret stops opening one ticket lifetime after the rotation.
    a.handle_timeout(at(t0 + 10 + 3600), &mut rng_a)
        .expect("timeout");
    let fresh = state(t0 + 3600, b"client1");
    let old_key_ticket = b.seal(&fresh).expect("seal under s1");
    assert!(
        a.open(&old_key_ticket, at(t0 + 3610)).is_err(),
        "s1 forgotten"
    );
}
