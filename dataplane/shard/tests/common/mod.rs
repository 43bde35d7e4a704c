//! Helpers shared by the shard's loopback tests: peers with their own record state, an echo
//! backend, bounded turn loops. Every wait is bounded by [`DEADLINE`].
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::record::{
    Aead, ContentType, DTLS_1_2, OpenError, Opener, RecordKey, ReplayWindow, Sealer,
};
use dtls_io::{IoConfig, IoMode, SocketConfig, UdpIo};
use dtls_shard::{
    HeartbeatPolicy, ReadKeys, SessionId, Shard, ShardCommand, ShardConfig, ShardQueues,
    UpstreamPrefix, WriteKeys,
};

/// Every test gives up after this long; nothing can hang.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Whether io_uring can be set up here. Hosts that forbid it (seccomp, sysctl) test mmsg only
/// and say so on stderr; `DTLS_IO_REQUIRE_URING=1` makes that a failure (as on our CI host).
pub fn uring_available(test: &str) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let cfg = IoConfig {
        mode: IoMode::Uring,
        ..IoConfig::default()
    };
    match UdpIo::new(s, &cfg) {
        Ok(_) => true,
        Err(dtls_io::Error::Uring(reason)) => {
            assert!(
                std::env::var_os("DTLS_IO_REQUIRE_URING").is_none(),
                "{test}: io_uring required but unavailable: {reason}"
            );
            eprintln!("{test}: io_uring unavailable here ({reason}); skipping the io_uring half");
            false
        }
        Err(e) => panic!("{test}: unexpected setup error {e}"),
    }
}

/// The backends to test here: mmsg always, io_uring when available.
pub fn modes(test: &str) -> Vec<IoMode> {
    let mut m = vec![IoMode::Mmsg];
    if uring_available(test) {
        m.push(IoMode::Uring);
    }
    m
}

pub fn key(seed: u8) -> RecordKey {
    RecordKey::new(Aead::Aes128Gcm, &[seed; 16], &[seed ^ 0x5a; 4]).expect("valid key sizes")
}

/// One DTLS peer after its handshake: its socket and both directions' record state. The
/// matching shard-side keys come from [`Peer::install`].
pub struct Peer {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
    pub sealer: Sealer,
    pub opener: Opener,
    seed: u8,
}

impl Peer {
    /// Peer number `n` (keys derived from `n`), bound on loopback with a read timeout.
    pub fn new(n: u8) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let seed = n.wrapping_mul(2);
        Self {
            socket,
            addr,
            // Client write = shard read (seed), shard write = client read (seed + 1).
            sealer: Sealer::new(1, key(seed), 0).expect("sealer"),
            opener: Opener::new(1, key(seed.wrapping_add(1)), ReplayWindow::new(128)),
            seed,
        }
    }

    /// The handle control gives this peer's session.
    pub fn handle(&self) -> SessionId {
        SessionId::new(u64::from(self.seed))
    }

    /// The command that installs this peer's session in a shard.
    pub fn install(&self) -> ShardCommand {
        ShardCommand::InstallKeys {
            session: self.handle(),
            peer: self.addr,
            read: ReadKeys {
                epoch: 1,
                key: key(self.seed),
                replay_window: 128,
            },
            write: WriteKeys {
                epoch: 1,
                key: key(self.seed.wrapping_add(1)),
                next_seq: 0,
            },
            heartbeat: HeartbeatPolicy {
                answer: true,
                probe: true,
            },
            cid: Vec::new(),
            peer_cid: Vec::new(),
            rrc: false,
            upstream: UpstreamPrefix::None,
        }
    }

    /// One sealed record of `content_type` carrying `plaintext`.
    pub fn seal_as(&mut self, content_type: ContentType, plaintext: &[u8]) -> Vec<u8> {
        seal_record(&mut self.sealer, content_type, plaintext)
    }

    /// One sealed application-data record.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_as(ContentType::ApplicationData, plaintext)
    }

    /// Opens one record the shard sent.
    pub fn open(&mut self, mut record: Vec<u8>) -> Result<(ContentType, Vec<u8>), OpenError> {
        let opened = self.opener.open(&mut record)?;
        Ok((opened.content_type, opened.plaintext.to_vec()))
    }

    /// One datagram if one arrives within the read timeout.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0; 65_536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(_) => None,
        }
    }
}

/// One DTLS 1.2 record of `content_type` carrying `plaintext`, sealed by `sealer`.
pub fn seal_record(sealer: &mut Sealer, content_type: ContentType, plaintext: &[u8]) -> Vec<u8> {
    let mut record = vec![0; sealer.record_len(plaintext.len())];
    let at = sealer.plaintext_offset();
    record[at..at + plaintext.len()].copy_from_slice(plaintext);
    let n = sealer
        .seal(content_type, DTLS_1_2, &mut record, plaintext.len())
        .expect("seal");
    record.truncate(n);
    record
}

/// A UDP echo server on a thread until the flag is set.
pub struct EchoBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl EchoBackend {
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0; 65_536];
            let mut echoed = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && socket.send_to(&buf[..n], from).is_ok()
                {
                    echoed += 1;
                }
            }
            echoed
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns how many datagrams it echoed.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("echo thread"))
            .unwrap_or(0)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn config(backend: SocketAddr, mode: IoMode) -> ShardConfig {
    let mut cfg = ShardConfig::new(backend);
    cfg.io.mode = mode;
    cfg.max_sessions = 64;
    cfg
}

/// A shard on an ephemeral loopback port.
pub fn shard(cfg: ShardConfig, queues: Arc<ShardQueues>) -> Shard {
    let socket = dtls_io::bind_udp(
        "127.0.0.1:0".parse().expect("literal"),
        &SocketConfig::default(),
    )
    .expect("bind shard")
    .socket;
    Shard::new(socket, queues, cfg).expect("shard backend available")
}

/// Runs turns until `done` holds or the deadline passes; returns whether it held.
pub fn turn_until(shard: &mut Shard, mut done: impl FnMut(&Shard) -> bool) -> bool {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        shard.run_turn(Instant::now()).expect("turn");
        if done(shard) {
            return true;
        }
    }
    false
}

/// Runs turns and polls `peer` until it receives a datagram or the deadline passes.
pub fn turn_until_recv(shard: &mut Shard, peer: &Peer) -> Option<Vec<u8>> {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        shard.run_turn(Instant::now()).expect("turn");
        peer.socket
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        if let Some(d) = peer.try_recv() {
            return Some(d);
        }
    }
    None
}
