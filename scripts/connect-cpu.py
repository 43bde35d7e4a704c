#!/usr/bin/env python3
"""CPU per record through dtlsd connect -> dtlsd serve -> a UDP echo backend, on loopback.

Usage: scripts/connect-cpu.py DTLSD [--records N] [--sessions S] [--burst B] [--size BYTES]
                              [--io uring|mmsg] [--shards K]

S local sources each send bursts of B equal-size datagrams to `dtlsd connect` and wait for
their echoes (closed loop) until N datagrams went round. Reports each daemon's CPU
(utime + stime from /proc/PID/stat, all threads) per record, measured over the data phase
only (after every session's first echo), and the echo backend's for reference. Not a test.
"""
import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def echo(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", port))
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)


def wait_line(proc, needle, timeout=30):
    deadline = time.time() + timeout
    buf = b""
    while time.time() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.5)
        if r:
            chunk = os.read(proc.stderr.fileno(), 65536)
            buf += chunk
            if needle.encode() in buf:
                return
    sys.exit(f"daemon did not print {needle!r}: {buf.decode(errors='replace')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dtlsd")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--burst", type=int, default=16)
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--io", default="uring")
    ap.add_argument("--shards", default="1")
    a = ap.parse_args()
    pki = tempfile.mkdtemp(prefix="connect-cpu-")
    subprocess.run([a.dtlsd, "certs", "--out", pki], check=True, capture_output=True)
    backend_port, serve_port, connect_port = free_port(), free_port(), free_port()
    backend = Process(target=echo, args=(backend_port,), daemon=True)
    backend.start()
    tuning = ["--io", a.io, "--shards", a.shards]
    env = dict(os.environ, NO_COLOR="1", RUST_LOG="info")
    serve = subprocess.Popen(
        [a.dtlsd, "serve", "--listen", f"127.0.0.1:{serve_port}",
         "--backend", f"127.0.0.1:{backend_port}",
         "--cert", f"{pki}/server.pem", "--key", f"{pki}/server.key", *tuning],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    wait_line(serve, "listening")
    connect = subprocess.Popen(
        [a.dtlsd, "connect", "--listen", f"127.0.0.1:{connect_port}",
         "--server", f"127.0.0.1:{serve_port}",
         "--ca", f"{pki}/ca.pem", "--server-name", "localhost", *tuning],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    wait_line(connect, "listening")
    try:
        socks = []
        for _ in range(a.sessions):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.connect(("127.0.0.1", connect_port))
            s.settimeout(20)
            socks.append(s)
        for s in socks:  # handshakes
            s.send(b"x" * a.size)
        for s in socks:
            s.recv(65536)
        for s in socks:
            s.setblocking(False)
        payload = b"p" * a.size
        before = {p.pid: cpu_seconds(p.pid) for p in (serve, connect)}
        before_echo = cpu_seconds(backend.pid)
        t0 = time.time()
        done = lost = 0
        while done < a.records:
            for s in socks:
                for _ in range(a.burst):
                    s.send(payload)
            waiting = {s: a.burst for s in socks}
            deadline = time.time() + 2
            while waiting and time.time() < deadline:
                r, _, _ = select.select(list(waiting), [], [], 0.2)
                for s in r:
                    while waiting.get(s):
                        try:
                            s.recv(65536)
                        except BlockingIOError:
                            break
                        waiting[s] -= 1
                        done += 1
                    if waiting.get(s) == 0:
                        del waiting[s]
            lost += sum(waiting.values())
        wall = time.time() - t0
        after = {p.pid: cpu_seconds(p.pid) for p in (serve, connect)}
        echo_cpu = cpu_seconds(backend.pid) - before_echo
        for name, p in (("connect", connect), ("serve", serve)):
            used = after[p.pid] - before[p.pid]
            print(f"{name}: {used:.2f} s CPU, {used / done * 1e6:.2f} us per record")
        print(f"echo backend: {echo_cpu / done * 1e6:.2f} us per record; "
              f"{done} records in {wall:.1f} s ({done / wall:.0f}/s), {lost} lost; "
              f"sessions {a.sessions}, burst {a.burst}, {a.size} B, io {a.io}")
    finally:
        for p in (connect, serve):
            p.terminate()
            p.wait()
        backend.terminate()


if __name__ == "__main__":
    main()
