//! When a shard's turn may sleep in `epoll_wait`: right after a receive that found the
//! socket empty (a short batch), since every later datagram raises a new readiness edge;
//! not after one that filled its batch, which may have left datagrams behind that raise
//! none. An extra turn without waiting after every receive cost two kernel calls per
//! datagram at low load (an `epoll_wait` and a receive that both find nothing).

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dtls_io::IoMode;
use dtls_shard::{Shard, ShardQueues};

fn sleeps_right_after_a_short_receive(mode: IoMode) {
    // A backend that takes the relayed plaintext and never answers: nothing comes back to
    // keep the shard busy.
    let backend = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
    backend
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let queues = Arc::new(ShardQueues::new(16, 16));
    let cfg = config(backend.local_addr().expect("addr"), mode);
    let batch = cfg.io.batch;
    let mut shard = shard(cfg, queues.clone());
    let to = shard.local_addr().expect("addr");
    let mut peer = Peer::new(7);
    queues.push_command(peer.install()).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));
    assert!(
        turn_until(&mut shard, Shard::may_sleep),
        "{mode:?}: never idle"
    );

    // One datagram: the turn that receives it found the socket drained.
    let record = peer.seal(b"one");
    peer.socket.send_to(&record, to).expect("send");
    assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 1));
    assert!(
        shard.may_sleep(),
        "{mode:?}: a short receive left the next turn awake"
    );
    let mut buf = [0u8; 2048];
    let n = backend.recv(&mut buf).expect("relayed");
    assert_eq!(&buf[..n], b"one");

    // More than a batch at once: the turn that takes a full batch keeps the next awake.
    let total = batch + 8;
    for i in 0..total {
        let record = peer.seal(&(i as u32).to_be_bytes());
        peer.socket.send_to(&record, to).expect("send");
    }
    let mut full_batches = 0;
    let mut seen = 1;
    assert!(turn_until(&mut shard, |s| {
        let now = s.stats().datagrams_in;
        if now - seen == batch as u64 {
            full_batches += 1;
            assert!(
                !s.may_sleep(),
                "{mode:?}: a full batch let the next turn sleep"
            );
        }
        seen = now;
        now == 1 + total as u64
    }));
    assert!(
        full_batches >= 1,
        "{mode:?}: no turn took a full batch of the {total} datagrams"
    );
    assert!(
        turn_until(&mut shard, Shard::may_sleep),
        "{mode:?}: never idle again"
    );
}

#[test]
fn shard_sleeps_right_after_a_short_receive_mmsg() {
    sleeps_right_after_a_short_receive(IoMode::Mmsg);
}

#[test]
fn shard_sleeps_right_after_a_short_receive_uring() {
    if uring_available("shard_sleeps_right_after_a_short_receive_uring") {
        sleeps_right_after_a_short_receive(IoMode::Uring);
    }
}
