#!/usr/bin/env python3
"""Small timing and data tools for scripts/bench.sh (not meant to be run by hand).

Usage: bench_helper.py COMMAND ARGS...
  free-port                  print a free TCP port on 127.0.0.1
  mkmp3 PATH BYTES [SEED]    write an MP3-looking file: 417-byte MPEG-1 Layer III frames
                             (128 kb/s, 44.1 kHz headers) with random payloads, so
                             `trackfs publish` recognises it by its magic bytes
  mklib DIR N BYTES          N such tracks as DIR/Artist NN/Album NN/NN Track NNNN.mp3
                             (10 tracks an album, 10 albums an artist)
  seq PATH [BS]              read PATH start to end in BS-byte reads (default 1 MiB);
                             prints "bytes seconds cpu_seconds" (open() included in the
                             time; cpu_seconds is the whole machine's busy CPU time meanwhile)
  par PATH...                read all PATHs at once (one thread each, 1 MiB reads);
                             prints "total_bytes seconds"
  firstbyte PATH             open + read 1 byte; prints "open_ms first_byte_ms" where the
                             second is from before open() to the byte received
  seekbyte PATH              stat (untimed), open, then lseek to the middle + read 1 byte;
                             prints "open_ms seek_read_ms" (the seek timed from after open)
  median X...                print the median of numbers
  fio-iops JSON              print read IOPS from a fio --output-format=json file

Why Python: it times single syscalls to the microsecond and reads into one reused buffer,
so the reader itself is never the bottleneck at multi-GB/s page-cache speeds.
"""

import json
import mmap
import os
import random
import socket
import statistics
import sys
import threading
import time

MIB = 1 << 20
FRAME = 417  # 144 * 128000 / 44100, no padding
HEADER = b"\xff\xfb\x90\x64"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def mp3_bytes(size, rng):
    # Random payloads (urandom is fast); stamp a frame header every FRAME bytes.
    buf = bytearray(rng.randbytes(size)) if rng else bytearray(os.urandom(size))
    for i, b in enumerate(HEADER):
        buf[i::FRAME] = bytes([b]) * len(range(i, size, FRAME))
    return buf


def mkmp3(path, size, seed=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    rng = random.Random(int(seed)) if seed is not None else None
    with open(path, "wb") as f:
        left = int(size)
        while left:
            # Chunks are whole frames, so headers stay FRAME apart across chunks.
            n = min(left, FRAME * 40000)
            f.write(mp3_bytes(n, rng))
            left -= n


def mklib(root, n, size):
    n, size = int(n), int(size)
    rng = random.Random(7)
    for t in range(n):
        artist, album, no = t // 100, (t // 10) % 10, t % 10 + 1
        d = os.path.join(root, f"Artist {artist:02d}", f"Album {album:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{no:02d} Track {t:04d}.mp3"), "wb") as f:
            f.write(mp3_bytes(size, rng))


def read_all(path, bs, out=None):
    # A page-aligned buffer (anonymous mmap), as dd and cp use: the kernel's copy into a
    # misaligned bytearray runs at a quarter of the speed on some CPUs (1.6 vs 6.6 GB/s from
    # the page cache on this AMD EPYC), which would make the reader the bottleneck.
    buf = mmap.mmap(-1, bs)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    if out is not None:
        out.append(total)
    return total


def busy_seconds():
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ..., in USER_HZ
    # (100 a second). Busy is everything but idle, iowait and steal: the reader, the FUSE
    # daemon, nginx and the kernel's copies on their behalf all count. (bench.sh's
    # busy_jiffies sums the same fields for curl, without a Python start-up in the window.)
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / 100


def seq(path, bs=MIB):
    c0, t0 = busy_seconds(), time.perf_counter()
    total = read_all(path, int(bs))
    t = time.perf_counter() - t0
    print(total, f"{t:.6f}", f"{busy_seconds() - c0:.2f}")


def par(*paths):
    sizes, threads = [], []
    t0 = time.perf_counter()
    for p in paths:
        th = threading.Thread(target=read_all, args=(p, MIB, sizes))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    if len(sizes) != len(paths):
        sys.exit("par: a reader failed")
    print(sum(sizes), f"{time.perf_counter() - t0:.6f}")


def firstbyte(path):
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    t1 = time.perf_counter()
    b = os.read(fd, 1)
    t2 = time.perf_counter()
    os.close(fd)
    if len(b) != 1:
        sys.exit("firstbyte: no byte read")
    print(f"{(t1 - t0) * 1e3:.3f} {(t2 - t0) * 1e3:.3f}")


def seekbyte(path):
    size = os.stat(path).st_size
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    t1 = time.perf_counter()
    os.lseek(fd, size // 2, os.SEEK_SET)
    b = os.read(fd, 1)
    t2 = time.perf_counter()
    os.close(fd)
    if len(b) != 1:
        sys.exit("seekbyte: no byte read")
    print(f"{(t1 - t0) * 1e3:.3f} {(t2 - t1) * 1e3:.3f}")


def median(*xs):
    print(statistics.median(float(x) for x in xs))


def fio_iops(path):
    with open(path) as f:
        text = f.read()
    # fio may print notes before the JSON object.
    data = json.loads(text[text.index("{"):])
    print(f"{data['jobs'][0]['read']['iops']:.1f}")


COMMANDS = {
    "free-port": free_port,
    "mkmp3": mkmp3,
    "mklib": mklib,
    "seq": seq,
    "par": par,
    "firstbyte": firstbyte,
    "seekbyte": seekbyte,
    "median": median,
    "fio-iops": fio_iops,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
