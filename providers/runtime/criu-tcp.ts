/**
 * The established TCP connections of a checkpoint image, with what the peers need to hear after
 * the restore: files.img lists the sockets (criu/images/sk-inet.proto: inet_sk_entry), and each
 * established one has tcp-stream-<inode>.img whose inq_seq is the socket's rcv_nxt — the first
 * byte its peer has not had acknowledged (criu/images/tcp-stream.proto).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { num, nums, readImageRecords, sub } from './criu-image';

const FD_INETSK = 4;
const AF_INET = 2;
const IPPROTO_TCP = 6;
const TCP_ESTABLISHED = 1;

export interface ImageConnection {
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
  /** The restored socket's rcv_nxt: the peer's first unacknowledged byte. */
  rcvNxt: number;
}

/** CRIU keeps an IPv4 address as the u32 of its bytes in network order, read on a little-endian host. */
function ipv4(word: number | undefined): string {
  const buf = Buffer.alloc(4);
  buf.writeUInt32LE((word ?? 0) >>> 0);
  return [...buf].join('.');
}

export async function establishedConnections(imageDir: string): Promise<ImageConnection[]> {
  const files = path.join(imageDir, 'files.img');
  if (!existsSync(files)) return [];
  const connections: ImageConnection[] = [];
  for (const entry of await readImageRecords(files)) {
    if (num(entry, 1) !== FD_INETSK) continue;
    const sk = sub(entry, 4);
    if (!sk || num(sk, 3) !== AF_INET || num(sk, 5) !== IPPROTO_TCP || num(sk, 6) !== TCP_ESTABLISHED) continue;
    const stream = path.join(imageDir, `tcp-stream-${(num(sk, 2) ?? 0).toString(16)}.img`);
    if (!existsSync(stream)) continue;
    const [tcp] = await readImageRecords(stream, 1);
    const rcvNxt = tcp && num(tcp, 2);
    if (rcvNxt === undefined) continue;
    connections.push({ local: ipv4(nums(sk, 11)[0]), localPort: num(sk, 7) ?? 0, peer: ipv4(nums(sk, 12)[0]), peerPort: num(sk, 8) ?? 0, rcvNxt });
  }
  return connections;
}
