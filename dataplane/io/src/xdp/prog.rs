//! The XDP program that sends our UDP datagrams to the AF_XDP sockets, and the `bpf()` calls
//! that load and attach it.
//!
//! **Hand-assembled, not compiled.** The program is at most 45 eBPF instructions built here
//! in Rust from the listen address and port ([`XdpFilter`]) at start-up, so the address and
//! port are immediates, not map lookups. Compiling it with clang would add a build-time
//! dependency (clang/llvm with the BPF target) to a crate that otherwise builds with cargo
//! alone, plus an ELF/BTF loader at run time; for a program this small the assembler below is
//! shorter than either, its every branch is exercised by the veth test, and the kernel's
//! verifier checks it on every load.
//!
//! What it does, per frame (`xdp_md` in r1):
//! - Ethernet type IPv4 (0x0800): redirect only when the IPv4 header has no options
//!   (IHL 5), is not a fragment (MF clear, offset 0), carries UDP, and the destination
//!   address (unless the filter's is unspecified) and port are ours;
//! - Ethernet type IPv6 (0x86DD): redirect only when the next header is UDP directly (no
//!   extension headers) and the destination address (unless unspecified) and port are ours;
//! - everything else passes to the kernel: ARP, IPv6 neighbour discovery, ICMP (including
//!   "fragmentation needed" / "packet too big", which the kernel uses for the path MTU of the
//!   socket still bound to the address), other protocols and ports, IP fragments, IPv4
//!   options, IPv6 extension headers, VLAN-tagged frames (0x8100/0x88A8), frames too short to
//!   hold the headers.
//!
//! The redirect is `bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS)`: a queue without a
//! socket in the map passes the frame to the kernel instead of dropping it.
//!
//! Attached with a `bpf_link` (`BPF_LINK_CREATE`, attach type `BPF_XDP`): the link is a file
//! descriptor, so the program leaves the interface when the process exits, however it exits,
//! and an attach fails (EBUSY) instead of replacing a program someone else attached.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::XdpUnavailable;

/// What the program redirects: UDP to `port` at these addresses. `None` leaves that family to
/// the kernel; an unspecified address (`0.0.0.0`, `::`) matches any destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpFilter {
    /// The UDP destination port.
    pub port: u16,
    /// IPv4 destination, if IPv4 is redirected.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 destination, if IPv6 is redirected.
    pub v6: Option<Ipv6Addr>,
}

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers, offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcode pieces (linux/bpf_common.h, linux/bpf.h).
const LDX: u8 = 0x01;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const LD: u8 = 0x00;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JGT: u8 = 0x20;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const JSET: u8 = 0x40;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load that names a map by file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_FUNC_redirect_map`.
const FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`.
const XDP_PASS: i32 = 2;
/// Offsets in `struct xdp_md`.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE: i16 = 16;

/// A jump target inside [`Asm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Pass,
    V4,
    V6,
    Redirect,
}

