/**
 * Checkpoint images streamed into the destination cloud's worker, which hashes every byte as it
 * arrives: the restore needs no second read of the image, and the bytes cross the link as fast as
 * the link allows (one TCP stream, no request/answer round trips as sftp has).
 *
 * The stream rides the sftp session's SSH connection (host key checked, key authenticated) as a
 * forwarded channel that the destination's sshd opens only to the receiver's port (PermitOpen).
 * Protocol, one connection per transfer attempt (lines are JSON, then raw bytes):
 *   sender   → {"directory","kind":"checkpoint","fresh":[names to start again from zero]}
 *   receiver → {"have":{name: bytes it holds}}                     (a retry resumes from there)
 *   sender   → {"file","offset","length"} + length bytes, ...       (per file in order, appending)
 *   sender   → {"end":true,"files":[{"name","bytes"}]}
 *   receiver → {"files":[{"name","bytes","sha256"}]}                (digests of what it holds)
 * The receiver writes the digests next to the image (`checkpoint.received.json`) only once every
 * listed file is complete; the restore compares them with the sender's before restoring.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chown, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Duplex, Readable } from 'node:stream';
import { isPlainFileName } from '../lib/names';
import type { ArtifactReceipt, FileDigest, TransferEndpoint, TransferHeartbeat } from '../lib/types';
import { DigestCounter, manifestDigest, type VerifyResult } from './artifacts';
import type { Attempt } from './attempt';
import { forwardedChannel, withSftp } from './sftp-sessions';
import { Corrupter, hashPrefix } from './transfer';

const FRAME_BYTES = 1 << 20;
const MAX_LINE_BYTES = 1 << 20;

interface Hello {
  directory: string;
  /** "probe": `bytes` of filler, read and dropped, to measure the link just before a freeze. */
  kind: 'checkpoint' | 'probe';
  fresh: string[];
  /** Drop whatever the directory holds first (a new dump). */
  restart?: boolean;
  bytes?: number;
}

interface Frame {
  file?: string;
  offset?: number;
  length?: number;
  end?: boolean;
  files?: Array<{ name: string; bytes: number }>;
}

/** The record of what the receiver holds, with digests computed as the bytes arrived. */
export function receivedRecordPath(directory: string): string {
  return path.join(directory, 'checkpoint.received.json');
}

export async function readReceivedRecord(directory: string): Promise<FileDigest[] | undefined> {
  const file = receivedRecordPath(directory);
  return existsSync(file) ? (JSON.parse(await readFile(file, 'utf8')) as { files: FileDigest[] }).files : undefined;
}

/**
 * The restore's check of a streamed image: the receiver's digests (computed as the bytes arrived)
 * against the sender's, and every file's size at rest. Nothing is read again.
 */
export async function compareReceived(imageDir: string, sent: FileDigest[], received: FileDigest[]): Promise<VerifyResult> {
  const result: VerifyResult = { verifiedBytes: 0, bad: [] };
  for (const expected of sent) {
    const got = received.find((r) => r.name === expected.name);
    const size = await stat(path.join(imageDir, expected.name)).then((s) => s.size, () => -1);
    if (!got || got.sha256 !== expected.sha256 || got.bytes !== expected.bytes || size !== expected.bytes) {
      const what = got ? `received ${got.bytes} bytes sha256 ${got.sha256} (${size} at rest)` : 'never received whole';
      result.bad.push({ name: expected.name, problem: `${what}, sent ${expected.bytes} bytes sha256 ${expected.sha256}` });
    } else {
      result.verifiedBytes += got.bytes;
    }
  }
  return result;
}

