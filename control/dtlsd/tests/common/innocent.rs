//! An innocent session beside an attack: numbered datagrams, each sent once and never
//! resent, whose echoes must all come back, each exactly once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::Client;

pub struct Innocent {
    pub client: Client,
    /// Datagrams sent (each once).
    pub sent: usize,
    /// Echoes seen (each must come once).
    pub echoed: HashSet<Vec<u8>>,
}

impl Innocent {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            sent: 0,
            echoed: HashSet::new(),
        }
    }

    /// One datagram, sent once; its echo must come back within `within`, and no echo may
    /// come twice. `log` says what the daemon logged, for the failure message.
    pub fn echo(&mut self, within: Duration, log: impl Fn() -> String) {
        let payload = format!("innocent {}", self.sent).into_bytes();
        self.sent += 1;
        self.client.send_app(&payload);
        let deadline = Instant::now() + within;
        loop {
            let opened = self.client.turn(Duration::from_millis(20));
            for p in opened.app {
                assert!(
                    self.echoed.insert(p.clone()),
                    "echoed twice: {:?}",
                    String::from_utf8_lossy(&p)
                );
            }
            if self.echoed.contains(&payload) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "innocent datagram {} lost: {}",
                self.sent - 1,
                log()
            );
        }
    }

    /// Every datagram sent came back once.
    pub fn assert_all_echoed(&self) {
        assert_eq!(
            self.echoed.len(),
            self.sent,
            "every innocent datagram, once"
        );
    }
}