/// A tiny assembler: instructions, with jumps to labels resolved at the end.
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<BpfInsn>,
    fixups: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(BpfInsn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        });
    }
    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.raw(ALU64 | MOV | X, dst, src, 0, 0);
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.raw(ALU64 | MOV | K, dst, 0, 0, imm);
    }
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.raw(ALU64 | ADD | K, dst, 0, 0, imm);
    }
    fn load(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.raw(LDX | MEM | size, dst, src, off, 0);
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.raw(code, dst, src, 0, imm);
    }
    fn ld_map_fd(&mut self, dst: u8, fd: RawFd) {
        self.raw(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, fd);
        self.raw(0, 0, 0, 0, 0);
    }
    fn finish(mut self) -> Vec<BpfInsn> {
        for (at, to) in std::mem::take(&mut self.fixups) {
            // Every label used below is placed; a missing one is a bug in `program`.
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map_or(at + 1, |(_, pos)| *pos);
            // Jump offsets count from the instruction after the jump; programs here are a
            // few dozen instructions, far inside i16.
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// A 32-bit packet word as `LDX W` loads it on this (little- or big-endian) host.
fn word(bytes: [u8; 4]) -> i32 {
    i32::from_ne_bytes(bytes)
}

/// A 16-bit packet field as `LDX H` loads it.
fn half(bytes: [u8; 2]) -> i32 {
    i32::from(u16::from_ne_bytes(bytes))
}

/// The program's instructions for `filter`, with `map_fd` as its XSKMAP.
pub(crate) fn program(filter: &XdpFilter, map_fd: RawFd) -> Vec<BpfInsn> {
    // r6: ctx; r2: data; r3: data_end; r4: bound check; r5: scratch.
    let mut a = Asm::default();
    a.mov_reg(6, 1);
    a.load(W, 2, 1, MD_DATA);
    a.load(W, 3, 1, MD_DATA_END);
    // Ethernet (14) + IPv4 without options (20) + UDP (8).
    a.mov_reg(4, 2);
    a.add_imm(4, 42);
    a.jump(JMP | JGT | X, 4, 3, 0, Label::Pass);
    a.load(H, 5, 2, 12);
    if filter.v4.is_some() {
        a.jump(JMP | JEQ | K, 5, 0, half([0x08, 0x00]), Label::V4);
    }
    if filter.v6.is_some() {
        a.jump(JMP | JEQ | K, 5, 0, half([0x86, 0xdd]), Label::V6);
    }
    a.jump(JMP | JA, 0, 0, 0, Label::Pass);

    let port = half(filter.port.to_be_bytes());
    if let Some(v4) = filter.v4 {
        a.label(Label::V4);
        a.load(B, 5, 2, 14);
        a.jump(JMP | JNE | K, 5, 0, 0x45, Label::Pass); // version 4, IHL 5
        a.load(B, 5, 2, 23);
        a.jump(JMP | JNE | K, 5, 0, 17, Label::Pass); // UDP
        a.load(H, 5, 2, 20);
        a.jump(JMP | JSET | K, 5, 0, half([0x3f, 0xff]), Label::Pass); // MF or offset
        if !v4.is_unspecified() {
            a.load(W, 5, 2, 30);
            a.jump(JMP32 | JNE | K, 5, 0, word(v4.octets()), Label::Pass);
        }
        a.load(H, 5, 2, 36);
        a.jump(JMP | JNE | K, 5, 0, port, Label::Pass);
        a.jump(JMP | JA, 0, 0, 0, Label::Redirect);
    }
    if let Some(v6) = filter.v6 {
        a.label(Label::V6);
        // Ethernet (14) + IPv6 (40) + UDP (8).
        a.mov_reg(4, 2);
        a.add_imm(4, 62);
        a.jump(JMP | JGT | X, 4, 3, 0, Label::Pass);
        a.load(B, 5, 2, 20);
        a.jump(JMP | JNE | K, 5, 0, 17, Label::Pass); // next header UDP, no extensions
        if !v6.is_unspecified() {
            let o = v6.octets();
            for i in 0..4 {
                let w = [o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]];
                a.load(W, 5, 2, 38 + 4 * i as i16);
                a.jump(JMP32 | JNE | K, 5, 0, word(w), Label::Pass);
            }
        }
        a.load(H, 5, 2, 56);
        a.jump(JMP | JNE | K, 5, 0, port, Label::Pass);
        a.jump(JMP | JA, 0, 0, 0, Label::Redirect);
    }

    a.label(Label::Redirect);
    a.load(W, 2, 6, MD_RX_QUEUE);
    a.ld_map_fd(1, map_fd);
    a.mov_imm(3, XDP_PASS); // the action when the queue has no socket
    a.raw(JMP | CALL, 0, 0, 0, FUNC_REDIRECT_MAP);
    a.raw(JMP | EXIT, 0, 0, 0, 0);

    a.label(Label::Pass);
    a.mov_imm(0, XDP_PASS);
    a.raw(JMP | EXIT, 0, 0, 0, 0);
    a.finish()
}

// bpf() commands, map/program/attach types (linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// `bpf(cmd, attr, sizeof attr)`, returning a new file descriptor or 0.
///
/// # Safety
/// `attr` must be the attribute struct `cmd` expects, and every address inside it must point
/// at memory that is valid (and writable where the kernel writes) for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per this function's contract; the size passed is the size of `*attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by bpf() as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    for (d, c) in n.iter_mut().take(15).zip(s.bytes()) {
        *d = c;
    }
    n
}

/// Maps an `EPERM` from bpf() to its own reason; anything else is `Bpf { op, source }`.
fn bpf_error(op: &'static str, source: io::Error) -> XdpUnavailable {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => XdpUnavailable::PermissionDenied { op },
        Some(libc::ENOSYS) => XdpUnavailable::NoBpf,
        _ => XdpUnavailable::Bpf { op, source },
    }
}

/// The loaded program, its XSKMAP and the link attaching it to an interface. Dropping it
/// closes the three descriptors, which detaches the program.
#[derive(Debug)]
pub struct XdpProgram {
    // Field order is drop order: the link first, then the program and its map.
    link: OwnedFd,
    prog: OwnedFd,
    map: OwnedFd,
    ifindex: u32,
    queues: u32,
    filter: XdpFilter,
}

