/**
 * Volumes move live, in two rounds. "pre" (while the container runs): every entry of the volume
 * is sent as a tar stream, and the destination unpacks and re-hashes it. "final" (inside the
 * freeze): only what changed since is sent — entries whose metadata differ from what the pre
 * round recorded, new ones, and "racy" files (modified within a margin of the pre round's walk,
 * whose change the file system's coarse timestamps could hide, as git does for its index) — with
 * the list of entries deleted meanwhile. So the blackout grows with what the container wrote
 * during the pre-copy, not with the size of the volume.
 *
 * The digest of every regular file is taken from the tar stream as it leaves (a parser on a tee
 * of the stream), so it is the digest of the bytes sent, even for a file that changed while it
 * was read; the destination re-hashes every file of a round at rest before the restore.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { extract } from 'tar-stream';
import { run } from '../lib/exec';
import type { FileDigest, TransferEndpoint, TransferHeartbeat, VolumeReceipt } from '../lib/types';
import { DigestCounter, sha256File, tarBytesOf } from './artifacts';
import type { Attempt } from './attempt';
import { withSftp } from './sftp-sessions';
import { Corrupter } from './transfer';

/** A file modified this close to the pre round's walk is sent again in the final round. */
const RACY_MARGIN_NS = 2_000_000_000n;

interface EntryStat {
  type: 'file' | 'dir' | 'symlink' | 'other';
  /** Everything a change shows in: a write, a rename over it, chmod/chown. */
  key: string;
  mtimeNs: string;
  /** Bytes (of a file), for the progress bars' estimate of the round's tar. */
  size: number;
}

interface WalkRecord {
  walkStartedNs: string;
  entries: Record<string, EntryStat>;
}

async function walk(root: string, onEntry: () => void): Promise<WalkRecord> {
  // The wall clock, as file times are: a file written after this has an mtime at or above it.
  const walkStartedNs = String(BigInt(Date.now()) * 1_000_000n);
  const entries: Record<string, EntryStat> = {};
  const entryOf = async (relPath: string): Promise<EntryStat> => {
    const st = await lstat(path.join(root, relPath), { bigint: true });
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
    return { type, key: [type, st.ino, st.size, st.mode, st.uid, st.gid, st.mtimeNs, st.ctimeNs].join(':'), mtimeNs: String(st.mtimeNs), size: Number(st.size) };
  };
  // The volume's own directory is an entry too: its mode and owner matter (PostgreSQL refuses a data directory that is not 0700).
  entries['.'] = await entryOf('.');
  const visit = async (rel: string): Promise<void> => {
    for (const dirent of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const relPath = rel ? `${rel}/${dirent.name}` : dirent.name;
      onEntry(); // a big volume takes a while to walk: that is progress too
      entries[relPath] = await entryOf(relPath);
      if (entries[relPath]!.type === 'dir') await visit(relPath);
    }
  };
  await visit('');
  return { walkStartedNs, entries };
}

export interface VolumeRoundInput {
  /** The volume's directory at the source. */
  dir: string;
  index: number;
  round: 'pre' | 'final';
  /** Where the source keeps what the pre round saw (read by the final round). */
  recordFile: string;
  endpoint: TransferEndpoint;
  privateKeyPath: string;
  attempt: Attempt;
}

