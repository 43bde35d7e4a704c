//! In-host steering: a classic BPF program for a SO_REUSEPORT group that sends each DTLS
//! record carrying one of our connection IDs to the socket of the shard its CID names.
//!
//! The kernel picks a socket of a reuseport group by a hash of the 4-tuple, so a client
//! whose NAT rebinds (a new source port) is hashed afresh and may land on a shard that does
//! not own its session. Our CIDs name their shard (QUIC-LB plaintext server ID, see
//! `dataplane::cid::ShardField`); a program attached with `SO_ATTACH_REUSEPORT_CBPF` (no
//! privileges needed) reads that shard id and returns it as the index of the socket to
//! deliver to. The kernel runs it on the UDP payload (it pulls the UDP header first) and
//! falls back to its hash when the program returns an index at or past the group's size, so
//! everything that is not one of our CID records returns `u32::MAX` ([`FALLBACK`]).
//!
//! What the program matches (every other datagram falls back to the hash):
//! - a DTLS 1.2 `tls12_cid` record (RFC 9146 §4): content type 25, version 0xfefd, epoch and
//!   sequence number, then the CID at byte 11;
//! - a DTLS 1.3 record whose unified header (RFC 9147 §4) has the C bit: first octet
//!   `001CSLEE` with C set, then the CID at byte 1;
//!
//! and in either, a CID whose first octet is the configuration's (codepoint and length, so
//! another QUIC-LB configuration's CIDs and shorter CIDs fall back), long enough to hold the
//! shard field, naming a shard below the number of shards. With encrypted CIDs
//! ([`CidSteering::any_codepoint`]) any routable codepoint (0 to 6) matches, as long as the
//! length is ours: the keys rotate to a new codepoint at run time (the previous one still
//! decoding), and the program, unchanged, steers the CIDs of both.
//!
//! The group index of a socket is the order it joined the group (its bind), and the kernel
//! fills the hole a closed socket leaves with the group's last socket. Shards must therefore
//! bind in shard order, one at a time, into a group no other process shares, and the program
//! must be attached again after any change of the group (see `docs/architecture.md`). A
//! record that still lands on the wrong shard is handed to its owner by the shards.

#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// What a program returns for a datagram it does not steer: past any group's end, so the
/// kernel falls back to its 4-tuple hash.
pub const FALLBACK: u32 = u32::MAX;

/// DTLS 1.2 content type of a record with a connection ID (RFC 9146 §4, `tls12_cid`).
const TLS12_CID: u32 = 25;
/// DTLS 1.2 on the wire.
const DTLS12_VERSION: u32 = 0xfefd;
/// Where a `tls12_cid` record's CID starts: type(1) version(2) epoch(2) sequence(6).
const CID12_OFFSET: u32 = 11;
/// Where a DTLS 1.3 unified header's CID starts: right after the first octet.
const CID13_OFFSET: u32 = 1;
/// The unified header's three fixed bits and its C bit (RFC 9147 §4: `001CSLEE`).
const UNIFIED_CID_MASK: u32 = 0xf0;
/// The fixed bits `001` with C set.
const UNIFIED_CID: u32 = 0x30;
/// A QUIC-LB CID's first octet: the codepoint in the top 3 bits, the length (less one)
/// in the low 5 (draft-ietf-quic-load-balancers-21 §3.1, §3.3).
const LENGTH_BITS: u8 = 0x1f;
/// First octets from here on carry codepoint 0b111, reserved for unroutable CIDs (draft
/// §3.1, §3.2).
const UNROUTABLE: u32 = 0xe0;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; the libc crate exports it only for
/// some targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// `SO_DETACH_REUSEPORT_BPF` (asm-generic/socket.h).
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// Where the shard id sits in our CIDs and how many shards there are: what a
/// [`SteeringProgram`] is generated from (the daemon fills it from
/// `dataplane::cid::ShardField`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidSteering {
    /// The CID length in octets (every CID the server issues has it).
    pub cid_len: u8,
    /// The octet every such CID starts with (QUIC-LB codepoint and length).
    pub first_octet: u8,
    /// Match the length bits of [`Self::first_octet`] under any routable codepoint, not
    /// only its own: for encrypted CIDs, whose keys (and codepoint) rotate while the
    /// program stays attached (draft-ietf-quic-load-balancers-21 §3.1; codepoint 0b111,
    /// reserved for unroutable CIDs, still falls back).
    pub any_codepoint: bool,
    /// The shard id's first bit, counted from the CID's most significant bit.
    pub shard_bit_offset: u32,
    /// The shard id's width in bits (1..=16).
    pub shard_bits: u32,
    /// The shard id of the group's first socket: a daemon with several listen addresses
    /// has one reuseport group per address, each holding a contiguous run of shards, and
    /// a group's program delivers shard `first_shard + i` to its socket `i`. 0 with one
    /// address.
    pub first_shard: u16,
    /// The number of shards in the group, so sockets 0..shards (shard ids outside
    /// `first_shard..first_shard + shards` fall back).
    pub shards: u16,
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Operation: class | size | mode, or class | op | source.
    pub code: u16,
    /// Conditional jumps: instructions skipped when true.
    pub jt: u8,
    /// Conditional jumps: instructions skipped when false.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

