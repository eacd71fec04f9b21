import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { compareReceived, readReceivedRecord, sendImage, startImageReceiver, type StreamAttempt } from '../../activities/image-stream';
import { sha256File } from '../../activities/artifacts';

const MiB = 1 << 20;

function attempt(fault?: 'corrupt'): StreamAttempt {
  return { progress: () => undefined, signal: new AbortController().signal, fault: async () => fault, previousDetails: undefined };
}

describe('image stream (the receiver hashes what arrives; the restore compares, never re-reads)', () => {
  let root: string;
  let image: string;
  let directory: string;
  let server: net.Server;
  let port: number;
  const connect = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
      socket.once('error', reject);
    });

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'migravi-stream-'));
    image = path.join(root, 'source-image');
    directory = path.join(root, 'migrations', 'm1', 'kv', 'incoming');
    await mkdir(image, { recursive: true });
    await mkdir(directory, { recursive: true });
    await writeFile(path.join(image, 'pages-1.img'), randomBytes(3 * MiB + 123));
    await writeFile(path.join(image, 'core-1.img'), randomBytes(4000));
    await writeFile(path.join(image, 'inventory.img'), Buffer.alloc(0));
    server = await startImageReceiver({ root: path.join(root, 'migrations'), port: 0, log: (l) => process.env.STREAM_LOG && console.log(l) });
    port = (server.address() as net.AddressInfo).port;
  });

  afterEach(async () => {
    await new Promise((resolve) => server.close(resolve));
    await rm(root, { recursive: true, force: true });
  });

  it('delivers every file byte for byte, with the receiver\'s digests equal to the sender\'s', async () => {
    const receipt = await sendImage(await connect(), { dir: image, directory, attempt: attempt() });
    assert.equal(receipt.files!.length, 3);
    for (const f of receipt.files!) {
      const atRest = await sha256File(path.join(directory, 'checkpoint', f.name));
      assert.equal(atRest.sha256, f.sha256, `${f.name} at rest`);
    }
    const recorded = await readReceivedRecord(directory);
    assert.deepEqual(recorded, receipt.files);
    const check = await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, recorded!);
    assert.deepEqual(check.bad, []);
    assert.equal(check.verifiedBytes, 3 * MiB + 123 + 4000);
  });

  it('a retry resumes each file where the destination\'s copy ends', async () => {
    await mkdir(path.join(directory, 'checkpoint'));
    const whole = await readFile(path.join(image, 'pages-1.img'));
    await writeFile(path.join(directory, 'checkpoint', 'pages-1.img'), whole.subarray(0, MiB + 7));
    const receipt = await sendImage(await connect(), { dir: image, directory, attempt: attempt() });
    assert.equal(receipt.resumedBytes, MiB + 7);
    assert.equal(receipt.wireBytes, receipt.bytes, 'what the earlier attempt delivered counts once: nothing crossed twice');
    assert.deepEqual(await readFile(path.join(directory, 'checkpoint', 'pages-1.img')), whole);
    const check = await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, (await readReceivedRecord(directory))!);
    assert.deepEqual(check.bad, []);
  });

  it('a byte flipped on the way is caught by the comparison; sending that file again from zero mends it', async () => {
    const receipt = await sendImage(await connect(), { dir: image, directory, attempt: attempt('corrupt') });
    const check = await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, (await readReceivedRecord(directory))!);
    assert.deepEqual(check.bad.map((b) => b.name), ['pages-1.img']);
    const again = await sendImage(await connect(), { dir: image, directory, attempt: attempt(), only: ['pages-1.img'] });
    assert.equal(again.resumedBytes, 0);
    const recorded = (await readReceivedRecord(directory))!;
    assert.equal(recorded.length, 3, 'the files not sent again keep their recorded digests');
    assert.deepEqual((await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, recorded)).bad, []);
  });

  it('a stream broken mid-file records nothing; the next one completes it', async () => {
    const socket = await connect();
    socket.write(`${JSON.stringify({ directory, kind: 'checkpoint', fresh: [] })}\n`);
    socket.write(`${JSON.stringify({ file: 'pages-1.img', offset: 0, length: 2 * MiB })}\n`);
    socket.write((await readFile(path.join(image, 'pages-1.img'))).subarray(0, MiB));
    await new Promise((r) => setTimeout(r, 100));
    socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(existsSync(path.join(directory, 'checkpoint.received.json')), false);
    const receipt = await sendImage(await connect(), { dir: image, directory, attempt: attempt() });
    assert.ok(receipt.resumedBytes > 0, 'the second stream started from zero');
    assert.deepEqual((await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, (await readReceivedRecord(directory))!)).bad, []);
  });

  it('streams the page file while the dump still writes it, the rest once the dump ends; a new dump drops what an earlier one left', async () => {
    const dir = path.join(root, 'dumping');
    await mkdir(dir);
    // What an earlier, broken dump left at the destination: dropped, since this is a new dump.
    await mkdir(path.join(directory, 'checkpoint'));
    await writeFile(path.join(directory, 'checkpoint', 'pages-1.img'), randomBytes(MiB));
    await writeFile(path.join(directory, 'checkpoint', 'stale.img'), 'x');
    const pages = randomBytes(4 * MiB);
    let dumpEnded = false;
    let sentWhileDumping = 0;
    // CRIU appends pages as it reads them from the process, then writes the other files at the end.
    const dumping = (async () => {
      for (let i = 0; i < 4; i++) {
        await appendFile(path.join(dir, 'pages-1.img'), pages.subarray(i * MiB, (i + 1) * MiB));
        await new Promise((r) => setTimeout(r, 40));
      }
      await writeFile(path.join(dir, 'core-1.img'), 'core');
      dumpEnded = true;
    })();
    const progress = (details?: unknown) => {
      if (!dumpEnded) sentWhileDumping = (details as { bytes: number }).bytes;
    };
    const receipt = await sendImage(await connect(), { dir, directory, attempt: { ...attempt(), progress }, restart: true, dumping });
    assert.ok(sentWhileDumping >= MiB, `only ${sentWhileDumping} B went while the dump ran`);
    assert.deepEqual(receipt.files!.map((f) => f.name), ['core-1.img', 'pages-1.img']);
    assert.equal(receipt.resumedBytes, 0);
    assert.deepEqual(await readFile(path.join(directory, 'checkpoint', 'pages-1.img')), pages);
    assert.equal(existsSync(path.join(directory, 'checkpoint', 'stale.img')), false);
    assert.deepEqual((await compareReceived(path.join(directory, 'checkpoint'), receipt.files!, (await readReceivedRecord(directory))!)).bad, []);
  });

  it('a failed dump fails its stream', async () => {
    const dir = path.join(root, 'failing');
    await mkdir(dir);
    const dumping = new Promise((_resolve, reject) => setTimeout(() => reject(new Error('criu: dump failed')), 30));
    await assert.rejects(sendImage(await connect(), { dir, directory, attempt: attempt(), restart: true, dumping }), /dump failed/);
    assert.equal(existsSync(path.join(directory, 'checkpoint.received.json')), false);
  });

  it('refuses to write outside the migrations of its cloud', async () => {
    await assert.rejects(sendImage(await connect(), { dir: image, directory: path.join(root, 'elsewhere'), attempt: attempt() }));
    await assert.rejects(sendImage(await connect(), { dir: image, directory: `${directory}/../../../../..`, attempt: attempt() }));
    assert.equal(existsSync(path.join(root, 'elsewhere')), false);
  });
});
