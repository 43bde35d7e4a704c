//! What the host is tuned for: the `dtlsd` settings that the checks and the plan depend on,
//! from a configuration file (validated as `dtlsd check-config` validates it) or the
//! daemon's defaults, with command-line overrides.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use dtlsd::config::{self, Config, IoMode};

use crate::cpus::Topology;

/// The daemon settings a host is checked and planned against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `serve` or `connect`.
    pub role: &'static str,
    /// The `io` key.
    pub io: IoMode,
    /// The `interface` key (AF_XDP), or the interface given with `--interface`.
    pub interface: Option<String>,
    /// Shards (the `shards` key, or dtlsd's default for this host's CPUs).
    pub shards: usize,
    /// Whether `shards` came from the configuration or a flag (not a default).
    pub shards_given: bool,
    /// Handshake workers (the `control_threads` key, or dtlsd's default).
    pub control_threads: usize,
    /// Whether `control_threads` came from the configuration (not a default).
    pub control_threads_given: bool,
    /// The `cpus` key.
    pub cpus: Option<Vec<usize>>,
    /// The UDP port DTLS arrives on (the first listen address's), if known.
    pub port: Option<u16>,
    /// SO_RCVBUF each shard socket asks for, bytes (the config's `socket_recv_buffer`, else
    /// `dtls_io::SocketConfig`'s default).
    pub recv_buffer: u64,
    /// SO_SNDBUF each shard socket asks for, bytes.
    pub send_buffer: u64,
    /// UMEM bytes per AF_XDP shard (`dtls_io::XdpConfig`'s frames × frame size).
    pub umem_bytes: u64,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--shards`.
    pub shards: Option<usize>,
    /// `--interface`.
    pub interface: Option<String>,
}

impl Target {
    /// dtlsd's defaults on a host with `topology` (`serve`, `io = "auto"`).
    pub fn defaults(topology: &Topology) -> Self {
        let sockets = dtls_io::SocketConfig::default();
        let xdp = dtls_io::XdpConfig::new(
            "",
            dtls_io::XdpFilter {
                port: 0,
                v4: None,
                v6: None,
            },
        );
        let cores = topology.online.len().max(1);
        let shards = default_shards(cores);
        Self {
            role: "serve",
            io: IoMode::Auto,
            interface: None,
            shards,
            shards_given: false,
            control_threads: default_control_threads(cores, shards),
            control_threads_given: false,
            cpus: None,
            port: None,
            recv_buffer: sockets.recv_buffer as u64,
            send_buffer: sockets.send_buffer as u64,
            umem_bytes: u64::from(xdp.frames) * u64::from(xdp.frame_size),
        }
    }

    /// The settings of configuration file `path` (validated as `dtlsd check-config` does,
    /// without loading its PEM files), over the defaults.
    ///
    /// # Errors
    /// The file does not load or validate; the message lists every problem.
    pub fn from_config(path: &Path, topology: &Topology) -> Result<Self> {
        let raw = config::raw::load_file(path).map_err(|e| anyhow!("{e}"))?;
        let config = config::validate(raw)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("{} does not validate", path.display()))?;
        let mut target = Self::defaults(topology);
        let (role, tuning, port) = match &config {
            Config::Serve(s) => ("serve", &s.tuning, s.listen.first().map(|a| a.port())),
            Config::Connect(c) => ("connect", &c.tuning, Some(c.listen.port())),
        };
        target.role = role;
        target.io = tuning.io;
        target.interface = tuning.interface.clone();
        target.cpus = tuning.cpus.clone();
        target.port = port;
        // The buffers the shard sockets will ask for (`socket_recv_buffer`,
        // `socket_send_buffer`): the rmem/wmem and udp_mem checks compare against these.
        target.recv_buffer = tuning.data_io.recv_buffer as u64;
        target.send_buffer = tuning.data_io.send_buffer as u64;
        let cores = topology.online.len().max(1);
        if let Some(n) = tuning.shards {
            target.shards = n;
            target.shards_given = true;
        } else if let Some(cpus) = &tuning.cpus {
            target.shards = cpus.len();
            target.shards_given = true;
        }
        target.control_threads_given = tuning.control_threads.is_some();
        target.control_threads = tuning
            .control_threads
            .unwrap_or_else(|| default_control_threads(cores, target.shards));
        Ok(target)
    }

    /// Applies command-line overrides.
    pub fn with(mut self, overrides: &Overrides, topology: &Topology) -> Self {
        if let Some(n) = overrides.shards {
            self.shards = n.max(1);
            self.shards_given = true;
            if !self.control_threads_given {
                self.control_threads = default_control_threads(topology.online.len(), self.shards);
            }
        }
        if let Some(i) = &overrides.interface {
            self.interface = Some(i.clone());
        }
        self
    }

    /// The `io` key as written in a configuration file.
    pub fn io_name(&self) -> &'static str {
        match self.io {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Mmsg => "mmsg",
            IoMode::Xdp => "xdp",
        }
    }
}

/// dtlsd's default shard count on `cores` CPUs: one per core beyond the first (the
/// control thread's), at least one (as `dtlsd::daemon` computes it from its affinity mask).
pub fn default_shards(cores: usize) -> usize {
    if cores <= 2 { 1 } else { cores - 1 }
}

/// dtlsd's default handshake workers: the cores the shards leave, between 1 and 8.
pub fn default_control_threads(cores: usize, shards: usize) -> usize {
    cores.saturating_sub(shards).clamp(1, 8)
}
