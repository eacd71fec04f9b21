/**
 * Independent observers of a benchmark run: bytes counted by the kernel on each cloud's WAN
 * interface, CPU time counted by the kernel for the whole machine, and the migrated process's own
 * check of its memory. None of them takes a number from the system being measured.
 */
import { readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { run } from '../lib/exec';
import { stopPid } from '../lib/processes';
import { registerProcess, type TestbedRecord } from '../providers/local/testbed';

interface Sample {
  at: number;
  /** Bytes sent on the source cloud's WAN interface so far. */
  sourceTx: number;
  /** Bytes received on the destination cloud's WAN interface so far. */
  destinationRx: number;
}

/** One interface's counters as /proc/PID/net/dev shows them in PID's network namespace. */
async function interfaceCounters(pid: number, dev: string): Promise<{ rx: number; tx: number }> {
  const text = await readFile(`/proc/${pid}/net/dev`, 'utf8');
  const line = text.split('\n').find((l) => l.trim().startsWith(`${dev}:`));
  if (!line) throw new Error(`no interface ${dev} in the namespace of process ${pid}`);
  const fields = line.split(':')[1]!.trim().split(/\s+/).map(Number);
  return { rx: fields[0]!, tx: fields[8]! };
}

/** A process that only sits in a namespace, so that its /proc/PID/net shows that namespace. */
async function anchorIn(record: TestbedRecord, netns: string): Promise<number> {
  const child = spawn('nsenter', [`--net=/run/netns/${netns}`, 'sleep', 'infinity'], { stdio: 'ignore', detached: true });
  child.unref();
  const pid = child.pid;
  if (!pid) throw new Error(`could not start a process in ${netns}`);
  await registerProcess(record.options.stateDir, `bench anchor ${netns}`, pid);
  // nsenter execs sleep in place: wait until the PID shows the namespace's interfaces.
  for (let i = 0; i < 100; i++) {
    if (await interfaceCounters(pid, 'wan0').then(() => true, () => false)) return pid;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never showed ${netns}'s wan0`);
}

/** Samples the WAN counters of the source and the destination every `intervalMs` while asked to. */
export class WanMeter {
  private samples: Sample[] = [];
  private timer?: NodeJS.Timeout;

  private constructor(private readonly sourcePid: number, private readonly destinationPid: number) {}

  static async open(record: TestbedRecord, source: string, destination: string): Promise<WanMeter> {
    const netnsOf = (cloud: string) => record.clouds.find((c) => c.name === cloud)!.netns;
    return new WanMeter(await anchorIn(record, netnsOf(source)), await anchorIn(record, netnsOf(destination)));
  }

  private async sample(): Promise<Sample> {
    const [s, d] = await Promise.all([interfaceCounters(this.sourcePid, 'wan0'), interfaceCounters(this.destinationPid, 'wan0')]);
    return { at: Date.now(), sourceTx: s.tx, destinationRx: d.rx };
  }

  async start(intervalMs = 20): Promise<void> {
    this.samples = [await this.sample()];
    this.timer = setInterval(() => {
      void this.sample().then((s) => this.samples.push(s), () => undefined);
    }, intervalMs);
  }

  async stop(): Promise<Sample[]> {
    clearInterval(this.timer);
    this.samples.push(await this.sample());
    return this.samples;
  }

  async close(): Promise<void> {
    await stopPid(this.sourcePid);
    await stopPid(this.destinationPid);
  }
}

export function wanBytes(samples: Sample[]): { sourceTx: number; destinationRx: number } {
  const first = samples[0]!;
  const last = samples[samples.length - 1]!;
  return { sourceTx: last.sourceTx - first.sourceTx, destinationRx: last.destinationRx - first.destinationRx };
}

/**
 * Mbit/s the destination received while bytes flowed within [from, to] (a transfer's window), as
 * the interface counted it: from the sample before the first increase to the last increase.
 */
export function throughputMbit(samples: Sample[], from: number, to: number): number {
  const inWindow = samples.filter((s) => s.at >= from && s.at <= to);
  let first = -1;
  let last = -1;
  for (let i = 1; i < inWindow.length; i++) {
    if (inWindow[i]!.destinationRx > inWindow[i - 1]!.destinationRx + 64 * 1024) {
      if (first < 0) first = i - 1;
      last = i;
    }
  }
  if (first < 0 || inWindow[last]!.at - inWindow[first]!.at < 40) return NaN; // too short for 20 ms samples to say anything
  const bytes = inWindow[last]!.destinationRx - inWindow[first]!.destinationRx;
  return (bytes * 8) / ((inWindow[last]!.at - inWindow[first]!.at) / 1000) / 1e6;
}

/** CPU seconds the whole machine spent (all cores, user + system + interrupts), from /proc/stat. */
export async function machineCpuSeconds(): Promise<number> {
  const first = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const [user, nice, system, , , irq, softirq, steal] = first.trim().split(/\s+/).slice(1).map(Number) as number[];
  return (user! + nice! + system! + irq! + softirq! + steal!) / 100; // USER_HZ is 100 on Linux
}

/**
 * Asks the migrated process itself to re-read its whole memory ballast ("CHECK": "OK n" when
 * every word is what it wrote). Runs in the probe port's namespace, on a connection of its own.
 */
export async function memoryCheck(netns: string, ip: string, port: number): Promise<string> {
  return ask(netns, ip, port, 'CHECK');
}

/** One request on a connection of its own, from a namespace; the one-line answer ('' when none). */
export async function ask(netns: string, ip: string, port: number, line: string): Promise<string> {
  const { stdout } = await run('node', [`${__dirname}/ask.js`, ip, String(port), line], { netns, allowFailure: true });
  return stdout.trim();
}
