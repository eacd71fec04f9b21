/**
 * The key ring that encrypts every Temporal payload (plans, reports, activity arguments): one
 * JSON file, readable by its owner only, holding every key still needed to decrypt old histories
 * and naming the one new payloads are sealed with. Rotation adds a key and makes it current;
 * the old ones stay, so workflows started before it still replay.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { problemsOf } from './schema-problems';

/** Where set-up keeps the key ring; MIGRAVI_PAYLOAD_KEYS (or --payload-keys) names another. */
export const DEFAULT_PAYLOAD_KEYS = '/var/lib/migravi/keys/payload-keys.json';
export const payloadKeysPath = (explicit?: string): string => explicit ?? process.env.MIGRAVI_PAYLOAD_KEYS ?? DEFAULT_PAYLOAD_KEYS;

export const KEY_BYTES = 32; // AES-256
const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const keyRingSchema = z
  .object({
    current: z.string().regex(KEY_ID, 'a key id is 1–64 letters, digits, ".", "_" or "-"'),
    keys: z.record(
      z.string().regex(KEY_ID, 'a key id is 1–64 letters, digits, ".", "_" or "-"'),
      z.string().refine((b64) => Buffer.from(b64, 'base64').length === KEY_BYTES, `a key is ${KEY_BYTES} bytes in base64`),
    ),
  })
  .strict()
  .refine((ring) => ring.current in ring.keys, { message: 'names a current key that is not in keys', path: ['current'] });

/** A key ring that is missing, unsafe or malformed: refused before anything connects. */
export class KeyRingError extends Error {}

export interface KeyRing {
  /** The id new payloads are encrypted with. */
  readonly current: string;
  readonly keys: ReadonlyMap<string, Buffer>;
}

/** Reads and checks a key ring; refuses one that others could read (it decrypts every migration's memory map and plan). */
export async function loadKeyRing(file = payloadKeysPath()): Promise<KeyRing> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KeyRingError(`no payload key ring at ${file}: create one with \`migravi keys init\` (or copy the one your workers use and pass --payload-keys / MIGRAVI_PAYLOAD_KEYS)`);
    }
    throw new KeyRingError(`cannot read the payload key ring ${file}: ${(err as Error).message}`);
  }
  const mode = (await stat(file)).mode & 0o777;
  if (mode & 0o077) throw new KeyRingError(`the payload key ring ${file} is readable by others (mode ${mode.toString(8)}): chmod 600 ${file}`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new KeyRingError(`the payload key ring ${file} is not JSON: ${(err as Error).message}`);
  }
  const parsed = keyRingSchema.safeParse(json);
  if (!parsed.success) throw new KeyRingError(`the payload key ring ${file} is invalid: ${problemsOf(parsed.error, 'ring').join('; ')}`);
  return { current: parsed.data.current, keys: new Map(Object.entries(parsed.data.keys).map(([id, b64]) => [id, Buffer.from(b64, 'base64')])) };
}

/** A key id that sorts by creation and does not collide: the date and a random suffix. */
const newKeyId = () => `${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`;

async function saveKeyRing(file: string, ring: KeyRing): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const body = JSON.stringify({ current: ring.current, keys: Object.fromEntries([...ring.keys].map(([id, key]) => [id, key.toString('base64')])) }, null, 2);
  // Written aside with mode 600 from the start, then renamed: never a half-written or world-readable ring.
  const aside = `${file}.${process.pid}.tmp`;
  await writeFile(aside, `${body}\n`, { mode: 0o600 });
  await chmod(aside, 0o600);
  await rename(aside, file);
}

/** Creates the key ring if there is none (idempotent: an existing ring is kept as it is). */
export async function ensureKeyRing(file = payloadKeysPath()): Promise<{ created: boolean; ring: KeyRing }> {
  if (existsSync(file)) return { created: false, ring: await loadKeyRing(file) };
  const id = newKeyId();
  const ring: KeyRing = { current: id, keys: new Map([[id, randomBytes(KEY_BYTES)]]) };
  await saveKeyRing(file, ring);
  return { created: true, ring };
}

/**
 * Adds a new key and makes it current. Every worker and client must load the new ring before
 * payloads sealed with it reach them (restart them after copying the file): old keys still decrypt.
 */
export async function rotateKeyRing(file = payloadKeysPath()): Promise<KeyRing> {
  const old = await loadKeyRing(file);
  let id = newKeyId();
  while (old.keys.has(id)) id = newKeyId();
  const ring: KeyRing = { current: id, keys: new Map([...old.keys, [id, randomBytes(KEY_BYTES)]]) };
  await saveKeyRing(file, ring);
  return ring;
}