/** Reads lines and exact byte counts from a stream, pulling (so the sender is held back while we write). */
class StreamReader {
  private readonly chunks: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);

  constructor(stream: Readable) {
    this.chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  private async fill(): Promise<void> {
    const { value, done } = await this.chunks.next();
    if (done) throw new Error('the stream ended early');
    this.pending = this.pending.length ? Buffer.concat([this.pending, value]) : value;
  }

  async line(): Promise<string> {
    for (;;) {
      const newline = this.pending.indexOf(10);
      if (newline >= 0) {
        const text = this.pending.subarray(0, newline).toString();
        this.pending = this.pending.subarray(newline + 1);
        return text;
      }
      if (this.pending.length > MAX_LINE_BYTES) throw new Error('a protocol line is too long');
      await this.fill();
    }
  }

  async *exactly(count: number): AsyncGenerator<Buffer> {
    for (let left = count; left > 0; ) {
      if (!this.pending.length) await this.fill();
      const take = Math.min(left, this.pending.length);
      yield this.pending.subarray(0, take);
      this.pending = this.pending.subarray(take);
      left -= take;
    }
  }
}

function write(stream: Duplex, data: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    stream.once('error', onError);
    const flushed = stream.write(data, (err) => {
      if (err) reject(err);
    });
    const done = () => {
      stream.off('error', onError);
      resolve();
    };
    if (flushed) done();
    else stream.once('drain', done);
  });
}

const plainName = isPlainFileName;

async function hashFile(file: string, end: number, hash: Hash): Promise<void> {
  if (end <= 0) return;
  for await (const chunk of createReadStream(file, { start: 0, end: end - 1, highWaterMark: FRAME_BYTES })) hash.update(chunk as Buffer);
}

// ---------------------------------------------------------------------------------------------
// Destination: the receiver, run by the cloud's worker for as long as it lives.

/** One stream into a directory at a time: a retry's stream waits for the broken one to let go. */
const directoryLocks = new Map<string, Promise<void>>();

async function withDirectoryLock<T>(dir: string, work: () => Promise<T>): Promise<T> {
  const before = directoryLocks.get(dir) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => (release = resolve));
  const chained = before.then(() => mine);
  directoryLocks.set(dir, chained);
  await before;
  try {
    return await work();
  } finally {
    release();
    if (directoryLocks.get(dir) === chained) directoryLocks.delete(dir);
  }
}

interface OpenFile {
  handle: FileHandle;
  hash: Hash;
  size: number;
}

async function receive(socket: Duplex, root: string, log: (line: string) => void): Promise<void> {
  const reader = new StreamReader(socket);
  const hello = JSON.parse(await reader.line()) as Hello;
  const directory = path.resolve(hello.directory ?? '');
  // Only into a migration's directory of this cloud, which prepareDestination created.
  if (!['checkpoint', 'probe'].includes(hello.kind) || !directory.startsWith(`${path.resolve(root)}/`) || path.basename(directory) !== 'incoming' || !existsSync(directory)) {
    throw new Error(`refused a stream into ${String(hello.directory)} (${String(hello.kind)})`);
  }
  if (hello.kind === 'probe') {
    const started = Date.now();
    for await (const chunk of reader.exactly(Number(hello.bytes) || 0)) void chunk;
    await write(socket, `${JSON.stringify({ ms: Date.now() - started })}\n`);
    return;
  }
  if (!Array.isArray(hello.fresh) || !hello.fresh.every(plainName)) throw new Error('refused a stream: bad file names');
  const target = path.join(directory, hello.kind);
  await withDirectoryLock(target, async () => {
    if (hello.restart) {
      await rm(target, { recursive: true, force: true });
      await rm(receivedRecordPath(directory), { force: true });
    }
    await mkdir(target, { recursive: true });
    // What arrives here belongs to whoever owns the directory (the peer's account): a resend by sftp may rewrite it.
    const owner = await stat(directory);
    await chown(target, owner.uid, owner.gid);
    for (const name of hello.fresh) if (existsSync(path.join(target, name))) await truncate(path.join(target, name), 0);
    const have: Record<string, number> = {};
    for (const entry of await readdir(target, { withFileTypes: true })) if (entry.isFile()) have[entry.name] = (await stat(path.join(target, entry.name))).size;
    await write(socket, `${JSON.stringify({ have })}\n`);
    const open_: Record<string, OpenFile> = {};
    try {
      for (;;) {
        const frame = JSON.parse(await reader.line()) as Frame;
        if (frame.end) {
          const files = await finish(target, frame.files ?? [], open_, hello.fresh);
          await write(socket, `${JSON.stringify({ files })}\n`);
          log(`received ${files.length} image file(s) into ${target}, hashed as they arrived`);
          return;
        }
        const { file, offset, length } = frame;
        if (!plainName(file) || !Number.isInteger(offset) || !Number.isInteger(length) || length! < 0) throw new Error('a malformed frame');
        let f = open_[file];
        if (!f) {
          const local = path.join(target, file);
          const size = existsSync(local) ? (await stat(local)).size : 0;
          const hash = createHash('sha256');
          await hashFile(local, size, hash); // a resumed file: what an earlier attempt delivered
          f = open_[file] = { handle: await open(local, existsSync(local) ? 'r+' : 'w', 0o600), hash, size };
          await f.handle.chown(owner.uid, owner.gid);
        }
        if (offset !== f.size) throw new Error(`${file}: a frame at ${offset}, but ${f.size} bytes are here`);
        for await (const chunk of reader.exactly(length!)) {
          f.hash.update(chunk);
          await f.handle.write(chunk, 0, chunk.length, f.size);
          f.size += chunk.length;
        }
      }
    } finally {
      for (const f of Object.values(open_)) await f.handle.close().catch(() => undefined);
    }
  });
}