/// A generated steering program: its instructions, each with what it does in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteeringProgram {
    insns: Vec<Insn>,
    notes: Vec<&'static str>,
}

/// Jump targets of the program (all forward, as classic BPF requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Dtls13,
    Check,
    Fallback,
}

/// Where a conditional or unconditional jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    L(Label),
}

/// A small assembler: instructions with symbolic forward jumps, resolved at the end.
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<Insn>,
    notes: Vec<&'static str>,
    jumps: Vec<(usize, To, To)>,
    labels: Vec<(Label, usize)>,
}

fn code(bits: u32) -> u16 {
    // Every opcode combination of libc's constants fits in 16 bits.
    bits as u16
}

impl Asm {
    fn op(&mut self, bits: u32, k: u32, note: &'static str) {
        self.insns.push(Insn {
            code: code(bits),
            jt: 0,
            jf: 0,
            k,
        });
        self.notes.push(note);
    }

    fn jump(&mut self, bits: u32, k: u32, jt: To, jf: To, note: &'static str) {
        self.jumps.push((self.insns.len(), jt, jf));
        self.op(bits, k, note);
    }

    fn label(&mut self, label: Label) {
        self.labels.push((label, self.insns.len()));
    }

    fn finish(mut self) -> SteeringProgram {
        for &(at, jt, jf) in &self.jumps {
            let offset = |to: To| match to {
                To::Next => 0,
                To::L(label) => {
                    let (_, target) = self
                        .labels
                        .iter()
                        .find(|(l, _)| *l == label)
                        .copied()
                        .expect("every label used is placed (fixed program shape)");
                    // Forward only, and the program is a few dozen instructions long.
                    u32::try_from(target - at - 1).expect("forward jump")
                }
            };
            let insn = &mut self.insns[at];
            if u32::from(insn.code) == libc::BPF_JMP | libc::BPF_JA {
                insn.k = offset(jt);
            } else {
                insn.jt = u8::try_from(offset(jt)).expect("short program");
                insn.jf = u8::try_from(offset(jf)).expect("short program");
            }
        }
        SteeringProgram {
            insns: self.insns,
            notes: self.notes,
        }
    }

    /// A = the shard field of the CID at `cid_offset`: load the 1, 2 or 4 octets that hold
    /// it, shift it down, mask it.
    fn load_shard(&mut self, steering: &CidSteering, cid_offset: u32) {
        let start = cid_offset + steering.shard_bit_offset / 8;
        let span = steering.shard_bit_offset % 8 + steering.shard_bits;
        let (size, octets, note) = match span {
            0..=8 => (libc::BPF_B, 1, "A = the octet holding the shard id"),
            9..=16 => (libc::BPF_H, 2, "A = the 2 octets holding the shard id"),
            _ => (libc::BPF_W, 4, "A = the 4 octets holding the shard id"),
        };
        self.op(libc::BPF_LD | size | libc::BPF_ABS, start, note);
        let shift = octets * 8 - span;
        if shift > 0 {
            self.op(
                libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K,
                shift,
                "A >>= the bits after the shard id",
            );
        }
        if steering.shard_bits < octets * 8 {
            self.op(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                (1u32 << steering.shard_bits) - 1,
                "A &= the shard id's width (drops the node id's bits)",
            );
        }
    }

    /// Falls back unless the payload (its length in X) holds `octets` octets: classic BPF
    /// ends the program with 0, a valid socket index, on a load past the end, so no load
    /// may be able to go there.
    fn need(&mut self, octets: u32) {
        self.op(libc::BPF_MISC | libc::BPF_TXA, 0, "A = payload length");
        self.jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            octets,
            To::Next,
            To::L(Label::Fallback),
            "shorter than header and CID: fall back (no load past the end)",
        );
    }

    /// A = the shard id of the CID at `cid_offset`, or a fall back if the CID's first
    /// octet is not ours.
    fn cid(&mut self, steering: &CidSteering, cid_offset: u32) {
        self.op(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            cid_offset,
            "A = the CID's first octet",
        );
        if steering.any_codepoint {
            self.jump(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                UNROUTABLE,
                To::L(Label::Fallback),
                To::Next,
                "codepoint 7 (unroutable): fall back",
            );
            self.op(
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
                u32::from(LENGTH_BITS),
                "A &= the length bits (any codepoint)",
            );
            self.jump(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                u32::from(steering.first_octet & LENGTH_BITS),
                To::Next,
                To::L(Label::Fallback),
                "not our length: fall back",
            );
        } else {
            self.jump(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                u32::from(steering.first_octet),
                To::Next,
                To::L(Label::Fallback),
                "not our codepoint and length: fall back",
            );
        }
        self.load_shard(steering, cid_offset);
    }
}

