//! The daemon's path minus its sockets, for tests that drive it: the sans-IO shard core
//! (serve mode, its fair stage, the shard → control queue) and the control loop on one
//! virtual clock, `Transmit` commands back into the core's transmit batch.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use control::Config;
use dtls_runtime::{ControlThread, RuntimeConfig};
use dtls_shard::{
    Effects, OpenFlow, RelayMode, ShardConfig, ShardCore, ShardCounters, ShardQueues,
};

use super::test_wall;

/// Upstream flows are numbers here (a legitimate client's session opens one).
pub struct Flows(pub u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: SocketAddr) -> io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

/// The shard core and the control loop with their queues, one virtual clock.
pub struct Daemon {
    pub core: ShardCore<u32>,
    pub fx: Effects,
    pub flows: Flows,
    pub ctl: ControlThread,
    pub queues: Arc<ShardQueues>,
    pub counters: ShardCounters,
    /// A datagram buffer for the core (it opens records in place).
    rx: Vec<u8>,
}

impl Daemon {
    /// `server` in serve mode on one shard, with the daemon's queue sizes.
    pub fn new(server: Config, now: Instant) -> Self {
        Self::with_runtime(server, now, RuntimeConfig::default())
    }

    /// [`Daemon::new`] with the control loop's own settings.
    pub fn with_runtime(server: Config, now: Instant, runtime: RuntimeConfig) -> Self {
        let (ctl, queues) = super::control_thread_with(server, now, 4096, runtime);
        let config = ShardConfig::with_mode(RelayMode::Serve, "127.0.0.1:9".parse().expect("addr"));
        Self {
            core: ShardCore::new(Arc::clone(&queues), config, 3, &[3; 32]),
            fx: Effects::new(1024, 1472, false),
            flows: Flows(0),
            ctl,
            queues,
            counters: ShardCounters::default(),
            rx: vec![0; 4096],
        }
    }

    /// A datagram from `from` on the shard socket.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let rx = &mut self.rx[..datagram.len()];
        rx.copy_from_slice(datagram);
        self.core
            .handle_datagram(now, from, rx, &mut self.fx, &mut self.flows);
    }

    /// Datagrams waiting in the shard's fair stage.
    pub fn staged(&mut self) -> u64 {
        self.core.publish(&self.counters);
        self.counters.snapshot().handshake_stage_bytes
    }

    /// One turn: the shard hands its stage to control, control runs, the shard runs
    /// control's commands; `sent` sees each datagram the shard then sends.
    pub fn turn(&mut self, now: Instant, mut sent: impl FnMut(SocketAddr, &[u8])) {
        self.core.pump();
        self.ctl.run_turn(now, test_wall());
        while let Some(command) = self.queues.poll_command() {
            self.core
                .handle_command(now, command, &mut self.fx, &mut self.flows);
        }
        self.core.end_commands(&mut self.fx);
        for s in self.fx.net.sends() {
            sent(s.destination, s.payload);
        }
        self.fx.net.clear();
    }

    /// Sends what the shard staged for upstream flows (the backend); returns how many
    /// datagrams went.
    pub fn flush_upstream(&mut self) -> u64 {
        let mut datagrams = 0;
        self.core.flush_flows(&mut self.fx, |_, payload, segment| {
            datagrams += segment.map_or(1, |size| payload.len().div_ceil(usize::from(size)) as u64);
            Ok(payload.len())
        });
        datagrams
    }

    /// The shard's counters now.
    pub fn shard_stats(&mut self) -> dtls_shard::ShardStats {
        self.core.publish(&self.counters);
        self.counters.snapshot()
    }
}
