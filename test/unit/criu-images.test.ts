/**
 * CRIU's images as MigraVI reads them: the pagemap images post-copy uses, and the sockets the TCP
 * nudge needs. Pagemaps as post-copy reads them, on images written here byte for byte in CRIU's
 * format (two magic words, then "u32 length + protobuf" records): which pages are eager, which
 * lazy; and a held dump's durable image and page server, read from a live process whose memory
 * the test knows.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { establishedConnections } from '../../providers/runtime/criu-tcp';
import { lazyPageCount, readPagemap, PageServerClient, PAGE_SIZE, imageTasks } from '../../providers/runtime/criu-pages';
import { ProcessPageServer, writeImageFromProcesses, writtenFromProcesses } from '../../providers/runtime/lazy-dump';

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
    assert.equal(lazyPageCount([task!]), 4);
  });

  describe('a held dump: its lazy pages read from the live process', () => {
    // A process holding 4 pages of a known pattern (page i filled with 0xA0 + i), its address printed.
    let child: ChildProcess;
    let pid: number;
    let addr: number;
    const pattern = Buffer.concat([0, 1, 2, 3].map((i) => Buffer.alloc(PAGE_SIZE, 0xa0 + i)));

    before(async () => {
      child = spawn('python3', ['-c', [
        'import mmap, ctypes, sys',
        'm = mmap.mmap(-1, 4 * 4096)',
        'm.write(b"".join(bytes([0xa0 + i]) * 4096 for i in range(4)))',
        'print(hex(ctypes.addressof(ctypes.c_char.from_buffer(m))), flush=True)',
        'sys.stdin.read()',
      ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
      pid = child.pid!;
      addr = Number(await new Promise<string>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()))));
      // What `criu dump --lazy-pages` leaves: the eager page in the pages file, the lazy ones flagged lazy only.
      const lazy = path.join(dir, 'held');
      await mkdir(lazy);
      await writeFile(path.join(lazy, `pagemap-${pid}.img`), image([message([[1, 12n]]), message([[1, 0x400000n], [2, 1n], [4, BigInt(PE_PRESENT)]]), message([[1, BigInt(addr)], [2, 4n], [4, BigInt(PE_LAZY)]])]));
      await writeFile(path.join(lazy, 'pages-12.img'), Buffer.alloc(PAGE_SIZE, 0xee));
      await writeFile(path.join(lazy, 'core-7.img'), 'process state');
    });

    after(() => {
      child.kill('SIGKILL');
    });

    it('counts the lazy pages a lazy dump left out of its pages file', async () => {
      const tasks = await imageTasks(path.join(dir, 'held'));
      assert.equal(lazyPageCount(tasks), 4);
      assert.deepEqual(tasks[0]!.entries.map((e) => [e.lazy, e.offset]), [[false, 0], [true, undefined]]);
    });

    it('writes the durable image: the eager page, then the lazy ones read from the process, flagged present', async () => {
      const durable = path.join(dir, 'durable');
      const result = await writeImageFromProcesses(path.join(dir, 'held'), durable, new Map([[pid, pid]]), async () => undefined);
      assert.equal(result.bytes, 5 * PAGE_SIZE);
      assert.ok(await writtenFromProcesses(durable));
      assert.deepEqual((await readdir(durable)).sort(), ['core-7.img', `pagemap-${pid}.img`, 'pages-12.img']);
      const pages = await readFile(path.join(durable, 'pages-12.img'));
      assert.ok(pages.subarray(0, PAGE_SIZE).equals(Buffer.alloc(PAGE_SIZE, 0xee)), 'the eager page moved');
      assert.ok(pages.subarray(PAGE_SIZE).equals(pattern), 'the lazy pages are not the process\'s');
      const { entries } = await readPagemap(path.join(durable, `pagemap-${pid}.img`));
      assert.deepEqual(entries.map((e) => [e.vaddr, e.pages, e.lazy, e.offset]), [[0x400000, 1, false, 0], [addr, 4, true, PAGE_SIZE]]);
    });

    it('serves the lazy pages over CRIU\'s page-server protocol, from the process and then from the durable image', async () => {
      const server = await ProcessPageServer.forHeldDump(path.join(dir, 'held'), new Map([[pid, pid]]), () => undefined);
      const socket = net.connect(await server.listen(0), '127.0.0.1');
      try {
        const client = new PageServerClient(socket);
        const first = await client.get(pid, addr + PAGE_SIZE, 8); // at most to the end of its entry
        assert.equal(first.pages, 3);
        assert.ok(first.data.equals(pattern.subarray(PAGE_SIZE)));
        await server.useImage(path.join(dir, 'durable'));
        child.kill('SIGKILL'); // from now on only the image has them
        const again = await client.get(pid, addr, 2);
        assert.ok(again.data.equals(pattern.subarray(0, 2 * PAGE_SIZE)));
        await assert.rejects(client.get(pid, 0x400000, 1), /closed/); // not a lazy page: the session ends
      } finally {
        socket.destroy();
        await server.close();
      }
    });
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
