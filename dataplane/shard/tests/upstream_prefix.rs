//! Serve mode over loopback: the prefix control installs with a session (a PROXY v2 or SPP
//! header) reaches the backend in front of the first or of every datagram, a new handshake
//! of the same peer replaces it, replies to the peer carry none, and a session without one
//! sends the plaintext alone.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dataplane::record::Sealer;
use dtls_io::IoMode;
use dtls_shard::{InstallError, ShardCommand, ShardQueues, UpstreamPrefix};

/// A backend socket that receives what the shard sends and can answer.
fn backend() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

fn with_prefix(peer: &Peer, upstream: UpstreamPrefix) -> ShardCommand {
    match peer.install() {
        ShardCommand::InstallKeys {
            session,
            peer,
            read,
            write,
            heartbeat,
            cid,
            peer_cid,
            ..
        } => ShardCommand::InstallKeys {
            session,
            peer,
            read,
            write,
            heartbeat,
            cid,
            peer_cid,
            rrc: false,
            upstream,
        },
        other => other,
    }
}

/// Runs turns until the backend receives a datagram; returns it and where it came from.
fn turn_until_backend(
    shard: &mut dtls_shard::Shard,
    backend: &UdpSocket,
) -> Option<(Vec<u8>, SocketAddr)> {
    let until = std::time::Instant::now() + DEADLINE;
    let mut buf = vec![0; 65_536];
    while std::time::Instant::now() < until {
        shard.run_turn(std::time::Instant::now()).expect("turn");
        if let Ok((n, from)) = backend.recv_from(&mut buf) {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

/// Sends `plaintext` from `peer` through the shard; returns what the backend got.
fn relay(
    shard: &mut dtls_shard::Shard,
    backend: &UdpSocket,
    peer: &mut Peer,
    plaintext: &[u8],
) -> (Vec<u8>, SocketAddr) {
    let to = shard.local_addr().expect("addr");
    let record = peer.seal(plaintext);
    peer.socket.send_to(&record, to).expect("send");
    turn_until_backend(shard, backend).expect("the backend receives")
}

fn prefix_on_first_and_every(mode: IoMode) {
    let (backend, backend_addr) = backend();
    let queues = Arc::new(ShardQueues::new(16, 16));
    let mut shard = shard(config(backend_addr, mode), queues.clone());
    let mut first = Peer::new(1);
    let mut every = Peer::new(2);
    let mut plain = Peer::new(3);
    let hdr = |b: &[u8]| Box::<[u8]>::from(b);
    queues
        .push_command(with_prefix(&first, UpstreamPrefix::First(hdr(b"FIRST:"))))
        .expect("room");
    queues
        .push_command(with_prefix(&every, UpstreamPrefix::Every(hdr(b"EVERY:"))))
        .expect("room");
    queues.push_command(plain.install()).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 3));

    let (got, flow) = relay(&mut shard, &backend, &mut first, b"one");
    assert_eq!(got, b"FIRST:one");
    let (got, _) = relay(&mut shard, &backend, &mut first, b"two");
    assert_eq!(
        got, b"two",
        "a First prefix goes on the first datagram only"
    );
    for m in [&b"a"[..], b"bb", b"ccc"] {
        let (got, _) = relay(&mut shard, &backend, &mut every, m);
        assert_eq!(got, [&b"EVERY:"[..], m].concat());
    }
    let (got, _) = relay(&mut shard, &backend, &mut plain, b"as is");
    assert_eq!(got, b"as is");

    // The backend's answer reaches the peer as it was sent: nothing is stripped or added.
    backend.send_to(b"reply", flow).expect("answer");
    let record = turn_until_recv(&mut shard, &first).expect("the peer receives");
    let (_, plaintext) = first.open(record).expect("opens");
    assert_eq!(plaintext, b"reply");

    // A new handshake of the same peer (new keys, perhaps another identity): its prefix
    // replaces the session's, on the next datagram again.
    let mut again = with_prefix(&first, UpstreamPrefix::First(hdr(b"AGAIN:")));
    if let ShardCommand::InstallKeys { read, .. } = &mut again {
        read.epoch = 2;
        read.key = key(2); // Peer::new(1)'s seed
    }
    queues.push_command(again).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_rekeyed == 1));
    first.sealer = Sealer::new(2, key(2), 0).expect("sealer");
    let (got, _) = relay(&mut shard, &backend, &mut first, b"three");
    assert_eq!(got, b"AGAIN:three");
}

#[test]
fn prefixes_reach_the_backend_on_the_first_or_every_datagram() {
    for mode in modes("prefixes_reach_the_backend_on_the_first_or_every_datagram") {
        prefix_on_first_and_every(mode);
    }
}

#[test]
fn an_oversized_prefix_is_refused_at_installation() {
    let (_backend, backend_addr) = backend();
    let queues = Arc::new(ShardQueues::new(16, 16));
    let mut shard = shard(config(backend_addr, IoMode::Mmsg), queues.clone());
    let peer = Peer::new(4);
    let long = vec![0u8; dtls_shard::MAX_PREFIX_LEN + 1].into_boxed_slice();
    queues
        .push_command(with_prefix(&peer, UpstreamPrefix::Every(long)))
        .expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().install_failed == 1));
    let closed = std::iter::from_fn(|| queues.poll_inbound()).find_map(|m| match m {
        dtls_shard::ControlInbound::SessionClosed { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(
        closed,
        Some(dtls_shard::CloseReason::Rejected(
            InstallError::PrefixLength(dtls_shard::MAX_PREFIX_LEN + 1)
        ))
    );
}
