#!/usr/bin/env python3
"""uffd guard for CRIU lazy restore (one restored process).
  guard.py LP_PID  -- steals a duplicate of the userfaultfd from the running `criu lazy-pages`
  daemon (pidfd_getfd), so if the daemon dies the kernel does NOT unregister the ranges: faults
  on missing pages BLOCK instead of reading zeros. Then reads commands on stdin:
    release                                 -> close the dup (daemon finished OK) and exit
    rescue IMGDIR PS_IP PS_PORT HOST_PID    -> fetch every still-missing lazy page from a
        (re)started `criu page-server --lazy-pages -D FULL` and UFFDIO_COPY it, then close.
"""
import ctypes, os, sys, struct, socket, fcntl, time, errno, select
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438
PAGE = 4096
UFFDIO_COPY = 0xC028AA03
def out(*a): print(f"[guard {time.time():.3f}]", *a, flush=True)

lp = int(sys.argv[1])
uffd_target = None
for _ in range(2000):  # wait until the daemon has received the uffd from the restorer
    for fd in os.listdir(f"/proc/{lp}/fd"):
        try:
            if os.readlink(f"/proc/{lp}/fd/{fd}") == "anon_inode:[userfaultfd]": uffd_target = int(fd)
        except OSError: pass
    if uffd_target is not None: break
    time.sleep(0.005)
pidfd = os.pidfd_open(lp)
uffd = libc.syscall(SYS_pidfd_getfd, pidfd, uffd_target, 0)
if uffd < 0: out("pidfd_getfd failed", ctypes.get_errno()); sys.exit(1)
out(f"holding uffd (lazy-pages {lp} fd {uffd_target}) as fd {uffd}")

def copy(dst, data):
    buf = ctypes.create_string_buffer(data, len(data))
    arg = bytearray(struct.pack('<QQQQq', dst, ctypes.addressof(buf), len(data), 0, 0))
    try:
        fcntl.ioctl(uffd, UFFDIO_COPY, arg); return len(data), 0
    except OSError as e:
        c = struct.unpack_from('<q', arg, 32)[0]
        return (c if c > 0 else 0), e.errno

def drain():
    try:
        while True: os.read(uffd, 32 * 64)
    except BlockingIOError: pass

def rescue(imgdir, ip, port, hostpid):
    import pmap
    pms = pmap.task_pagemaps(imgdir); assert len(pms) == 1, pms
    imgpid = int(pms[0].rsplit('-', 1)[1].split('.')[0])
    _, ents = pmap.read_pagemap(pms[0])
    pm = open(f"/proc/{hostpid}/pagemap", "rb")
    todo = []
    for e in ents:
        if not (e['flags'] & pmap.PE_LAZY): continue
        pm.seek(e['vaddr'] // PAGE * 8); raw = pm.read(8 * e['nr'])
        run = None
        for i in range(e['nr']):
            present = struct.unpack_from('<Q', raw, 8 * i)[0] >> 63
            if not present and run is None: run = i
            if (present or i == e['nr'] - 1) and run is not None:
                end = i if present else i + 1
                todo.append((e['vaddr'] + run * PAGE, end - run)); run = None
    miss = sum(n for _, n in todo)
    out(f"rescue: {miss} lazy pages still missing in {len(todo)} runs; page server {ip}:{port}")
    t0 = time.time()
    for attempt in range(600):
        try: s = socket.create_connection((ip, int(port)), timeout=5); break
        except OSError: time.sleep(0.1)
    else: out("cannot reach page server"); return 1
    copied = exist = 0
    for va, n in todo:
        while n:
            k = min(n, 256)
            s.sendall(struct.pack('<I4xQQQ', 7, k, va, imgpid))
            hdr = b''
            while len(hdr) < 32: hdr += s.recv(32 - len(hdr))
            got = struct.unpack('<I4xQQQ', hdr)[1]
            if not 0 < got <= k: raise IOError(f"bad page-server reply {hdr.hex()}")
            data = bytearray()
            while len(data) < got * PAGE: data += s.recv(got * PAGE - len(data))
            done, err = copy(va, bytes(data))
            if err == errno.EEXIST:           # some page already there: go page by page
                for j in range(got):
                    d2, e2 = copy(va + j * PAGE, bytes(data[j*PAGE:(j+1)*PAGE]))
                    if e2 == errno.EEXIST: exist += 1
                    elif e2: out("copy error", e2); return 1
                    else: copied += 1
            elif err: out("copy error", err, hex(va)); return 1
            else: copied += got
            va += got * PAGE; n -= got
            drain()
    s.sendall(struct.pack('<I4xQQQ', 0x1023, 0, 0, 0)); s.recv(4); s.close()
    out(f"rescue done: copied {copied} pages, {exist} already present, {time.time()-t0:.3f}s")
    return 0

for line in sys.stdin:
    a = line.split()
    if not a: continue
    if a[0] == "release": out("release"); break
    if a[0] == "rescue":
        # never close the uffd on failure (that would turn missing pages into zeros): retry
        while True:
            try:
                if rescue(*a[1:]) == 0: break
            except Exception as e: out("rescue failed, retrying:", repr(e))
            time.sleep(1)
        break
os.close(uffd); out("uffd closed")
