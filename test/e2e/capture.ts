/**
 * Packet captures for the tests that read a link as an eavesdropper would (tcpdump, real packets).
 * A capture that missed packets cannot prove that something was absent: stop() refuses it.
 */
import { readFile, rm } from 'node:fs/promises';
import { run } from '../../lib/exec';
import { startService, stopPid } from '../../lib/processes';

export interface Capture {
  /** Ends the capture; resolves with every byte captured (pcap), once tcpdump confirmed it dropped nothing. */
  stop(): Promise<Buffer>;
  file: string;
}

/** tcpdump writing every packet, whole, of `dev` (in `netns`) to `file` until stopped. */
export async function capture(netns: string, dev: string, file: string): Promise<Capture> {
  const logFile = `${file}.log`;
  await rm(logFile, { force: true }); // its counts at the end are read from it
  const pid = await startService({
    name: `tcpdump on ${dev} in ${netns}`,
    argv: ['nsenter', `--net=/run/netns/${netns}`, 'tcpdump', '-i', dev, '-n', '--immediate-mode', '-U', '-s', '0', '-B', '16384', '-w', file],
    logFile,
    readyLine: /listening on/,
    timeoutMs: 10_000,
  });
  return {
    file,
    async stop() {
      await stopPid(pid);
      const log = await readFile(logFile, 'utf8');
      const count = (what: string) => Number(new RegExp(`(\\d+) packets ${what}`).exec(log)?.[1] ?? NaN);
      const [captured, received, dropped] = [count('captured'), count('received by filter'), count('dropped by kernel')];
      // Immediate mode hands tcpdump each packet as it comes; still, one stopped before it wrote all it received proves nothing.
      if (!(dropped === 0 && captured === received)) {
        throw new Error(`tcpdump on ${dev} captured ${captured} of ${received} packets (${dropped} dropped by the kernel): the capture cannot show what was absent\n${log}`);
      }
      return readFile(file);
    },
  };
}

/** How many packets of a capture match a tcpdump filter. */
export async function countPackets(file: string, filter: string): Promise<number> {
  const { stdout } = await run('tcpdump', ['-r', file, '-n', filter]);
  return stdout.split('\n').filter(Boolean).length;
}