/** Checks every listed file is whole, and records the digests of all of them (earlier ones kept unless sent again). */
async function finish(target: string, listed: Array<{ name: string; bytes: number }>, streamed: Record<string, OpenFile>, fresh: string[]): Promise<FileDigest[]> {
  const recordFile = receivedRecordPath(path.dirname(target));
  const earlier = new Map(((await readReceivedRecord(path.dirname(target))) ?? []).filter((f) => !fresh.includes(f.name)).map((f) => [f.name, f]));
  const files: FileDigest[] = [];
  for (const { name, bytes } of listed) {
    if (!plainName(name)) throw new Error('a malformed end frame');
    const local = path.join(target, name);
    const size = existsSync(local) ? (await stat(local)).size : -1;
    if (size !== bytes) throw new Error(`${name}: ${size} bytes here, ${bytes} sent`);
    const f = streamed[name];
    let sha256: string;
    if (f) sha256 = f.hash.digest('hex');
    else if (earlier.get(name)?.bytes === bytes) sha256 = earlier.get(name)!.sha256;
    else {
      // Delivered whole by an attempt that broke before its end: hashed from disk, once.
      const hash = createHash('sha256');
      await hashFile(local, size, hash);
      sha256 = hash.digest('hex');
    }
    files.push({ name, bytes, sha256 });
    earlier.set(name, { name, bytes, sha256 });
  }
  const all = [...earlier.values()].sort((a, b) => a.name.localeCompare(b.name));
  await writeFile(`${recordFile}.tmp`, JSON.stringify({ files: all }));
  await rename(`${recordFile}.tmp`, recordFile);
  return files;
}

/** Starts the receiver on the worker's loopback; retries a port still held by a worker that is exiting. */
export async function startImageReceiver(opts: { root: string; port: number; log?: (line: string) => void }): Promise<net.Server> {
  const log = opts.log ?? (() => undefined);
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    receive(socket, opts.root, log).then(
      () => socket.end(),
      (err: unknown) => {
        log(`image stream broken: ${err instanceof Error ? err.message : String(err)}`);
        socket.destroy();
      },
    );
  });
  for (let attempt = 1; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      return server;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 40) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Source: the sender.

/** What the sender needs of an activity attempt: progress, its abort signal, the fault switch, the previous attempt's heartbeat. */
export type StreamAttempt = Pick<Attempt, 'progress' | 'signal' | 'fault' | 'previousDetails'>;

export interface SendOptions {
  dir: string;
  attempt: StreamAttempt;
  /** Only these files, from zero (they arrived corrupt); all when absent. */
  only?: string[];
  /** A new dump: whatever the destination holds of an earlier one is dropped first. */
  restart?: boolean;
  /**
   * The dump writing the image, when the stream starts with it: CRIU's page files only grow
   * (pages are spliced onto their end), so they are sent as they grow; the rest once it ends.
   */
  dumping?: Promise<unknown>;
}

/**
 * Streams a flat image directory to the destination's receiver. A retry resumes each file where
 * the destination's copy ends (unless `restart`).
 */
