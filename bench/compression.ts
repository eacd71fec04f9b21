/**
 * Would compressing the image on its way help? Measured on the floor's image of each case (after
 * the move, untimed): each codec compresses the memory pages on one core (the other is busy with
 * CRIU while an image streams) and decompresses them again. Streamed, a compressed image crosses
 * the link at min(compress, decompress, link × ratio) bytes of image per second, against the
 * link's rate uncompressed: compression pays below a link rate of min(compress, decompress) and
 * only when the ratio is above 1 (taken as 1.05: less is within the noise of the rates).
 */
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../lib/exec';

export interface CompressionSample {
  codec: string;
  inputBytes: number;
  outputBytes: number;
  compressMs: number;
  decompressMs: number;
}

/** Fast settings only: a slower codec cannot keep up with the link rates this tool is for. */
const CODECS: Array<{ codec: string; compress: string; decompress: string }> = [
  { codec: 'lz4 -1', compress: 'lz4 -1 -q -c', decompress: 'lz4 -d -q -c' },
  { codec: 'zstd -1', compress: 'zstd -1 -T1 -q -c', decompress: 'zstd -d -q -c' },
];

export async function measureCompression(imageDir: string, scratch: string): Promise<CompressionSample[]> {
  const pages = (await readdir(imageDir)).filter((f) => /^pages-\d+\.img$/.test(f)).map((f) => path.join(imageDir, f));
  if (!pages.length) throw new Error(`no memory pages in ${imageDir}`);
  let inputBytes = 0;
  for (const f of pages) inputBytes += (await stat(f)).size;
  const out: CompressionSample[] = [];
  for (const { codec, compress, decompress } of CODECS) {
    const packed = `${scratch}.${codec.split(' ')[0]!}`;
    // The pages are in the page cache (just written): the time is the codec's, not the disk's.
    let started = Date.now();
    await run('bash', ['-c', `cat "$@" | ${compress} > ${JSON.stringify(packed)}`, 'compress', ...pages]);
    const compressMs = Date.now() - started;
    const outputBytes = (await stat(packed)).size;
    started = Date.now();
    await run('bash', ['-c', `${decompress} ${JSON.stringify(packed)} > /dev/null`]);
    const decompressMs = Date.now() - started;
    await rm(packed, { force: true });
    out.push({ codec, inputBytes, outputBytes, compressMs, decompressMs });
  }
  return out;
}

const mbit = (bytes: number, ms: number) => (bytes * 8) / 1000 / ms;

/**
 * Per codec: ratio, rates (Mbit/s of image), the link rate below which it pays, its gain at this
 * link. Rates of a few MiB include the codec's start (a few ms): they understate it.
 */
export function compressionTable(samples: Array<{ label: string; samples: CompressionSample[] }>, linkMbit: number): string {
  const lines = [
    `| case | pages MiB | codec | ratio | compress Mbit/s | decompress Mbit/s | pays below (Mbit/s) | image rate at ${linkMbit} Mbit/s vs uncompressed |`,
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const { label, samples: list } of samples) {
    for (const s of list) {
      const ratio = s.inputBytes / s.outputBytes;
      const c = mbit(s.inputBytes, s.compressMs);
      const d = mbit(s.inputBytes, s.decompressMs);
      const paysBelow = ratio >= 1.05 ? Math.min(c, d) : 0;
      const gain = Math.min(c, d, linkMbit * ratio) / linkMbit;
      lines.push(`| ${label} | ${(s.inputBytes / 1048576).toFixed(1)} | ${s.codec} | ${ratio.toFixed(3)} | ${c.toFixed(0)} | ${d.toFixed(0)} | ${paysBelow ? paysBelow.toFixed(0) : 'never (ratio < 1.05)'} | ${gain.toFixed(2)}× |`);
    }
  }
  return lines.join('\n');
}
