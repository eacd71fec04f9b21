/**
 * CRIU's images as MigraVI reads them: the pagemap images post-copy uses, and the sockets the TCP
 * nudge needs. Pagemaps as post-copy reads them, on images written here byte for byte in CRIU's
 * format (two magic words, then "u32 length + protobuf" records): which pages are eager, which
 * lazy, and the split of an image into what the freeze sends and its restorable rebuild.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { establishedConnections } from '../../providers/runtime/criu-tcp';
import { eagerExtents, joinEagerPages, lazyPageCount, readPagemap, splitForPostCopy, PAGE_SIZE, imageTasks } from '../../providers/runtime/criu-pages';

const PE_LAZY = 2;
const PE_PRESENT = 4;

function varint(value: bigint): Buffer {
  const bytes: number[] = [];
  do {
    let byte = Number(value & 0x7fn);
    value >>= 7n;
    if (value) byte |= 0x80;
    bytes.push(byte);
  } while (value);
  return Buffer.from(bytes);
}

function message(fields: Array<[number, bigint | Buffer]>): Buffer {
  return Buffer.concat(
    fields.flatMap(([field, value]) => (Buffer.isBuffer(value) ? [varint(BigInt((field << 3) | 2)), varint(BigInt(value.length)), value] : [varint(BigInt(field << 3)), varint(value)])),
  );
}

function image(records: Buffer[]): Buffer {
  const magic = Buffer.alloc(8);
  magic.writeUInt32LE(0x54564319, 0); // the values are not checked by the reader; CRIU's own come first
  magic.writeUInt32LE(0x56084025, 4);
  return Buffer.concat([magic, ...records.flatMap((r) => { const len = Buffer.alloc(4); len.writeUInt32LE(r.length); return [len, r]; })]);
}

/** A task of 1 + 2 eager pages around 3 lazy ones, one absent (zero) page, then 1 more lazy page. */
const ENTRIES: Array<{ vaddr: number; pages: number; flags: number }> = [
  { vaddr: 0x400000, pages: 1, flags: PE_PRESENT },
  { vaddr: 0x7f0000000000, pages: 3, flags: PE_PRESENT | PE_LAZY },
  { vaddr: 0x7f0000003000, pages: 1, flags: 0 },
  { vaddr: 0x7f0000010000, pages: 2, flags: PE_PRESENT },
  { vaddr: 0x7f0000020000, pages: 1, flags: PE_PRESENT | PE_LAZY },
];

describe('CRIU images: pages for post-copy, sockets for the TCP nudge', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-pages-'));
    const full = path.join(dir, 'full');
    await mkdir(full);
    await writeFile(path.join(full, 'pagemap-7.img'), image([message([[1, 12n]]), ...ENTRIES.map((e) => message([[1, BigInt(e.vaddr)], [2, BigInt(e.pages)], [4, BigInt(e.flags)]]))]));
    // Page i of the pages file is filled with byte i+1: where each page lands is visible.
    const present = ENTRIES.filter((e) => e.flags & PE_PRESENT).reduce((sum, e) => sum + e.pages, 0);
    await writeFile(path.join(full, 'pages-12.img'), Buffer.concat(Array.from({ length: present }, (_, i) => Buffer.alloc(PAGE_SIZE, i + 1))));
    await writeFile(path.join(full, 'core-7.img'), 'process state');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the entries, their flags and where their pages lie in the pages file', async () => {
    const { pagesId, entries } = await readPagemap(path.join(dir, 'full', 'pagemap-7.img'));
    assert.equal(pagesId, 12);
    assert.deepEqual(entries.map((e) => [e.vaddr, e.pages, e.lazy, e.offset]), [
      [0x400000, 1, false, 0],
      [0x7f0000000000, 3, true, PAGE_SIZE],
      [0x7f0000003000, 1, false, undefined],
      [0x7f0000010000, 2, false, 4 * PAGE_SIZE],
      [0x7f0000020000, 1, true, 6 * PAGE_SIZE],
    ]);
    const [task] = await imageTasks(path.join(dir, 'full'));
    assert.equal(task!.pid, 7);
    assert.equal(task!.pagesFile, 'pages-12.img');
    assert.deepEqual(eagerExtents(task!), [[0, PAGE_SIZE], [4 * PAGE_SIZE, 2 * PAGE_SIZE]]);
    assert.equal(lazyPageCount([task!]), 4);
  });

  it('sends the eager pages only, and rebuilds a pages file whose eager pages are in place and lazy ones are holes', async () => {
    const sent = path.join(dir, 'sent');
    const counts = await splitForPostCopy(path.join(dir, 'full'), sent);
    assert.deepEqual(counts, { lazyBytes: 4 * PAGE_SIZE, eagerBytes: 3 * PAGE_SIZE });
    assert.deepEqual((await readdir(sent)).sort(), ['core-7.img', 'pagemap-7.img', 'pages-12.img.eager', 'post-copy.json']);
    assert.equal((await stat(path.join(sent, 'pages-12.img.eager'))).size, 3 * PAGE_SIZE);
    await joinEagerPages(sent);
    const rebuilt = await readFile(path.join(sent, 'pages-12.img'));
    const original = await readFile(path.join(dir, 'full', 'pages-12.img'));
    assert.equal(rebuilt.length, original.length);
    const page = (buf: Buffer, i: number) => buf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    for (const i of [0, 4, 5]) assert.ok(page(rebuilt, i).equals(page(original, i)), `eager page ${i} differs`);
    for (const i of [1, 2, 3, 6]) assert.ok(page(rebuilt, i).equals(Buffer.alloc(PAGE_SIZE)), `lazy page ${i} is not a hole`);
  });

  it('lists the established TCP connections with each peer address and the socket\'s rcv_nxt', async () => {
    const sockets = path.join(dir, 'sockets');
    await mkdir(sockets);
    // CRIU keeps 10.0.0.5 as the u32 of its bytes in network order: 0x0500000a on this host.
    const inet = (ino: number, state: number, local: number, peer: number) =>
      message([[1, 4n], [2, BigInt(ino)], [4, message([[1, 1n], [2, BigInt(ino)], [3, 2n], [4, 1n], [5, 6n], [6, BigInt(state)], [7, 7000n], [8, 45678n], [9, 0n], [10, 0n], [11, BigInt(local)], [12, BigInt(peer)]])]]);
    await writeFile(path.join(sockets, 'files.img'), image([
      inet(0x1f2e, 1, 0x0500000a, 0x0900000a), // established, with its stream
      inet(0x1f2f, 10, 0x0500000a, 0), // listening: no peer
      message([[1, 1n], [2, 9n]]), // a regular file
    ]));
    await writeFile(path.join(sockets, 'tcp-stream-1f2e.img'), image([message([[1, 0n], [2, 3_000_000_123n], [3, 0n], [4, 77n], [5, 0n], [6, 7n], [7, 1460n]])]));
    assert.deepEqual(await establishedConnections(sockets), [{ local: '10.0.0.5', localPort: 7000, peer: '10.0.0.9', peerPort: 45678, rcvNxt: 3_000_000_123 }]);
  });
});
