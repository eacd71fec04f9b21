#!/usr/bin/env python3
# echo server: answers each line with the same line. SIGUSR1 -> write unsolicited "PUSH\n" to every client.
import socket, selectors, signal, sys
port = int(sys.argv[1])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port)); ls.listen(8)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
conns = {}
def push(*a):
    for c in list(conns):
        try: c.sendall(b"PUSH\n")
        except OSError: pass
signal.signal(signal.SIGUSR1, push)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            c, _ = ls.accept(); conns[c] = b""; sel.register(c, selectors.EVENT_READ)
            continue
        try: d = s.recv(65536)
        except OSError: d = b""
        if not d:
            sel.unregister(s); s.close(); conns.pop(s, None); continue
        buf = conns[s] + d
        *lines, rest = buf.split(b"\n")
        conns[s] = rest
        if lines: s.sendall(b"".join(l + b"\n" for l in lines))