impl XdpProgram {
    /// Builds the program for `filter`, loads it with an XSKMAP of `queues` slots (one per
    /// receive queue that may get a socket) and attaches it to `ifindex` through a bpf_link.
    ///
    /// # Errors
    /// [`XdpUnavailable`]: no privilege (`PermissionDenied`), a kernel without bpf(), the
    /// verifier's rejection with its log (`Rejected`), or an interface that already has an
    /// XDP program (`Attach` with EBUSY).
    pub fn attach(ifindex: u32, filter: XdpFilter, queues: u32) -> Result<Self, XdpUnavailable> {
        let mut m = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queues.max(1),
            map_name: name16("dtls_xsks"),
            ..Default::default()
        };
        // SAFETY: a map-create attr with no pointers.
        let map = owned(
            unsafe { bpf(BPF_MAP_CREATE, &mut m) }.map_err(|e| bpf_error("BPF_MAP_CREATE", e))?,
        );
        let insns = program(&filter, map.as_raw_fd());
        let prog = load(&insns)?;
        let mut l = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            ..Default::default()
        };
        // SAFETY: a link-create attr with no pointers.
        let link = unsafe { bpf(BPF_LINK_CREATE, &mut l) }.map_err(|source| {
            match source.raw_os_error() {
                Some(libc::EPERM) => XdpUnavailable::PermissionDenied {
                    op: "BPF_LINK_CREATE",
                },
                _ => XdpUnavailable::Attach { ifindex, source },
            }
        })?;
        Ok(Self {
            link: owned(link),
            prog,
            map,
            ifindex,
            queues: queues.max(1),
            filter,
        })
    }

    /// Points receive queue `queue`'s slot at the AF_XDP socket `xsk`.
    pub(crate) fn register(&self, queue: u32, xsk: RawFd) -> Result<(), XdpUnavailable> {
        if queue >= self.queues {
            return Err(XdpUnavailable::Config {
                what: "queue id beyond the program's XSKMAP size",
            });
        }
        let key = queue;
        let value = xsk as u32;
        let mut e = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: (&raw const key) as u64,
            value: (&raw const value) as u64,
            ..Default::default()
        };
        // SAFETY: key and value are live u32 locals matching the map's key and value sizes.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut e) }
            .map_err(|e| bpf_error("BPF_MAP_UPDATE_ELEM", e))?;
        Ok(())
    }

    /// Clears queue `queue`'s slot (its frames pass to the kernel again).
    pub(crate) fn unregister(&self, queue: u32) {
        let key = queue;
        let mut e = MapElemAttr {
            map_fd: self.map.as_raw_fd() as u32,
            key: (&raw const key) as u64,
            ..Default::default()
        };
        // SAFETY: key is a live u32 local matching the map's key size. A failure (no entry)
        // leaves nothing to undo.
        let _ = unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut e) };
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// What it redirects.
    pub fn filter(&self) -> &XdpFilter {
        &self.filter
    }

    /// The link's file descriptor (for tests and introspection).
    pub fn link_fd(&self) -> RawFd {
        self.link.as_raw_fd()
    }

    /// The program's file descriptor.
    pub fn prog_fd(&self) -> RawFd {
        self.prog.as_raw_fd()
    }
}

/// Loads `insns` as an XDP program; on rejection loads again with the verifier log on and
/// returns the log in the error.
fn load(insns: &[BpfInsn]) -> Result<OwnedFd, XdpUnavailable> {
    // The helpers used (redirect_map) are not GPL-only; the license string is ours.
    let license = c"Apache-2.0";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let (log_level, log_size, log_buf) = match log {
            Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut p = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level,
            log_size,
            log_buf,
            prog_name: name16("dtls_xdp"),
            expected_attach_type: BPF_XDP,
            ..Default::default()
        };
        // SAFETY: `insns` and `license` outlive the call; the log buffer, when given, is a
        // live Vec of `log_size` bytes that the kernel may write.
        unsafe { bpf(BPF_PROG_LOAD, &mut p) }
    };
    match attempt(None) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Err(XdpUnavailable::PermissionDenied {
                op: "BPF_PROG_LOAD",
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut log = vec![0u8; 64 * 1024];
            let second = attempt(Some(&mut log));
            if let Ok(fd) = second {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(XdpUnavailable::Rejected {
                source: e,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
        Err(e) => Err(bpf_error("BPF_PROG_LOAD", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> XdpFilter {
        XdpFilter {
            port: 4433,
            v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            v6: Some("fd00::1".parse().expect("literal")),
        }
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for f in [
            filter(),
            XdpFilter {
                v6: None,
                ..filter()
            },
            XdpFilter {
                v4: None,
                ..filter()
            },
            XdpFilter {
                v4: Some(Ipv4Addr::UNSPECIFIED),
                v6: Some(Ipv6Addr::UNSPECIFIED),
                port: 1,
            },
        ] {
            let p = program(&f, 3);
            for (i, insn) in p.iter().enumerate() {
                let class = insn.code & 0x07;
                let op = insn.code & 0xf0;
                if (class == JMP || class == JMP32) && op != CALL && op != EXIT {
                    let target = i as i64 + 1 + i64::from(insn.off);
                    assert!(target > i as i64 && (target as usize) < p.len(), "insn {i}");
                }
            }
            assert_eq!(p.last().map(|i| i.code), Some(JMP | EXIT));
        }
    }

    #[test]
    fn port_and_addresses_are_immediates_in_packet_byte_order() {
        let p = program(&filter(), 3);
        let imms: Vec<i32> = p.iter().map(|i| i.imm).collect();
        assert!(imms.contains(&half(4433u16.to_be_bytes())));
        assert!(imms.contains(&word([10, 0, 0, 1])));
        assert!(imms.contains(&word([0, 0, 0, 1]))); // fd00::1, last word
        // The map fd rides in the 64-bit immediate load.
        assert!(
            p.iter()
                .any(|i| i.code == LD | DW | IMM && i.imm == 3 && i.regs >> 4 == 1)
        );
    }
}
