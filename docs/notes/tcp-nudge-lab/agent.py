#!/usr/bin/env python3
# Runs in nudge-br (the bridge between client and server). Sniffs the server-side bridge port (bs0),
# tracks the TCP connection state, and on stdin commands injects crafted frames:
#   to the client via bc0 (as if sent by the server) or to the server via bs0 (replay of client segments).
# usage: agent.py SRV_PORT LOGFILE
import socket, struct, sys, time, threading
PORT = int(sys.argv[1]); logf = open(sys.argv[2], "w", buffering=1)
def log(*a): logf.write("%.6f " % time.time() + " ".join(str(x) for x in a) + "\n")
sn = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); sn.bind(("bs0", 0))
tx_cli = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); tx_cli.bind(("bc0", 0))
tx_srv = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); tx_srv.bind(("bs0", 0))
S = {}   # state
lock = threading.Lock()

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def parse_opts(o):
    ts = None; i = 0
    while i < len(o):
        k = o[i]
        if k == 0: break
        if k == 1: i += 1; continue
        if i + 1 >= len(o): break
        l = o[i+1]
        if k == 8 and l == 10: ts = struct.unpack("!II", o[i+2:i+10])
        i += max(l, 2)
    return ts

def sniff():
    while True:
        fr = sn.recv(65600)
        if len(fr) < 54 or fr[12:14] != b"\x08\x00": continue
        ip = fr[14:]; ihl = (ip[0] & 15) * 4
        if ip[9] != 6: continue
        tot = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:tot]
        sp, dp, seq, ack, off, fl, win = struct.unpack("!HHIIBBH", tcp[:16])
        thl = (off >> 4) * 4; plen = len(tcp) - thl
        ts = parse_opts(tcp[20:thl])
        with lock:
            if dp == PORT:      # client -> server
                S.update(cli_mac=fr[6:12], srv_mac=fr[0:6], cli_ip=ip[12:16], srv_ip=ip[16:20], cport=sp,
                         cli_ack=ack, cli_win=win, cli_ts=ts[0] if ts else None)
                if plen > 0:
                    S["cli_last_data"] = (fr[:14 + tot], seq, plen)
                    if S.get("verbose"): log("CLI_DATA seq=%d len=%d ack=%d" % (seq, plen, ack))
            elif sp == PORT:    # server -> client
                end = seq + plen + (1 if fl & 1 else 0)
                if "srv_nxt" not in S or (end - S["srv_nxt"]) % 2**32 < 2**31: S["srv_nxt"] = end
                S.update(srv_ack=ack, srv_win=win, srv_ts=ts[0] if ts else None, wscale_seen=True)
                if S.get("verbose") and plen: log("SRV_DATA seq=%d len=%d ack=%d" % (seq, plen, ack))
threading.Thread(target=sniff, daemon=True).start()

def ip_hdr(src, dst, proto, plen):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + plen, 0x1234, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]

