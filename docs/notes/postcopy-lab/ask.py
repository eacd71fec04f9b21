#!/usr/bin/env python3
"""ask.py IP CMD TIMEOUT -> prints reply or TIMEOUT/ERR (one TCP connection)."""
import socket, sys, time
ip, cmd, to = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(); s.settimeout(to); t=time.time()
try:
    s.connect((ip, 9411)); s.sendall(cmd.encode()+b"\n"); r = s.recv(200).decode().strip()
    print(f"{r!r} in {time.time()-t:.3f}s")
except socket.timeout: print(f"TIMEOUT after {to}s")
except Exception as e: print(f"ERR {e!r}")