export async function streamImage(opts: SendOptions & { endpoint: TransferEndpoint; privateKeyPath: string; attempt: Attempt }): Promise<ArtifactReceipt> {
  return withSftp(opts.endpoint, opts.privateKeyPath, opts.attempt.signal, async (sftp) => {
    if (!opts.endpoint.streamPort) throw new Error(`${opts.endpoint.host} offers no image stream`);
    const channel = await forwardedChannel(sftp, opts.endpoint.streamPort);
    return sendImage(channel, { ...opts, directory: opts.endpoint.localDirectory ?? opts.endpoint.directory });
  });
}

const PAGES_FILE = /^pages-\d+\.img$/;

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  const odd = entries.filter((e) => !e.isFile());
  if (odd.length) throw new Error(`${dir} is not a flat directory of files: ${odd.map((e) => e.name).join(', ')}`);
  return entries.map((e) => e.name).sort();
}

/** While CRIU writes the image, its page files go out as they grow; a failed dump fails the stream. */
async function followDump(dir: string, dumping: Promise<unknown>, sendUpTo: (name: string, end: number) => Promise<boolean>): Promise<void> {
  let dumpEnded = false;
  const dumped = dumping.then(
    () => (dumpEnded = true),
    () => (dumpEnded = true),
  );
  while (!dumpEnded) {
    let moved = false;
    for (const name of (await listFiles(dir)).filter((n) => PAGES_FILE.test(n))) {
      const size = await stat(path.join(dir, name)).then((s) => s.size, () => 0);
      if (await sendUpTo(name, size)) moved = true;
    }
    if (!moved) await Promise.race([dumped, new Promise((r) => setTimeout(r, 5))]);
  }
  await dumping;
}

