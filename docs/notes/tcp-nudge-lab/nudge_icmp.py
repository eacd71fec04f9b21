#!/usr/bin/env python3
# Production-style nudge (run in the SERVER's netns right after restore):
# sends ICMP "destination unreachable / host unreachable" (type 3 code 1) to the client, quoting the
# client's own segment header client->server with seq = client's snd_una (= server socket's rcv_nxt,
# e.g. CRIU tcp-stream image field inq_seq).  The client's Linux stack applies RFC 6069 (tcp_ld_RTO_revert):
# each such ICMP undoes one RTO back-off step; once the reverted RTO has already elapsed it retransmits NOW.
# The error is only a soft error for an established socket (no reset, app not notified unless IP_RECVERR).
# usage: nudge_icmp.py CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT SEQ [COUNT=15] [SPACING_MS=1]
import socket, struct, sys, time
cip, cport, sip, sport, seq = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
count = int(sys.argv[6]) if len(sys.argv) > 6 else 15
gap = float(sys.argv[7]) / 1000 if len(sys.argv) > 7 else 0.001
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
# quoted original datagram: IPv4 header client->server (proto TCP) + first 8 bytes of TCP header
qip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, socket.inet_aton(cip), socket.inet_aton(sip))
qip = qip[:10] + struct.pack("!H", csum(qip)) + qip[12:]
quote = qip + struct.pack("!HHI", cport, sport, seq % 2**32)
icmp = struct.pack("!BBHI", 3, 1, 0, 0) + quote
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)   # kernel adds the outer IP header
for i in range(count):
    s.sendto(icmp, (cip, 0)); time.sleep(gap)
print("sent %d ICMP host-unreachable quoting %s:%d->%s:%d seq=%d" % (count, cip, cport, sip, sport, seq))
