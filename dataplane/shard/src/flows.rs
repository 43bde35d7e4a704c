//! Datagrams a turn sends on upstream flows, staged and handed to the driver in runs.
//!
//! Each session (and, in connect mode, each source waiting for its handshake) has its own
//! upstream flow: the driver's socket connected to the backend (serve) or to the DTLS server
//! (connect). The shard core never sends on it: what it has for a flow (plaintext for the
//! backend, records and handshake datagrams for the server) is staged here, one copy, or
//! sealed here in place. At the end of the receive batch the driver drains the stage
//! ([`FlowTx::plan`], then every send at once through `ShardCore::flush_flows_together`):
//! each flow's datagrams in order, equal-size runs of two or more as one UDP GSO send
//! (`UDP_SEGMENT`, where the kernel accepts it), the rest one send each, and all of them in
//! one io_uring submission (or one `sendmmsg` per flow).
//! Opening a record used to end in one `send` per datagram; on loopback that per-datagram
//! trip through the stack was about half of a shard's CPU. Different flows never share a
//! send.
//!
//! Bounded: [`STAGING_BYTES`] and [`MAX_ENTRIES`] datagrams, allocated once. The driver
//! drains before a datagram could overflow it ([`FlowTx::needs_flush`]); a push that still
//! does not fit fails and the caller counts the datagram as an upstream send error.
//!
//! A serve-mode session may put a header in front of what it sends to the backend (PROXY
//! protocol v2, Cloudflare's Simple Proxy Protocol: see [`UpstreamPrefix`]). Control builds
//! it once, when it installs the session; the shard copies it into the stage together with
//! the plaintext ([`FlowTx::push_prefixed`]), the same single copy a datagram gets anyway,
//! so a prefixed datagram costs no allocation and no extra send, and equal-size datagrams
//! still leave as one GSO run. A session without one takes the plain path. The reserve
//! for one received datagram counts its plaintext, not the prefixes of its records: a
//! datagram of many tiny records under a prefix on every datagram can fill the stage, and
//! what does not fit is dropped and counted like any datagram that does not fit.

use dtls_io::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS};

/// Bytes staged per drain.
pub(crate) const STAGING_BYTES: usize = 256 * 1024;
/// Datagrams staged per drain.
pub(crate) const MAX_ENTRIES: usize = 8192;
/// Room kept for one more received datagram: its largest output (a 64 KiB datagram) and
/// most records (each at least 29 bytes on the wire).
const ONE_DATAGRAM_BYTES: usize = 65_536;
const ONE_DATAGRAM_RECORDS: usize = 65_536 / 29 + 1;

/// Bytes a session puts in front of the plaintext it sends on its upstream flow (serve
/// mode), built by control when it installs the session; at most [`MAX_PREFIX_LEN`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamPrefix {
    /// Plaintext goes out as it is (the default).
    #[default]
    None,
    /// In front of the first datagram only; then the session's prefix becomes `None`.
    First(Box<[u8]>),
    /// In front of every datagram.
    Every(Box<[u8]>),
}

/// Longest [`UpstreamPrefix`] a session takes (a longer one is refused at installation).
pub const MAX_PREFIX_LEN: usize = 1024;

impl UpstreamPrefix {
    /// The bytes put in front of the next datagram (empty for `None`).
    pub fn bytes(&self) -> &[u8] {
        match self {
            UpstreamPrefix::None => &[],
            UpstreamPrefix::First(b) | UpstreamPrefix::Every(b) => b,
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, UpstreamPrefix::None)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The flow's token ([`FlowRef::to_token`](crate::FlowRef::to_token)).
    flow: usize,
    start: usize,
    len: usize,
}

/// One send the driver makes: `payload` on flow `flow`, cut into `segment`-byte datagrams
/// when `segment` is set (UDP GSO), else one datagram.
#[derive(Debug)]
pub struct FlowSend<'a> {
    /// The flow's token.
    pub flow: usize,
    /// The bytes: one datagram, or a GSO run.
    pub payload: &'a [u8],
    /// GSO segment size of a run of two or more datagrams.
    pub segment: Option<u16>,
    /// Datagrams in `payload`.
    pub datagrams: usize,
}

/// One send of a [`FlowTx::plan`]: bytes in the stage (one datagram) or in `run` (a GSO
/// run put together there).
#[derive(Debug, Clone, Copy)]
struct Planned {
    flow: usize,
    in_run: bool,
    start: usize,
    len: usize,
    segment: Option<u16>,
    datagrams: usize,
}

/// The datagrams staged for upstream flows.
#[derive(Debug)]
pub struct FlowTx {
    staging: Vec<u8>,
    entries: Vec<Entry>,
    /// Where the GSO runs of a plan are put together, one after the other.
    run: Vec<u8>,
    planned: Vec<Planned>,
    gso: bool,
}