/** Source: sends one round of one volume; returns what was sent (the manifest travels as a file). */
export async function sendVolumeRound(input: VolumeRoundInput): Promise<VolumeReceipt> {
  const started = Date.now();
  const now = await walk(input.dir, () => input.attempt.progress());
  let changed: string[];
  let deleted: string[] = [];
  if (input.round === 'pre') {
    changed = Object.keys(now.entries);
  } else {
    const before = JSON.parse(await readFile(input.recordFile, 'utf8')) as WalkRecord;
    const racySince = BigInt(before.walkStartedNs) - RACY_MARGIN_NS;
    changed = Object.entries(now.entries)
      .filter(([p, e]) => {
        const was = before.entries[p];
        return !was || was.key !== e.key || (e.type === 'file' && BigInt(e.mtimeNs) >= racySince);
      })
      .map(([p]) => p);
    // Gone, or replaced by another type of entry (removed first, then unpacked anew).
    deleted = Object.keys(before.entries).filter((p) => !now.entries[p] || now.entries[p]!.type !== before.entries[p]!.type);
  }
  const base = `volume-${input.index}.${input.round}`;
  const remoteTar = path.posix.join(input.endpoint.directory, `${base}.tar`);
  const remoteManifest = path.posix.join(input.endpoint.directory, `${base}.json`);
  const totalBytes = tarBytesOf(changed.map((p) => (now.entries[p]!.type === 'file' ? now.entries[p]!.size : 0)));
  const counter = new DigestCounter((bytes) => input.attempt.progress({ kind: 'volume', bytes, wireBytes: bytes, done: [], totalBytes } satisfies TransferHeartbeat));
  const files: FileDigest[] = [];
  await withSftp(input.endpoint, input.privateKeyPath, input.attempt.signal, async (sftp) => {
    const listFile = `${input.recordFile}.${input.round}.list`;
    await writeFile(listFile, changed.map((p) => (p === '.' ? '.\0' : `./${p}\0`)).join(''));
    // --no-recursion: a changed directory is sent as itself (its mode, owner), not with all it holds.
    const tar = spawn('tar', ['--numeric-owner', '--no-recursion', '--null', '-C', input.dir, '-cf', '-', '-T', listFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    tar.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const tarDone = new Promise<void>((resolve, reject) => {
      tar.on('error', reject);
      // Exit 1 is "a file changed as we read it": what was read is what is hashed and sent, and
      // the change shows in the final round.
      tar.on('close', (code) => (code === 0 || (code === 1 && input.round === 'pre') ? resolve() : reject(new Error(`tar of volume ${input.dir} failed (exit ${code}): ${stderr.trim()}`))));
    });
    const parsed = hashTarEntries(files);
    // Fault point "volumes:pre|final": tests corrupt the stream after it was hashed, or kill the worker.
    const tamper = new Corrupter();
    tamper.armed = (await input.attempt.fault(`volumes:${input.round}`)) === 'corrupt';
    const tee = new PassThrough();
    tar.stdout.pipe(counter);
    counter.pipe(tamper).pipe(tee);
    counter.pipe(parsed.input);
    await Promise.all([sftp.put(tee, remoteTar, { writeStreamOptions: { mode: 0o600 } }), tarDone, parsed.done]);
    await rm(listFile, { force: true });
    files.sort((a, b) => a.name.localeCompare(b.name));
    await sftp.put(Buffer.from(JSON.stringify({ files, deleted })), remoteManifest);
  });
  if (input.round === 'pre') await writeFile(input.recordFile, JSON.stringify(now));
  const manifestText = JSON.stringify({ files, deleted });
  return {
    kind: 'volume',
    index: input.index,
    round: input.round,
    remotePath: remoteTar,
    bytes: counter.bytes,
    wireBytes: counter.bytes + Buffer.byteLength(manifestText),
    sha256: counter.digest(),
    manifestSha256: createHash('sha256').update(manifestText).digest('hex'),
    changedEntries: changed.length,
    deletedEntries: deleted.length,
    fileBytes: files.reduce((sum, f) => sum + f.bytes, 0),
    durationMs: Date.now() - started,
  };
}

/** Digests of the regular files in a tar stream, as the stream goes by. */
function hashTarEntries(into: FileDigest[]): { input: NodeJS.WritableStream; done: Promise<void> } {
  const parser = extract();
  parser.on('entry', (header, stream, next) => {
    if (header.type !== 'file') {
      stream.on('end', next).resume();
      return;
    }
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (chunk: unknown) => {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    });
    stream.on('end', () => {
      into.push({ name: header.name.replace(/^\.\//, ''), bytes, sha256: hash.digest('hex') });
      next();
    });
  });
  const done = new Promise<void>((resolve, reject) => {
    parser.on('finish', resolve);
    parser.on('error', reject);
  });
  return { input: parser, done };
}

/**
 * Destination: checks the round's stream and manifest against the sender's digests, applies the
 * deletions, unpacks the entries into the volume's directory here, and re-hashes every file of
 * the round at rest. Throws naming the files that differ.
 */
export async function receiveVolumeRound(receipt: VolumeReceipt, incomingDir: string, volumeDir: string, attempt: Attempt): Promise<{ files: number; verifiedBytes: number; recomputedSha256: string; verifyMs: number }> {
  const started = Date.now();
  const base = path.join(incomingDir, `volume-${receipt.index}.${receipt.round}`);
  const manifestText = await readFile(`${base}.json`, 'utf8');
  if (createHash('sha256').update(manifestText).digest('hex') !== receipt.manifestSha256) throw new Error(`the manifest of volume ${receipt.index} (${receipt.round}) arrived corrupt`);
  const manifest = JSON.parse(manifestText) as { files: FileDigest[]; deleted: string[] };
  const tarCheck = await sha256File(`${base}.tar`, { signal: attempt.signal, onProgress: () => attempt.progress() });
  if (tarCheck.sha256 !== receipt.sha256) throw new Error(`volume ${receipt.index} (${receipt.round}) arrived corrupt: sha256 ${tarCheck.sha256}, sent ${receipt.sha256}`);
  await attempt.fault(`receiveVolumes:${receipt.round}`);
  await mkdir(volumeDir, { recursive: true });
  for (const gone of manifest.deleted) {
    if (gone.split('/').includes('..')) throw new Error(`volume ${receipt.index}: refusing to delete ${gone}`);
    await rm(path.join(volumeDir, gone), { recursive: true, force: true });
  }
  // As root: owners, modes and times as the source had them.
  await run('tar', ['--numeric-owner', '-p', '-C', volumeDir, '-xf', `${base}.tar`]);
  const recomputed: FileDigest[] = [];
  const bad: string[] = [];
  for (const expected of manifest.files) {
    const actual = await sha256File(path.join(volumeDir, expected.name), { signal: attempt.signal, onProgress: () => attempt.progress() });
    recomputed.push({ name: expected.name, ...actual });
    if (actual.sha256 !== expected.sha256 || actual.bytes !== expected.bytes) bad.push(`${expected.name}: ${actual.bytes} bytes sha256 ${actual.sha256}, sent ${expected.bytes} bytes ${expected.sha256}`);
  }
  if (bad.length) throw new Error(`volume ${receipt.index} (${receipt.round}) differs at rest: ${bad.join('; ')}`);
  await rm(`${base}.tar`, { force: true });
  await rm(`${base}.json`, { force: true });
  const lines = recomputed.sort((a, b) => a.name.localeCompare(b.name)).map((f) => `${f.name} ${f.bytes} ${f.sha256}\n`).join('');
  return { files: recomputed.length, verifiedBytes: recomputed.reduce((s, f) => s + f.bytes, 0), recomputedSha256: createHash('sha256').update(lines).digest('hex'), verifyMs: Date.now() - started };
}