def tcp_seg(src, dst, sp, dp, seq, ack, flags, win, opts=b"", payload=b""):
    opts += b"\0" * (-len(opts) % 4)
    hl = 20 + len(opts)
    t = struct.pack("!HHIIBBHHH", sp, dp, seq, ack, (hl // 4) << 4, flags, win, 0, 0) + opts + payload
    ph = struct.pack("!4s4sBBH", src, dst, 0, 6, len(t))
    c = csum(ph + t)
    return t[:16] + struct.pack("!H", c) + t[18:]

def srv_to_cli(win=None, sack=None, flags=0x10):
    # pure ACK from server to client: seq = server snd_nxt, ack = server rcv_nxt (= client snd_una)
    with lock: st = dict(S)
    opts = b""
    if sack:
        opts += b"\x01\x01" + struct.pack("!BB", 5, 2 + 8 * len(sack)) + b"".join(struct.pack("!II", a % 2**32, b % 2**32) for a, b in sack)
    if st.get("srv_ts") is not None:
        opts += b"\x01\x01\x08\x0a" + struct.pack("!II", st["srv_ts"], st["cli_ts"] or 0)
    ack = st["cli_last_data"][1] if "cli_last_data" in st else st["srv_ack"]
    ack = st["srv_ack"]
    t = tcp_seg(st["srv_ip"], st["cli_ip"], PORT, st["cport"], st["srv_nxt"], ack, flags,
                st["srv_win"] if win is None else win, opts)
    fr = st["cli_mac"] + st["srv_mac"] + b"\x08\x00" + ip_hdr(st["srv_ip"], st["cli_ip"], 6, len(t)) + t
    tx_cli.send(fr)
    log("SENT ACK seq=%d ack=%d win=%s sack=%s" % (st["srv_nxt"], ack, st["srv_win"] if win is None else win, sack))
    return st

def icmp_unreach(code=1, snap=None):
    # ICMP dest-unreachable (host unreachable) to the client quoting its last data segment (seq = snd_una)
    with lock: st = dict(S)
    fr, seq, plen = snap or st["cli_last_data"]
    ip = fr[14:]; ihl = (ip[0] & 15) * 4
    quote = ip[:ihl + 8]
    body = struct.pack("!BBHI", 3, code, 0, 0) + quote
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    out = st["cli_mac"] + st["srv_mac"] + b"\x08\x00" + ip_hdr(st["srv_ip"], st["cli_ip"], 1, len(body)) + body
    tx_cli.send(out)
    log("SENT ICMP3/%d quoting seq=%d" % (code, seq))

def replay():
    # re-inject the last captured client data segment into the server (checksums recomputed)
    with lock: st = dict(S)
    fr, seq, plen = st["cli_last_data"]
    ip = bytearray(fr[14:]); ihl = (ip[0] & 15) * 4
    tcp = bytearray(ip[ihl:]); tcp[16:18] = b"\0\0"
    ph = struct.pack("!4s4sBBH", bytes(ip[12:16]), bytes(ip[16:20]), 0, 6, len(tcp))
    tcp[16:18] = struct.pack("!H", csum(ph + bytes(tcp)))
    ip[10:12] = b"\0\0"; ip[10:12] = struct.pack("!H", csum(bytes(ip[:ihl])))
    tx_srv.send(fr[:14] + bytes(ip[:ihl]) + bytes(tcp))
    log("REPLAYED client seg seq=%d len=%d" % (seq, plen))

print("ready", flush=True)
for line in sys.stdin:
    a = line.split()
    if not a: continue
    cmd = a[0]; log("CMD", line.strip())
    try:
        if cmd == "verbose": S["verbose"] = True
        elif cmd == "state":
            with lock: log("STATE", {k: v for k, v in S.items() if k != "cli_last_data"}, "last_data_seq", S.get("cli_last_data", (0, None))[1:])
        elif cmd == "ack":          # ack K [spacing_ms]
            for i in range(int(a[1])):
                srv_to_cli(); time.sleep(float(a[2]) / 1000 if len(a) > 2 else 0.001)
        elif cmd == "winupd":       # ACK advertising a different (bigger) window
            st = srv_to_cli(); srv_to_cli(win=min(65535, st["srv_win"] + 2000))
        elif cmd == "zwin":         # zero window then reopen
            srv_to_cli(win=0); time.sleep(0.05); srv_to_cli()
        elif cmd == "dsack":        # D-SACK block for the last byte already received by the server
            with lock: ack = S["srv_ack"]
            for i in range(int(a[1]) if len(a) > 1 else 3): srv_to_cli(sack=[(ack - 1, ack)]); time.sleep(0.001)
        elif cmd == "srvack":       # give the server's stack the client's last (dropped) ACK, so the server can send at once
            with lock: st = dict(S)
            opts = b"\x01\x01\x08\x0a" + struct.pack("!II", st["cli_ts"], st["srv_ts"] or 0)
            t = tcp_seg(st["cli_ip"], st["srv_ip"], st["cport"], PORT, st["srv_ack"], st["cli_ack"], 0x10, st["cli_win"], opts)
            tx_srv.send(st["srv_mac"] + st["cli_mac"] + b"\x08\x00" + ip_hdr(st["cli_ip"], st["srv_ip"], 6, len(t)) + t)
            log("SENT client->server ACK ack=%d" % st["cli_ack"])
        elif cmd == "icmp":         # icmp K [spacing_ms] [code]
            with lock: snap = S["cli_last_data"]   # quote the segment seen during the freeze (seq = snd_una)
            for i in range(int(a[1])):
                icmp_unreach(snap=snap, code=int(a[3]) if len(a) > 3 else 1); time.sleep(float(a[2]) / 1000 if len(a) > 2 else 0.001)
        elif cmd == "replay": replay()
        elif cmd == "quit": break
    except Exception as e:
        log("ERR", repr(e))