impl FlowTx {
    /// An empty stage; `gso`: the driver's sockets accept UDP GSO.
    pub fn new(gso: bool) -> Self {
        Self {
            staging: Vec::with_capacity(STAGING_BYTES),
            entries: Vec::with_capacity(MAX_ENTRIES),
            run: Vec::with_capacity(STAGING_BYTES),
            planned: Vec::with_capacity(256),
            gso,
        }
    }

    /// True when handling one more received datagram could overflow the stage.
    pub fn needs_flush(&self) -> bool {
        self.staging.len() + ONE_DATAGRAM_BYTES > STAGING_BYTES
            || self.entries.len() + ONE_DATAGRAM_RECORDS > MAX_ENTRIES
    }

    /// Datagrams staged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stages a copy of `datagram` for `flow`. False when it does not fit.
    pub(crate) fn push(&mut self, flow: usize, datagram: &[u8]) -> bool {
        let len = datagram.len();
        if self.entries.len() >= MAX_ENTRIES || self.staging.len() + len > STAGING_BYTES {
            return false;
        }
        // An empty datagram is a datagram too (UDP carries it): staged, sent alone.
        let start = self.staging.len();
        self.staging.extend_from_slice(datagram);
        self.entries.push(Entry { flow, start, len });
        true
    }

    /// Stages `prefix` followed by `datagram` as one datagram for `flow`. False when it
    /// does not fit.
    pub(crate) fn push_prefixed(&mut self, flow: usize, prefix: &[u8], datagram: &[u8]) -> bool {
        let len = prefix.len() + datagram.len();
        if self.entries.len() >= MAX_ENTRIES || self.staging.len() + len > STAGING_BYTES {
            return false;
        }
        let start = self.staging.len();
        self.staging.extend_from_slice(prefix);
        self.staging.extend_from_slice(datagram);
        self.entries.push(Entry { flow, start, len });
        true
    }

