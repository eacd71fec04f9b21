/**
 * The demo's client: keeps ONE TCP connection to a service and sends a request every 10 ms after
 * each reply, forever: "INCR" to the counter service (protocol kv), or a keep-alive HTTP GET to a
 * web server that answers with the connection's request number (protocol http: demo/nginx). It never reconnects: if the connection breaks it records why and
 * exits non-zero. It keeps a status file up to date (atomic rename) with what a person or a test
 * wants to know: the local port (same port = same connection), replies, whether every value was
 * exactly the previous plus one (the server's memory survived), and the longest gap between replies.
 *   node dist/demo/client.js HOST PORT STATUS_FILE [kv|http]
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
  /** The latest gaps longer than 25 ms (a normal one is the 10 ms pause plus a round trip): slow answers, e.g. during a post-copy window. */
  slowGaps?: Array<{ endedAt: number; ms: number }>;
  lastReplyAt?: number;
  error?: string;
  closed: boolean;
}

function main(): void {
  const [host, portText, statusFile, protocol = 'kv'] = process.argv.slice(2);
  if (!host || !portText || !statusFile || !['kv', 'http'].includes(protocol)) throw new Error('usage: client HOST PORT STATUS_FILE [kv|http]');
  const request = protocol === 'http' ? `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n` : 'INCR\n';
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
    socket.write(request);
  });
  /** The next complete reply's value, removed from `pending`; undefined until one is complete. */
  const nextValue = (): number | undefined => {
    if (protocol === 'kv') {
      const newline = pending.indexOf('\n');
      if (newline < 0) return undefined;
      const value = Number(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      return value;
    }
    const headerEnd = pending.indexOf('\r\n\r\n');
    if (headerEnd < 0) return undefined;
    const length = Number(/content-length:\s*(\d+)/i.exec(pending.slice(0, headerEnd))?.[1] ?? NaN);
    if (!Number.isFinite(length) || pending.length < headerEnd + 4 + length) return undefined;
    const value = Number(pending.slice(headerEnd + 4, headerEnd + 4 + length));
    pending = pending.slice(headerEnd + 4 + length);
    return value;
  };
  socket.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    for (let value = nextValue(); value !== undefined; value = nextValue()) {
      const now = Date.now();
      if (status.lastReplyAt !== undefined && now - status.lastReplyAt > status.maxGapMs) {
        status.maxGapMs = now - status.lastReplyAt;
        status.maxGapEndedAt = now;
      }
      if (status.lastReplyAt !== undefined && now - status.lastReplyAt > 100) {
        status.longGaps.push({ endedAt: now, ms: now - status.lastReplyAt });
        if (status.longGaps.length > 100) status.longGaps.shift();
      }
      if (status.lastReplyAt !== undefined && now - status.lastReplyAt > 25) {
        (status.slowGaps ??= []).push({ endedAt: now, ms: now - status.lastReplyAt });
        if (status.slowGaps.length > 500) status.slowGaps.shift();
      }
      if (status.lastValue !== undefined && value !== status.lastValue + 1) status.discontinuities++;
      status.firstValue ??= value;
      status.lastValue = value;
      status.lastReplyAt = now;
      status.replies++;
      setTimeout(() => socket.write(request), 10);
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
