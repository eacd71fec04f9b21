/*
 * migravi-tcp-nudge: ends the peers' retransmission back-off right after a restore.
 *
 * A peer that sent during the freeze got no answer and backed off (retransmissions 0.2, 0.6, 1.4,
 * 3.0 s... after its first try): without help it waits up to twice the freeze before trying again.
 * ICMP "host unreachable" quoting the peer's own segment at its first unacknowledged byte makes
 * Linux undo one back-off step per message (RFC 6069, tcp_ld_RTO_revert) and retransmit at once
 * when the undone timeout has already passed; once the restored socket acknowledges, the rest fall
 * out of the window and are ignored. It is a soft error: no reset, the application sees nothing.
 * Measured in docs/notes/tcp-nudge-lab/RESULT.md (17.03 s gap for a 17 s freeze instead of 26.8 s).
 *
 *   migravi-tcp-nudge COUNT GAP_US PEER_IP:PEER_PORT:LOCAL_IP:LOCAL_PORT:SEQ...
 * Run in the restored container's network namespace (the messages leave from its address);
 * SEQ is the restored socket's rcv_nxt (CRIU's tcp-stream inq_seq).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
  struct in_addr peer, local;
  uint16_t peer_port, local_port;
  uint32_t seq;
};

static uint16_t checksum(const void *data, size_t len) {
  const uint8_t *p = data;
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (len & 1) sum += p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons((uint16_t)~sum);
}

static int parse(const char *arg, struct conn *c) {
  char peer[64], local[64];
  unsigned pp, lp;
  unsigned long seq;
  if (sscanf(arg, "%63[^:]:%u:%63[^:]:%u:%lu", peer, &pp, local, &lp, &seq) != 5) return -1;
  if (inet_pton(AF_INET, peer, &c->peer) != 1 || inet_pton(AF_INET, local, &c->local) != 1) return -1;
  c->peer_port = pp;
  c->local_port = lp;
  c->seq = (uint32_t)seq;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s COUNT GAP_US PEER_IP:PEER_PORT:LOCAL_IP:LOCAL_PORT:SEQ...\n", argv[0]);
    return 2;
  }
  int count = atoi(argv[1]), gap = atoi(argv[2]), n = argc - 3;
  struct conn *conns = calloc(n, sizeof *conns);
  for (int i = 0; i < n; i++) {
    if (parse(argv[i + 3], &conns[i]) < 0) {
      fprintf(stderr, "bad connection %s\n", argv[i + 3]);
      return 2;
    }
  }
  int sk = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP); /* the kernel writes the outer IP header */
  if (sk < 0) {
    perror("socket");
    return 1;
  }
  for (int round = 0; round < count; round++) {
    for (int i = 0; i < n; i++) {
      uint8_t msg[8 + 20 + 8] = {0};
      msg[0] = 3; /* destination unreachable */
      msg[1] = 1; /* host unreachable */
      uint8_t *ip = msg + 8; /* the peer's own datagram, as it sent it: peer -> local, TCP */
      ip[0] = 0x45;
      ip[3] = 40;
      ip[6] = 0x40; /* don't fragment */
      ip[8] = 64;
      ip[9] = IPPROTO_TCP;
      memcpy(ip + 12, &conns[i].peer, 4);
      memcpy(ip + 16, &conns[i].local, 4);
      uint16_t ipsum = checksum(ip, 20);
      memcpy(ip + 10, &ipsum, 2);
      uint8_t *tcp = ip + 20; /* the first 8 bytes of its TCP header: ports and sequence */
      uint16_t sport = htons(conns[i].peer_port), dport = htons(conns[i].local_port);
      uint32_t seq = htonl(conns[i].seq);
      memcpy(tcp, &sport, 2);
      memcpy(tcp + 2, &dport, 2);
      memcpy(tcp + 4, &seq, 4);
      uint16_t sum = checksum(msg, sizeof msg);
      memcpy(msg + 2, &sum, 2);
      struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr = conns[i].peer};
      if (sendto(sk, msg, sizeof msg, 0, (struct sockaddr *)&to, sizeof to) < 0) perror("sendto");
    }
    if (gap > 0) usleep(gap);
  }
  return 0;
}
