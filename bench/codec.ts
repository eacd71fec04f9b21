/**
 * What the payload codec costs (lib/payload-codec.ts): AES-256-GCM over payloads of the sizes a
 * migration sends (an activity's arguments ~1 KiB, a report ~16 KiB, a large inventory 256 KiB),
 * encode and decode, medians of repeated rounds on this machine's CPU. Prints a table.
 *   node dist/bench/codec.js [--rounds 2000]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { defaultPayloadConverter } from '@temporalio/common';
import { AesGcmPayloadCodec } from '../lib/payload-codec';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '2000' } } });
  const rounds = Number(values.rounds);
  const id = 'bench';
  const codec = new AesGcmPayloadCodec({ current: id, keys: new Map([[id, randomBytes(32)]]) });
  console.log('payload   encode µs   decode µs   encode MB/s   decode MB/s');
  for (const bytes of [1024, 16 * 1024, 256 * 1024]) {
    // JSON as a migration's would be: fields and numbers, not random bytes.
    const value = { containers: Array.from({ length: Math.ceil(bytes / 64) }, (_, i) => ({ name: `c${i}`, ip: `10.0.${i % 256}.${i % 250}`, bytes: i * 4096 })) };
    const payload = defaultPayloadConverter.toPayload(value);
    const size = payload.data!.length;
    const enc: number[] = [];
    const dec: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      const [sealed] = await codec.encode([payload]);
      const t1 = process.hrtime.bigint();
      await codec.decode([sealed!]);
      const t2 = process.hrtime.bigint();
      enc.push(Number(t1 - t0) / 1000);
      dec.push(Number(t2 - t1) / 1000);
    }
    const e = median(enc);
    const d = median(dec);
    console.log(`${`${Math.round(size / 1024)} KiB`.padEnd(9)} ${e.toFixed(1).padStart(9)}   ${d.toFixed(1).padStart(9)}   ${(size / e).toFixed(0).padStart(11)}   ${(size / d).toFixed(0).padStart(11)}`);
  }
}

void main();
