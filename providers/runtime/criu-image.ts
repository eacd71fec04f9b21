/**
 * CRIU's image files as MigraVI reads them, without CRIU's tools: two magic words, then records
 * of "u32 length + protobuf message" (criu/images/*.proto). Only what the fields need: varints,
 * fixed-width numbers and nested messages (as buffers, decoded in turn).
 */
import { readFile } from 'node:fs/promises';

/** A decoded message: every occurrence of each field, in order (repeated fields have several). */
export type Message = Map<number, Array<bigint | Buffer>>;

function varint(buf: Buffer, at: number): [bigint, number] {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    const byte = buf[at++];
    if (byte === undefined) throw new Error('truncated protobuf varint');
    value |= BigInt(byte & 0x7f) << shift;
    shift += 7n;
    if (byte < 0x80) return [value, at];
  }
}

export function decode(buf: Buffer): Message {
  const fields: Message = new Map();
  const add = (field: number, value: bigint | Buffer) => fields.set(field, [...(fields.get(field) ?? []), value]);
  for (let at = 0; at < buf.length; ) {
    const [key, next] = varint(buf, at);
    at = next;
    const field = Number(key >> 3n);
    switch (Number(key & 7n)) {
      case 0: {
        const [value, after] = varint(buf, at);
        add(field, value);
        at = after;
        break;
      }
      case 1:
        add(field, buf.readBigUInt64LE(at));
        at += 8;
        break;
      case 5:
        add(field, BigInt(buf.readUInt32LE(at)));
        at += 4;
        break;
      case 2: {
        const [length, after] = varint(buf, at);
        add(field, buf.subarray(after, after + Number(length)));
        at = after + Number(length);
        break;
      }
      default:
        throw new Error(`unexpected protobuf wire type in a CRIU image (key ${key})`);
    }
  }
  return fields;
}

/** The first value of a scalar field. */
export function num(message: Message, field: number): number | undefined {
  const value = message.get(field)?.[0];
  return typeof value === 'bigint' ? Number(value) : undefined;
}

/** The first value of a nested-message field, decoded. */
export function sub(message: Message, field: number): Message | undefined {
  const value = message.get(field)?.[0];
  return Buffer.isBuffer(value) ? decode(value) : undefined;
}

/** Every value of a repeated scalar field (packed or not). */
export function nums(message: Message, field: number): number[] {
  return (message.get(field) ?? []).flatMap((v) => {
    if (typeof v === 'bigint') return [Number(v)];
    const out: number[] = [];
    for (let at = 0; at < v.length; ) {
      const [value, after] = varint(v, at);
      out.push(Number(value));
      at = after;
    }
    return out;
  });
}

/** The records of an image file (after its two magic words); at most `limit` of them. */
export async function readImageRecords(file: string, limit = Infinity): Promise<Message[]> {
  return imageRecords(await readFile(file), limit);
}

/** The records of an image file's bytes (after its two magic words); at most `limit` of them. */
export function imageRecords(buf: Buffer, limit = Infinity): Message[] {
  const records: Message[] = [];
  for (let at = 8; at + 4 <= buf.length && records.length < limit; ) {
    const length = buf.readUInt32LE(at);
    records.push(decode(buf.subarray(at + 4, at + 4 + length)));
    at += 4 + length;
  }
  return records;
}

function putVarint(out: number[], value: bigint): void {
  do {
    const byte = Number(value & 0x7fn);
    value >>= 7n;
    out.push(value ? byte | 0x80 : byte);
  } while (value);
}

/** Encodes a message of varint and nested fields (in field order), as CRIU's images need them. */
export function encode(message: Message): Buffer {
  const out: number[] = [];
  for (const field of [...message.keys()].sort((a, b) => a - b)) {
    for (const value of message.get(field)!) {
      if (typeof value === 'bigint') {
        putVarint(out, BigInt(field << 3));
        putVarint(out, value);
      } else {
        putVarint(out, BigInt((field << 3) | 2));
        putVarint(out, BigInt(value.length));
        out.push(...value);
      }
    }
  }
  return Buffer.from(out);
}

/** An image file's bytes: the magic words (the first 8 bytes of an image of the same kind), then the records. */
export function imageFile(magic: Buffer, records: Buffer[]): Buffer {
  const parts = [magic.subarray(0, 8)];
  for (const r of records) {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(r.length);
    parts.push(length, r);
  }
  return Buffer.concat(parts);
}
