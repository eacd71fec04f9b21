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
  // tcpdump prints its counts on one line when asked (SIGUSR1) and on three when it exits.
  const report = (log: string) => {
    const reports = [...log.matchAll(/(\d+) packets? captured(?:, |\n)(\d+) packets? received by filter(?:, |\n)(\d+) packets? dropped by kernel/g)];
    const last = reports.at(-1);
    return { reports: reports.length, captured: Number(last?.[1]), received: Number(last?.[2]), dropped: Number(last?.[3]) };
  };
  return {
    file,
    async stop() {
      // Packets still arriving when tcpdump is stopped are counted as received but never written, so the final
      // counts alone cannot tell a missed packet from a late one. tcpdump reports its counts on SIGUSR1: once a
      // report shows every packet received so far written and none dropped, what the test sent is in the file.
      let seen = report(await readFile(logFile, 'utf8')).reports;
      let last = { captured: NaN, received: NaN, dropped: NaN };
      for (let attempt = 0; attempt < 20; attempt += 1) {
        process.kill(pid, 'SIGUSR1');
        for (;;) {
          const now = report(await readFile(logFile, 'utf8'));
          if (now.reports > seen) { seen = now.reports; last = now; break; }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        if (last.dropped === 0 && last.captured === last.received) break;
      }
      await stopPid(pid);
      const log = await readFile(logFile, 'utf8');
      if (!(last.dropped === 0 && last.captured === last.received)) {
        throw new Error(`tcpdump on ${dev} captured ${last.captured} of ${last.received} packets (${last.dropped} dropped by the kernel): the capture cannot show what was absent\n${log}`);
      }
      const final = report(log);
      if (final.dropped !== 0) throw new Error(`tcpdump on ${dev} dropped ${final.dropped} packets: the capture cannot show what was absent\n${log}`);
      return readFile(file);
    },
  };
}

/** How many packets of a capture match a tcpdump filter. */
export async function countPackets(file: string, filter: string): Promise<number> {
  const { stdout } = await run('tcpdump', ['-r', file, '-n', filter]);
  return stdout.split('\n').filter(Boolean).length;
}