impl CidSteering {
    /// Octets a record needs for its CID at `cid_offset` to be read: the whole CID, and
    /// the octets the shard field's load covers.
    fn need(&self, cid_offset: u32) -> u32 {
        let span = self.shard_bit_offset % 8 + self.shard_bits;
        let load = match span {
            0..=8 => 1,
            9..=16 => 2,
            _ => 4,
        };
        let field_end = cid_offset + self.shard_bit_offset / 8 + load;
        (cid_offset + u32::from(self.cid_len)).max(field_end)
    }
}

impl SteeringProgram {
    /// The program for `steering`: see the module docs for what it matches.
    pub fn new(steering: &CidSteering) -> Self {
        let mut a = Asm::default();
        a.op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_LEN,
            0,
            "A = UDP payload length",
        );
        a.op(libc::BPF_MISC | libc::BPF_TAX, 0, "X = A");
        a.jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            To::L(Label::Fallback),
            To::Next,
            "empty: fall back",
        );
        a.op(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            0,
            "A = first octet",
        );
        a.jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            TLS12_CID,
            To::Next,
            To::L(Label::Dtls13),
            "content type tls12_cid (25)? else try 1.3",
        );
        // DTLS 1.2 tls12_cid record.
        a.need(steering.need(CID12_OFFSET));
        a.op(
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            1,
            "A = record version",
        );
        a.jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            DTLS12_VERSION,
            To::Next,
            To::L(Label::Fallback),
            "not DTLS 1.2 (0xfefd): fall back",
        );
        a.cid(steering, CID12_OFFSET);
        a.jump(
            libc::BPF_JMP | libc::BPF_JA,
            0,
            To::L(Label::Check),
            To::Next,
            "to the range check",
        );
        // DTLS 1.3 unified header with the C bit.
        a.label(Label::Dtls13);
        a.op(
            libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
            UNIFIED_CID_MASK,
            "A = first octet's fixed bits and C bit",
        );
        a.jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            UNIFIED_CID,
            To::Next,
            To::L(Label::Fallback),
            "not 001C with C set: fall back",
        );
        a.need(steering.need(CID13_OFFSET));
        a.cid(steering, CID13_OFFSET);
        a.label(Label::Check);
        if steering.first_shard > 0 {
            // Ids below the group's first wrap to past any group's end (32-bit ALU).
            a.op(
                libc::BPF_ALU | libc::BPF_SUB | libc::BPF_K,
                u32::from(steering.first_shard),
                "A -= the group's first shard (ids below it wrap past the end)",
            );
        }
        a.jump(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            u32::from(steering.shards),
            To::L(Label::Fallback),
            To::Next,
            "shard id past the group's shards: fall back",
        );
        a.op(
            libc::BPF_RET | libc::BPF_A,
            0,
            "deliver to socket A (the shard's)",
        );
        a.label(Label::Fallback);
        a.op(
            libc::BPF_RET | libc::BPF_K,
            FALLBACK,
            "out of range: the kernel's 4-tuple hash picks",
        );
        a.finish()
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// Attaches the program to the reuseport group `socket` belongs to (any bound member;
    /// it replaces the group's program). Needs no privileges.
    ///
    /// # Errors
    /// The kernel refused the program or the option (no SO_REUSEPORT on the socket, or a
    /// kernel without reuseport programs: before Linux 4.5).
    pub fn attach(&self, socket: &UdpSocket) -> io::Result<()> {
        let mut filter: Vec<libc::sock_filter> = self
            .insns
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let prog = libc::sock_fprog {
            // A few dozen instructions (fixed shape).
            len: u16::try_from(filter.len()).map_err(|_| io::ErrorKind::InvalidInput)?,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: `prog` points at `filter`, which outlives the call (the kernel copies the
        // program), and the length passed is `prog`'s size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&raw const prog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Removes the reuseport group's program, back to the kernel's hash for every datagram.
///
/// # Errors
/// The kernel refused (`ENOENT`: no program was attached).
pub fn detach_steering(socket: &UdpSocket) -> io::Result<()> {
    crate::sys::setsockopt_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_DETACH_REUSEPORT_BPF,
        0,
    )
}

/// The listing: one line per instruction, its index, opcode, jumps, constant and meaning.
impl fmt::Display for SteeringProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (i, note)) in self.insns.iter().zip(&self.notes).enumerate() {
            writeln!(
                f,
                "{n:>3}  {{ 0x{:02x}, {:>2}, {:>2}, 0x{:08x} }}  {note}",
                i.code, i.jt, i.jf, i.k
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "steer_tests.rs"]
mod tests;
