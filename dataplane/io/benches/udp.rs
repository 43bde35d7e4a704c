//! UDP I/O layer benchmark: echo 1200 B datagrams over loopback, 32 per batch, per backend,
//! GSO on and off, next to a baseline of one `send_to`/`recv_from` per datagram on plain std
//! sockets measured in the same run. One iteration = 32 datagrams sent client → server, echoed,
//! and received back; throughput is reported in datagrams echoed per second (each crosses the
//! kernel twice in each direction).
//!
//! Run: `cargo bench -p dtls-io --bench udp`. Both endpoints run on the bench thread, so the
//! figure is the per-packet I/O cost of one core doing both sides, not a line-rate test.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dtls_io::{IoConfig, IoMode, SocketConfig, TxBatch, UdpIo, bind_udp};

const SIZE: usize = 1200;
const BATCH: usize = 32;
/// Give up on a lost datagram after this long (never expected on loopback; counted).
const LOST_AFTER: Duration = Duration::from_millis(200);

fn open(mode: IoMode, gso: bool, uring_buffers: u16) -> UdpIo {
    let cfg = IoConfig {
        mode,
        batch: BATCH,
        gso,
        uring_buffers,
        ..IoConfig::default()
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let s = bind_udp(addr, &SocketConfig::default()).expect("bind loopback");
    UdpIo::new(s.socket, &cfg).expect("backend available")
}

/// Sends one batch from `client` to `server`, echoes it, receives it back; returns datagrams
/// that made the round trip.
fn echo_batch(
    client: &mut UdpIo,
    server: &mut UdpIo,
    ctx: &mut TxBatch,
    stx: &mut TxBatch,
    dest: SocketAddr,
    payload: &[u8],
) -> usize {
    for _ in 0..BATCH {
        ctx.push(dest, payload)
            .expect("batch sized for BATCH datagrams");
    }
    client.flush(ctx).expect("client flush");
    let until = Instant::now() + LOST_AFTER;
    let mut echoed = 0;
    while echoed < BATCH && Instant::now() < until {
        let b = server
            .poll_recv(Duration::from_millis(10))
            .expect("server recv");
        for d in b.iter() {
            stx.push(d.source, d.payload)
                .expect("batch sized for BATCH datagrams");
            echoed += 1;
        }
        server.flush(stx).expect("server flush");
    }
    let mut back = 0;
    while back < echoed && Instant::now() < until {
        let b = client
            .poll_recv(Duration::from_millis(10))
            .expect("client recv");
        back += b
            .iter()
            .map(|d| black_box(d.payload.len()).min(1))
            .sum::<usize>();
    }
    back
}

/// Pipelined echo, one `flush_and_poll_recv` per side per iteration: the client sends batch
/// k and collects the echoes of batch k-1; the server sends the echoes of batch k-1 and takes
/// batch k. Returns datagrams the client got back in this turn.
fn echo_turn(
    client: &mut UdpIo,
    server: &mut UdpIo,
    ctx: &mut TxBatch,
    stx: &mut TxBatch,
    dest: SocketAddr,
    payload: &[u8],
) -> usize {
    for _ in 0..BATCH {
        ctx.push(dest, payload)
            .expect("batch sized for BATCH datagrams");
    }
    let back = client
        .flush_and_poll_recv(ctx, LOST_AFTER)
        .expect("client turn")
        .datagram_count();
    let rx = server
        .flush_and_poll_recv(stx, LOST_AFTER)
        .expect("server turn");
    for d in rx.iter() {
        // Capacity is 2 * BATCH: never full in steady state; a full batch only drops.
        let _ = stx.push(d.source, d.payload);
    }
    back
}

fn bench_backends(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_echo_1200");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let payload = vec![0xa5u8; SIZE];

    // Baseline: one syscall per datagram per direction, plain std sockets.
    {
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for s in [&client, &server] {
            s.set_read_timeout(Some(LOST_AFTER)).expect("timeout");
        }
        let dest = server.local_addr().expect("bound");
        let mut buf = vec![0u8; 2048];
        g.bench_function("std_send_recv/batch_32", |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    client.send_to(&payload, dest).expect("send");
                }
                for _ in 0..BATCH {
                    if let Ok((n, from)) = server.recv_from(&mut buf) {
                        server.send_to(&buf[..n], from).expect("echo");
                    }
                }
                for _ in 0..BATCH {
                    black_box(client.recv_from(&mut buf).ok());
                }
            })
        });
    }

    // (backend, name, provided buffers): the default buffer count, and io_uring with as few
    // buffers as one batch (a smaller cache footprint: 64 KiB GRO-sized buffers are reused
    // sooner), to show the trade-off.
    let default_buffers = IoConfig::default().uring_buffers;
    let variants = [
        (IoMode::Uring, "uring", default_buffers, ""),
        (IoMode::Uring, "uring", BATCH as u16, "_bufs_32"),
        (IoMode::Mmsg, "mmsg", default_buffers, ""),
    ];
    for (mode, name, buffers, suffix) in variants {
        for gso in [true, false] {
            let mut client = open(mode, gso, buffers);
            let mut server = open(mode, gso, buffers);
            let dest = server.local_addr().expect("bound");
            let mut ctx = TxBatch::new(BATCH, 1500, gso);
            let mut stx = TxBatch::new(BATCH, 1500, gso);
            let mut lost = 0usize;
            let on = if gso { "on" } else { "off" };
            let id = format!("{name}/gso_{on}_batch_32{suffix}");
            g.bench_function(&id, |b| {
                b.iter(|| {
                    let back =
                        echo_batch(&mut client, &mut server, &mut ctx, &mut stx, dest, &payload);
                    lost += BATCH - back;
                })
            });
            let (cs, ss) = (client.stats(), server.stats());
            eprintln!(
                "{id}: lost {lost}, client gso_sends {} gro_datagrams {}, server gro_datagrams {} \
                 send_errors {}",
                cs.gso_sends,
                cs.gro_datagrams,
                ss.gro_datagrams,
                cs.send_errors + ss.send_errors
            );
        }
    }

    // One syscall per side per turn with io_uring (sends submitted in the waiting enter).
    for (mode, name) in [(IoMode::Uring, "uring"), (IoMode::Mmsg, "mmsg")] {
        let mut client = open(mode, true, default_buffers);
        let mut server = open(mode, true, default_buffers);
        let dest = server.local_addr().expect("bound");
        let mut ctx = TxBatch::new(BATCH, 1500, true);
        let mut stx = TxBatch::new(2 * BATCH, 1500, true);
        let (mut iters, mut back) = (0usize, 0usize);
        let id = format!("{name}/gso_on_batch_32_turns");
        g.bench_function(&id, |b| {
            b.iter(|| {
                back += echo_turn(&mut client, &mut server, &mut ctx, &mut stx, dest, &payload);
                iters += 1;
            })
        });
        // The last batch is still in flight when the measurement stops.
        eprintln!("{id}: {back} of {} echoed", iters * BATCH);
    }
    g.finish();
}

criterion_group!(benches, bench_backends);
criterion_main!(benches);
