/**
 * What `migravi migrate` shows while a migration runs: on a terminal, a bar per container (its
 * stage, the running copy's bytes of its total, rate and time left), redrawn in place by
 * cli-progress; elsewhere (a pipe, a log, CI) plain lines — each change of a container's stage,
 * and a running copy at most every few seconds.
 */
import { MultiBar, type SingleBar } from 'cli-progress';
import type { LiveContainer, LiveProgress, LiveTransfer } from './live-progress';

const MiB = 1048576;
/** How often plain output repeats a running copy's line. */
const PLAIN_TRANSFER_EVERY_MS = 2000;

export interface ProgressView {
  update(live: LiveProgress): void;
  /** Leaves the last state on screen (bars) before the report is printed. */
  stop(): void;
}

export function progressView(stream: NodeJS.WriteStream): ProgressView {
  return stream.isTTY ? new BarsView(stream) : new LinesView(stream);
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

function seconds(s: number): string {
  return s < 60 ? `${Math.ceil(s)} s` : `${Math.floor(s / 60)} min ${Math.ceil(s % 60)} s`;
}

/** "rootfs 17.8 of 47.4 MiB, 560 Mbit/s, 1 s left" */
export function describeTransfer(t: LiveTransfer): string {
  const size = t.totalBytes ? `${mib(t.sentBytes)} of ${mib(t.totalBytes)} MiB` : `${mib(t.sentBytes)} MiB`;
  const rate = t.rateBytesPerSecond !== undefined ? `, ${Math.round((t.rateBytesPerSecond * 8) / 1e6)} Mbit/s` : '';
  const eta = t.etaSeconds !== undefined ? `, ${seconds(t.etaSeconds)} left` : '';
  return `${t.kind} ${size}${rate}${eta}`;
}

/** The fraction a container's bar shows: done when moved; else its running copies' bytes of their totals. */
function fraction(c: LiveContainer): number {
  if (c.state === 'moved') return 1;
  const sized = c.transfers.filter((t) => t.totalBytes);
  if (!sized.length) return 0;
  return Math.min(1, sized.reduce((s, t) => s + t.sentBytes, 0) / sized.reduce((s, t) => s + t.totalBytes!, 0));
}

function status(c: LiveContainer): string {
  const now = c.transfers.map(describeTransfer).join('; ');
  return `${c.state === 'moving' ? c.phase : c.state}${now ? ` — ${now}` : ''}${c.bytesMoved ? ` (${mib(c.bytesMoved)} MiB on the link)` : ''}`;
}

class BarsView implements ProgressView {
  private readonly bars = new Map<string, SingleBar>();
  private readonly multi: MultiBar;
  private header?: SingleBar;

  constructor(stream: NodeJS.WriteStream) {
    this.multi = new MultiBar({ stream, format: '{name} {bar} {status}', barsize: 24, barCompleteChar: '\u2588', barIncompleteChar: '\u2591', hideCursor: true, clearOnComplete: false, autopadding: true, fps: 8 });
  }

  update(live: LiveProgress): void {
    const headline = `${live.state}: ${live.phase}${live.container ? ` (${live.container})` : ''}, ${mib(live.bytesMoved)} MiB on the link`;
    this.header ??= this.multi.create(1, 0, { name: 'migration', status: headline }, { format: '{name}: {status}' });
    this.header.update(0, { status: headline });
    const width = Math.max(...live.containers.map((c) => c.name.length), 0);
    for (const c of live.containers) {
      const payload = { name: c.name.padEnd(width), status: status(c) };
      const bar = this.bars.get(c.name) ?? this.multi.create(1000, 0, payload);
      this.bars.set(c.name, bar);
      bar.update(Math.round(fraction(c) * 1000), payload);
    }
  }

  stop(): void {
    this.multi.stop();
  }
}

class LinesView implements ProgressView {
  private readonly said = new Map<string, string>();
  private readonly transferSaidAt = new Map<string, number>();

  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(live: LiveProgress): void {
    this.once('migration', `${live.state}${live.state === 'running' ? '' : `${live.error ? `: ${live.error}` : ''}`}`, `migration ${live.state}`);
    for (const c of live.containers) {
      this.once(c.name, `${c.state}/${c.phase}`, `${c.name}: ${c.state === 'moving' ? c.phase : c.state}`);
      for (const t of c.transfers) {
        const key = `${c.name}/${t.activity}/${t.kind}`;
        const last = this.transferSaidAt.get(key);
        if (last !== undefined && Date.now() - last < PLAIN_TRANSFER_EVERY_MS) continue;
        this.transferSaidAt.set(key, Date.now());
        this.stream.write(`  ${c.name}: ${describeTransfer(t)}\n`);
      }
    }
  }

  stop(): void {}

  private once(key: string, value: string, line: string): void {
    if (this.said.get(key) === value) return;
    this.said.set(key, value);
    this.stream.write(`  ${line}\n`);
  }
}