/** The sender's side of the protocol over an open channel (closed at the end, or destroyed on failure or abort). */
export async function sendImage(channel: Duplex, opts: SendOptions & { directory: string }): Promise<ArtifactReceipt> {
  const started = Date.now();
  const { attempt } = opts;
  const prior = attempt.previousDetails as TransferHeartbeat | undefined;
  const priorWire = prior?.kind === 'checkpoint' ? prior.wireBytes : 0;
  // Bytes written this attempt, held at the destination (resumed ones too), not sent again; the
  // image's size is known once the dump has ended (while CRIU writes, it grows under the stream).
  let [wire, delivered, resumedBytes, totalBytes] = [0, 0, 0, 0];
  const beat = () => attempt.progress({ kind: 'checkpoint', bytes: delivered, wireBytes: priorWire + wire, done: [], ...(totalBytes ? { totalBytes } : {}) } satisfies TransferHeartbeat);
  const onAbort = () => channel.destroy(new Error('the transfer was given up'));
  attempt.signal.addEventListener('abort', onAbort, { once: true });
  const positions = new Map<string, { position: number; counter: DigestCounter }>();
  const tamper = new Corrupter();
  let corruptChecked = false;
  try {
    const reader = new StreamReader(channel);
    await write(channel, `${JSON.stringify({ directory: opts.directory, kind: 'checkpoint', fresh: opts.only ?? [], restart: !!opts.restart } satisfies Hello)}\n`);
    const { have } = JSON.parse(await reader.line()) as { have: Record<string, number> };

    /** Where the file's stream starts: what the destination holds already (hashed here too) or zero. */
    const begin = async (name: string) => {
      const known = positions.get(name);
      if (known) return known;
      const offset = have[name] ?? 0;
      const counter = new DigestCounter();
      if (offset > 0) {
        const size = (await stat(path.join(opts.dir, name))).size;
        if (offset > size) throw new Error(`${name}: the destination holds ${offset} bytes of a ${size}-byte file`);
        // The destination keeps what an earlier attempt delivered; its digest covers it all.
        await hashPrefix(path.join(opts.dir, name), offset, counter, attempt.signal);
        resumedBytes += offset;
        delivered += offset;
      }
      const entry = { position: offset, counter };
      positions.set(name, entry);
      return entry;
    };
    /** Sends the file's bytes from where its stream is up to `end`. */
    const sendUpTo = async (name: string, end: number) => {
      const entry = await begin(name);
      if (entry.position >= end) return false;
      for await (const raw of createReadStream(path.join(opts.dir, name), { start: entry.position, end: end - 1, highWaterMark: FRAME_BYTES })) {
        const chunk = raw as Buffer;
        entry.counter.absorb(chunk);
        const out = tamper.apply(chunk);
        await write(channel, `${JSON.stringify({ file: name, offset: entry.position, length: out.length } satisfies Frame)}\n`);
        await write(channel, out);
        entry.position += chunk.length;
        wire += chunk.length;
        delivered += chunk.length;
        beat();
        if (!corruptChecked && wire >= 1 << 20) {
          corruptChecked = true;
          if ((await attempt.fault('transfer:mid')) === 'corrupt') tamper.armed = true;
        }
      }
      return true;
    };

    if (opts.dumping) await followDump(opts.dir, opts.dumping, sendUpTo);
    const names = await listFiles(opts.dir);
    const unknown = (opts.only ?? []).filter((n) => !names.includes(n));
    if (unknown.length) throw new Error(`cannot resend ${unknown.join(', ')}: not in ${opts.dir}`);
    const wanted = opts.only ?? names;
    const sizes = await Promise.all(wanted.map(async (name) => (await stat(path.join(opts.dir, name))).size));
    totalBytes = sizes.reduce((sum, size) => sum + size, 0);
    const files: FileDigest[] = [];
    for (const [i, name] of wanted.entries()) {
      const size = sizes[i]!;
      // An empty file is created by an empty frame.
      if (size === 0 && have[name] === undefined && !positions.has(name)) await write(channel, `${JSON.stringify({ file: name, offset: 0, length: 0 } satisfies Frame)}\n`);
      await sendUpTo(name, size);
      files.push({ name, bytes: size, sha256: (await begin(name)).counter.digest() });
    }
    await write(channel, `${JSON.stringify({ end: true, files: files.map(({ name, bytes }) => ({ name, bytes })) } satisfies Frame)}\n`);
    const received = (JSON.parse(await reader.line()) as { files: FileDigest[] }).files;
    channel.end();
    files.sort((a, b) => a.name.localeCompare(b.name));
    const bytes = files.reduce((sum, f) => sum + f.bytes, 0);
    const remotePath = path.posix.join(opts.directory, 'checkpoint');
    return { kind: 'checkpoint', remotePath, bytes, wireBytes: resumedBytes + wire, resumedBytes, sha256: manifestDigest(files), files, receivedFiles: received, durationMs: Date.now() - started };
  } catch (err) {
    channel.destroy();
    throw err;
  } finally {
    attempt.signal.removeEventListener('abort', onAbort);
  }
}

/** Filler for link probes: random, so that no compression on the way could flatter the link. */
const FILLER = randomBytes(FRAME_BYTES);

/**
 * Measures the link to a destination just before a freeze: `bytes` of filler through the same
 * stream an image takes, timed from the first byte sent to the receiver's answer.
 */
export async function probeLink(opts: { endpoint: TransferEndpoint; privateKeyPath: string; signal: AbortSignal; bytes: number }): Promise<{ bytes: number; ms: number }> {
  return withSftp(opts.endpoint, opts.privateKeyPath, opts.signal, async (sftp) => {
    if (!opts.endpoint.streamPort) throw new Error(`${opts.endpoint.host} offers no image stream`);
    const channel = await forwardedChannel(sftp, opts.endpoint.streamPort);
    try {
      const reader = new StreamReader(channel);
      const started = process.hrtime.bigint();
      await write(channel, `${JSON.stringify({ directory: opts.endpoint.localDirectory ?? opts.endpoint.directory, kind: 'probe', fresh: [], bytes: opts.bytes } satisfies Hello)}\n`);
      for (let left = opts.bytes; left > 0; left -= FILLER.length) await write(channel, left >= FILLER.length ? FILLER : FILLER.subarray(0, left));
      JSON.parse(await reader.line());
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      channel.end();
      return { bytes: opts.bytes, ms };
    } catch (err) {
      channel.destroy();
      throw err;
    }
  });
}
