#!/usr/bin/env python3
# Minimal pure-python nfnetlink_queue reader (no libnetfilter_queue needed).
# Binds queue NUM, holds every packet (no verdict) until a line "release" arrives on stdin,
# then issues NF_ACCEPT for all held packets in arrival order, and keeps accepting new ones.
import socket, struct, sys, threading, time
QN = int(sys.argv[1])
NETLINK_NETFILTER = 12; NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER); s.bind((0, 0))
seq = [0]
def attr(t, data): 
    a = struct.pack("HH", 4 + len(data), t) + data
    return a + b"\0" * (-len(a) % 4)
def msg(mtype, payload, flags=NLM_F_REQUEST, res_id=QN):
    seq[0] += 1
    body = struct.pack("BBH", socket.AF_UNSPEC, 0, socket.htons(res_id)) + payload
    s.send(struct.pack("IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, seq[0], 0) + body)
# NFQA_CFG_CMD=1: {u8 cmd, u8 pad, be16 pf}; BIND=1.  NFQA_CFG_PARAMS=2: {be32 copy_range, u8 mode}; COPY_META=1
msg(NFQNL_MSG_CONFIG, attr(1, struct.pack("!BBH", 1, 0, socket.AF_INET)), NLM_F_REQUEST | NLM_F_ACK)
msg(NFQNL_MSG_CONFIG, attr(2, struct.pack("!IB", 0, 1)), NLM_F_REQUEST | NLM_F_ACK)
# NFQA_CFG_QUEUE_MAXLEN=3
msg(NFQNL_MSG_CONFIG, attr(3, struct.pack("!I", 10000)), NLM_F_REQUEST | NLM_F_ACK)
held = []; released = [False]; lock = threading.Lock()
def verdict(pid): msg(NFQNL_MSG_VERDICT, attr(2, struct.pack("!II", 1, pid)))   # NFQA_VERDICT_HDR, NF_ACCEPT=1
def ctl():
    for line in sys.stdin:
        if line.strip() == "release":
            with lock:
                for pid in held: verdict(pid)
                sys.stderr.write("nfq: released %d packets at %.6f\n" % (len(held), time.time()))
                held.clear(); released[0] = True
threading.Thread(target=ctl, daemon=True).start()
print("ready", flush=True)
while True:
    data = s.recv(65536)
    off = 0
    while off + 16 <= len(data):
        ln, typ, fl, sq, pid_ = struct.unpack_from("IHHII", data, off)
        if ln < 16: break
        if typ == 2:  # NLMSG_ERROR
            err = struct.unpack_from("i", data, off + 16)[0]
            if err: sys.stderr.write("nfq: netlink error %d\n" % err)
        elif typ == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20
            while a + 4 <= off + ln:
                al, at = struct.unpack_from("HH", data, a)
                if al < 4: break
                if (at & 0x3fff) == 1:   # NFQA_PACKET_HDR {be32 id, be16 proto, u8 hook}
                    pid = struct.unpack_from("!I", data, a + 4)[0]
                    with lock:
                        if released[0]: verdict(pid)
                        else: held.append(pid)
                a += (al + 3) & ~3
        off += (ln + 3) & ~3
