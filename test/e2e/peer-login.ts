/**
 * Tries what a peer cloud could do with its way into another cloud, from inside the peer's own
 * namespace (run by a test with nsenter): logs in with a given key and user, checks the host
 * key, and attempts each write. Prints one JSON object: what succeeded, and each error.
 *   node peer-login.js '{"endpoint": {...}, "key": FILE, "puts": [PATH...], "symlink": [TARGET, PATH]}'
 */
import { connectPeer } from '../../activities/sftp-sessions';
import type { TransferEndpoint } from '../../lib/types';

interface Request {
  endpoint: TransferEndpoint;
  key: string;
  puts?: string[];
  symlink?: [string, string];
}

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? '{}') as Request;
  const out: { connected: boolean; error?: string; puts: Record<string, string>; symlink?: string } = { connected: false, puts: {} };
  try {
    const sftp = await connectPeer(request.endpoint, request.key);
    out.connected = true;
    try {
      for (const target of request.puts ?? []) {
        out.puts[target] = await sftp.put(Buffer.from('written by a peer\n'), target).then(() => 'ok', (err: Error) => err.message);
      }
      if (request.symlink) {
        // ssh2's own SFTP session under ssh2-sftp-client (which offers no symlink call).
        const raw = (sftp as unknown as { sftp: { symlink(target: string, link: string, cb: (err?: Error) => void): void } }).sftp;
        const [target, link] = request.symlink;
        out.symlink = await new Promise<string>((resolve) => raw.symlink(target, link, (err) => resolve(err ? err.message : 'ok')));
      }
    } finally {
      await sftp.end();
    }
  } catch (err) {
    out.error = (err as Error).message;
  }
  console.log(JSON.stringify(out));
}

void main();
