/**
 * The demo's client: keeps ONE TCP connection to the counter service and sends INCR every 10 ms
 * after each reply, forever. It never reconnects: if the connection breaks it records why and
 * exits non-zero. It keeps a status file up to date (atomic rename) with what a person or a test
 * wants to know: the local port (same port = same connection), replies, whether every value was
 * exactly the previous plus one (the server's memory survived), and the longest gap between replies.
 *   node dist/demo/client.js HOST PORT STATUS_FILE
 */
import { renameSync, writeFileSync } from 'node:fs';
import net from 'node:net';

export interface ClientStatus {
  connected: boolean;
  localPort?: number;
  replies: number;
  firstValue?: number;
  lastValue?: number;
  /** Replies that were not previous + 1: a reset or lost state. */
  discontinuities: number;
  maxGapMs: number;
  /** Wall-clock time (ms) of the reply that ended the longest gap. */
  maxGapEndedAt?: number;
  /** The latest gaps longer than 100 ms (the blackouts), with when each ended: per-migration blackouts. */
  longGaps: Array<{ endedAt: number; ms: number }>;
  lastReplyAt?: number;
  error?: string;
  closed: boolean;
}

function main(): void {
  const [host, portText, statusFile] = process.argv.slice(2);
  if (!host || !portText || !statusFile) throw new Error('usage: client HOST PORT STATUS_FILE');
  const status: ClientStatus = { connected: false, replies: 0, discontinuities: 0, maxGapMs: 0, longGaps: [], closed: false };
  const save = () => {
    writeFileSync(`${statusFile}.tmp`, JSON.stringify(status));
    renameSync(`${statusFile}.tmp`, statusFile);
  };
  const socket = net.connect(Number(portText), host);
  socket.setNoDelay(true);
  let pending = '';
  socket.on('connect', () => {
    status.connected = true;
    status.localPort = socket.localPort;
    socket.write('INCR\n');
  });
  socket.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const value = Number(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      const now = Date.now();
      if (status.lastReplyAt !== undefined && now - status.lastReplyAt > status.maxGapMs) {
        status.maxGapMs = now - status.lastReplyAt;
        status.maxGapEndedAt = now;
      }
      if (status.lastReplyAt !== undefined && now - status.lastReplyAt > 100) {
        status.longGaps.push({ endedAt: now, ms: now - status.lastReplyAt });
        if (status.longGaps.length > 100) status.longGaps.shift();
      }
      if (status.lastValue !== undefined && value !== status.lastValue + 1) status.discontinuities++;
      status.firstValue ??= value;
      status.lastValue = value;
      status.lastReplyAt = now;
      status.replies++;
      setTimeout(() => socket.write('INCR\n'), 10);
    }
  });
  const finish = (error?: string) => {
    status.closed = true;
    if (error) status.error = error;
    save();
    process.exit(error ? 1 : 0);
  };
  socket.on('error', (err) => finish(`connection error: ${err.message}`));
  socket.on('close', () => finish(status.error ?? 'connection closed by the server'));
  process.on('SIGTERM', () => {
    status.closed = true;
    save();
    socket.destroy();
    process.exit(0);
  });
  setInterval(save, 100);
  save();
}

main();
