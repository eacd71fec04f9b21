#!/usr/bin/env python3
"""client.py OUT STOPFILE : INCR every ~10ms against dst then src (new TCP conn each time),
log "t where value"; run inside netns postcopy-a. Stops when STOPFILE exists."""
import socket, sys, time, os
out, stop = sys.argv[1], sys.argv[2]
targets = [("dst", "10.77.0.2"), ("src", "10.77.0.1")]
f = open(out, "w", buffering=1)
def ask(ip, cmd=b"INCR\n", to=0.15):
    s = socket.socket(); s.settimeout(to)
    try:
        s.connect((ip, 9411)); s.sendall(cmd)
        return s.recv(100).decode().strip()
    finally: s.close()
while not os.path.exists(stop):
    for name, ip in targets:
        try:
            r = ask(ip)
            if r: f.write(f"{time.time():.4f} {name} {r}\n"); break
        except Exception: pass
    time.sleep(0.01)
