#!/usr/bin/env python3
# client: one connection, writes "<n>\n" every 10 ms, logs arrival time of every reply line.
# usage: client.py HOST PORT DURATION LOGFILE ; prints a JSON summary at the end
import socket, sys, time, threading, json
host, port, dur, logf = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port))
print("local", s.getsockname(), flush=True)
t0 = time.time(); errs = []; stop = False
def sender():
    i = 0; nxt = time.time()
    while not stop:
        try: s.sendall(b"%d\n" % i)
        except OSError as e: errs.append("send:" + repr(e)); return
        i += 1; nxt += 0.01
        d = nxt - time.time()
        if d > 0: time.sleep(d)
threading.Thread(target=sender, daemon=True).start()
s.settimeout(0.2)
buf = b""; recs = []; pushes = []; expect = 0; order_ok = True
while time.time() < t0 + dur:
    try: d = s.recv(65536)
    except socket.timeout: continue
    except OSError as e: errs.append("recv:" + repr(e)); break
    now = time.time()
    if not d: errs.append("EOF"); break
    buf += d
    *lines, buf = buf.split(b"\n")
    for l in lines:
        if l == b"PUSH": pushes.append(now); continue
        n = int(l)
        if n != expect: order_ok = False
        expect = n + 1
        recs.append((now, n))
stop = True
with open(logf, "w") as f:
    for t, n in recs: f.write("%.6f %d\n" % (t, n))
    for t in pushes: f.write("%.6f PUSH\n" % t)
gaps = [(recs[i+1][0] - recs[i][0], recs[i][0], recs[i+1][0]) for i in range(len(recs) - 1)]
g = max(gaps) if gaps else (0, 0, 0)
print("SUMMARY", json.dumps({"replies": len(recs), "max_gap": round(g[0], 3), "gap_start": g[1], "gap_end": g[2],
      "in_order": order_ok, "errors": errs, "pushes": pushes}), flush=True)