    /// Stages a datagram for `flow` written in place: `write` gets `max_len` bytes and
    /// returns how many it used (0: nothing is staged). None when it does not fit.
    pub(crate) fn push_with(
        &mut self,
        flow: usize,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<usize> {
        if self.entries.len() >= MAX_ENTRIES || self.staging.len() + max_len > STAGING_BYTES {
            return None;
        }
        let start = self.staging.len();
        self.staging.resize(start + max_len, 0);
        let len = write(&mut self.staging[start..]).min(max_len);
        self.staging.truncate(start + len);
        if len > 0 {
            self.entries.push(Entry { flow, start, len });
        }
        Some(len)
    }

    /// The staged datagrams of each flow in order, as sends (`each`), then an empty stage.
    pub fn drain(&mut self, mut each: impl FnMut(FlowSend<'_>)) {
        self.plan();
        for send in self.planned() {
            each(send);
        }
        self.clear();
    }

    /// Cuts what is staged into sends, kept until [`Self::clear`]: each flow's datagrams in
    /// order, equal-size runs (the last may be shorter, as GSO allows) as one send each, the
    /// rest one send per datagram. Every send's bytes stay where they are until the stage is
    /// cleared, so a driver can hand all of them to the kernel in one submission
    /// ([`Self::planned`]).
    pub fn plan(&mut self) {
        self.planned.clear();
        self.run.clear();
        match self.entries[..] {
            [] => return,
            // One datagram staged (a quiet turn): one send in place, nothing to order or join.
            [e] => {
                self.planned.push(Planned {
                    flow: e.flow,
                    in_run: false,
                    start: e.start,
                    len: e.len,
                    segment: None,
                    datagrams: 1,
                });
                return;
            }
            _ => {}
        }
        // Stable by flow, in staging order within a flow.
        self.entries.sort_unstable_by_key(|e| (e.flow, e.start));
        let mut i = 0;
        while i < self.entries.len() {
            let flow = self.entries[i].flow;
            let mut j = i + 1;
            while j < self.entries.len() && self.entries[j].flow == flow {
                j += 1;
            }
            self.plan_flow(i, j);
            i = j;
        }
    }

    /// The sends of the last [`Self::plan`], in order (flows in token order).
    pub fn planned(&self) -> impl Iterator<Item = FlowSend<'_>> + '_ {
        self.planned.iter().map(|p| {
            let from = if p.in_run { &self.run } else { &self.staging };
            FlowSend {
                flow: p.flow,
                payload: from.get(p.start..p.start + p.len).unwrap_or(&[]),
                segment: p.segment,
                datagrams: p.datagrams,
            }
        })
    }

    /// One flow's entries `i..j`; a run of two or more is copied into `run` (which only
    /// grows during a plan: its capacity is the stage's, so nothing moves).
    fn plan_flow(&mut self, mut i: usize, j: usize) {
        let Self {
            staging,
            entries,
            run,
            planned,
            gso,
        } = self;
        while i < j {
            let size = entries[i].len;
            let mut k = i + 1;
            let mut total = size;
            if *gso && size > 0 {
                while k < j
                    && k - i < MAX_GSO_SEGMENTS
                    && entries[k].len > 0
                    && entries[k].len <= size
                    && total + entries[k].len <= MAX_GSO_BYTES
                {
                    total += entries[k].len;
                    k += 1;
                    if entries[k - 1].len < size {
                        break;
                    }
                }
            }
            if k - i >= 2 {
                let start = run.len();
                for e in &entries[i..k] {
                    run.extend_from_slice(staging.get(e.start..e.start + e.len).unwrap_or(&[]));
                }
                planned.push(Planned {
                    flow: entries[i].flow,
                    in_run: true,
                    start,
                    len: run.len() - start,
                    segment: Some(u16::try_from(size).unwrap_or(u16::MAX)),
                    datagrams: k - i,
                });
            } else {
                planned.push(Planned {
                    flow: entries[i].flow,
                    in_run: false,
                    start: entries[i].start,
                    len: entries[i].len,
                    segment: None,
                    datagrams: 1,
                });
            }
            i = k;
        }
    }

    /// Moves what is staged for flow `from` to flow `to` (a waiting source's flow that
    /// became its session's), keeping the order.
    pub(crate) fn retarget(&mut self, from: usize, to: usize) {
        for e in self.entries.iter_mut().filter(|e| e.flow == from) {
            e.flow = to;
        }
    }

    /// Drops everything staged (and the sends of the last [`Self::plan`]).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.staging.clear();
        self.planned.clear();
        self.run.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(tx: &mut FlowTx) -> Vec<(usize, Vec<u8>, Option<u16>, usize)> {
        let mut sends = Vec::new();
        tx.drain(|s| sends.push((s.flow, s.payload.to_vec(), s.segment, s.datagrams)));
        sends
    }

    #[test]
    fn each_flow_in_order_with_equal_size_runs() {
        let mut tx = FlowTx::new(true);
        assert!(tx.push(7, b"aaaa"));
        assert!(tx.push(3, b"x"));
        assert!(tx.push(7, b"bbbb"));
        assert!(tx.push(7, b"cc"));
        assert!(tx.push(7, b"dddd"));
        let sends = drained(&mut tx);
        assert_eq!(
            sends,
            vec![
                (3, b"x".to_vec(), None, 1),
                (7, b"aaaabbbbcc".to_vec(), Some(4), 3),
                (7, b"dddd".to_vec(), None, 1),
            ]
        );
        assert!(tx.is_empty());
        assert!(drained(&mut tx).is_empty());
    }

    #[test]
    fn without_gso_one_send_per_datagram_and_bounded() {
        let mut tx = FlowTx::new(false);
        assert!(tx.push(1, b"aa"));
        assert!(tx.push(1, b"bb"));
        assert_eq!(drained(&mut tx).len(), 2);
        let big = vec![0u8; STAGING_BYTES];
        assert!(tx.push(1, &big));
        assert!(
            !tx.push(1, b"over"),
            "the stage holds at most STAGING_BYTES"
        );
        assert!(tx.needs_flush());
        // A write that uses nothing stages nothing.
        tx.clear();
        assert_eq!(tx.push_with(2, 10, |_| 0), Some(0));
        assert!(tx.is_empty());
    }

    #[test]
    fn prefixed_datagrams_are_one_datagram_each_and_still_form_gso_runs() {
        let mut tx = FlowTx::new(true);
        assert!(tx.push_prefixed(5, b"HDR", b"ab"));
        assert!(tx.push_prefixed(5, b"HDR", b"cd"));
        assert!(tx.push_prefixed(5, b"", b"e"));
        assert_eq!(
            drained(&mut tx),
            vec![(5, b"HDRabHDRcde".to_vec(), Some(5), 3)]
        );
        // Bounded like any push: prefix and datagram together.
        let big = vec![0u8; STAGING_BYTES - 2];
        assert!(!tx.push_prefixed(1, b"xyz", &big));
        assert!(tx.push_prefixed(1, b"xy", &big));
        assert!(!tx.push_prefixed(1, b"x", b""));
    }

    #[test]
    fn prefix_bytes_by_kind() {
        assert!(UpstreamPrefix::None.is_none());
        assert_eq!(UpstreamPrefix::None.bytes(), b"");
        assert_eq!(UpstreamPrefix::First(Box::from(&b"p"[..])).bytes(), b"p");
        assert_eq!(UpstreamPrefix::Every(Box::from(&b"q"[..])).bytes(), b"q");
        assert!(!UpstreamPrefix::Every(Box::from(&b"q"[..])).is_none());
    }
}
