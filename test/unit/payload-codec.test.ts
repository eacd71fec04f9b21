/**
 * The payload codec and its key ring, checked against an independent decryption (Node's
 * crypto with the key read back from the file) and against tampering; the codec endpoint over
 * real HTTP.
 */
import assert from 'node:assert/strict';
import { createDecipheriv } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { startCodecServer } from '../../client/codec-server';
import { AesGcmPayloadCodec, KEY_ID_METADATA } from '../../lib/payload-codec';
import { ensureKeyRing, KeyRingError, loadKeyRing, rotateKeyRing } from '../../lib/payload-keys';

const PLAN = { name: 'secret-vi', source: 'cloud-a', destination: 'cloud-b', containers: ['payroll-db'] };
const text = (b: Uint8Array | null | undefined) => Buffer.from(b ?? []).toString('utf8');

describe('payload encryption (AES-256-GCM codec, key ring, codec endpoint)', () => {
  let dir: string;
  let file: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'migravi-keys-'));
    file = path.join(dir, 'keys', 'payload-keys.json');
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('creates a ring readable by its owner only, and keeps an existing one', async () => {
    const first = await ensureKeyRing(file);
    assert.equal(first.created, true);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o777, 0o700);
    const again = await ensureKeyRing(file);
    assert.equal(again.created, false);
    assert.equal(again.ring.current, first.ring.current);
    assert.deepEqual(again.ring.keys.get(first.ring.current), first.ring.keys.get(first.ring.current));
  });

  it('seals a payload so that only the key in the file opens it, and nothing of the plan shows', async () => {
    const { ring } = await ensureKeyRing(file);
    const plain = defaultPayloadConverter.toPayload(PLAN);
    const [sealed] = await new AesGcmPayloadCodec(ring).encode([plain]);
    assert.ok(sealed);
    const wire = Buffer.from(temporal.api.common.v1.Payload.encode(sealed).finish());
    for (const field of ['secret-vi', 'payroll-db', 'cloud-a', 'json/plain']) assert.ok(!wire.includes(field), `${field} is readable on the wire`);
    assert.equal(text(sealed.metadata?.encoding), 'binary/encrypted');
    // Opened independently: the key as the file holds it, the format as documented.
    const json = JSON.parse(await readFile(file, 'utf8')) as { current: string; keys: Record<string, string> };
    const keyId = text(sealed.metadata?.[KEY_ID_METADATA]);
    assert.equal(keyId, json.current);
    const data = Buffer.from(sealed.data!);
    const decipher = createDecipheriv('aes-256-gcm', Buffer.from(json.keys[keyId]!, 'base64'), data.subarray(0, 12));
    decipher.setAAD(Buffer.from(`binary/encrypted:${keyId}`));
    decipher.setAuthTag(data.subarray(data.length - 16));
    const inner = temporal.api.common.v1.Payload.decode(Buffer.concat([decipher.update(data.subarray(12, data.length - 16)), decipher.final()]));
    assert.deepEqual(JSON.parse(text(inner.data)), PLAN);
  });

  it('decodes what it encoded, and passes through payloads written before encryption', async () => {
    const { ring } = await ensureKeyRing(file);
    const codec = new AesGcmPayloadCodec(ring);
    const plain = defaultPayloadConverter.toPayload(PLAN);
    const [back, legacy] = await codec.decode([...(await codec.encode([plain])), plain]);
    assert.deepEqual(defaultPayloadConverter.fromPayload(back!), PLAN);
    assert.deepEqual(defaultPayloadConverter.fromPayload(legacy!), PLAN);
  });

  it('rotates: new payloads take the new key, payloads of the old key still open, a ring without it says which key is missing', async () => {
    const { ring: old } = await ensureKeyRing(file);
    const [sealedOld] = await new AesGcmPayloadCodec(old).encode([defaultPayloadConverter.toPayload(PLAN)]);
    const rotated = await rotateKeyRing(file);
    assert.notEqual(rotated.current, old.current);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const reloaded = await loadKeyRing(file);
    const codec = new AesGcmPayloadCodec(reloaded);
    const [sealedNew] = await codec.encode([defaultPayloadConverter.toPayload(PLAN)]);
    assert.equal(text(sealedNew!.metadata?.[KEY_ID_METADATA]), rotated.current);
    const [a, b] = await codec.decode([sealedOld!, sealedNew!]);
    assert.deepEqual(defaultPayloadConverter.fromPayload(a!), PLAN);
    assert.deepEqual(defaultPayloadConverter.fromPayload(b!), PLAN);
    const withoutOld = new AesGcmPayloadCodec({ current: rotated.current, keys: new Map([[rotated.current, reloaded.keys.get(rotated.current)!]]) });
    await assert.rejects(withoutOld.decode([sealedOld!]), new RegExp(`encrypted with key "${old.current}", which this key ring does not hold`));
  });

  it('refuses an altered payload and one relabelled with another key id', async () => {
    const { ring } = await ensureKeyRing(file);
    const rotated = await rotateKeyRing(file);
    const codec = new AesGcmPayloadCodec(rotated);
    const [sealed] = await new AesGcmPayloadCodec(ring).encode([defaultPayloadConverter.toPayload(PLAN)]);
    const flipped = Buffer.from(sealed!.data!);
    flipped[20] = flipped[20]! ^ 1;
    await assert.rejects(codec.decode([{ ...sealed!, data: flipped }]), /fails authentication: it was altered/);
    const relabelled: Payload = { ...sealed!, metadata: { ...sealed!.metadata, [KEY_ID_METADATA]: Buffer.from(rotated.current) } };
    await assert.rejects(codec.decode([relabelled]), /fails authentication/);
  });

  it('refuses a ring others can read, a missing one and a malformed one, naming the file and the problem', async () => {
    await assert.rejects(loadKeyRing(file), (err: Error) => err instanceof KeyRingError && err.message.includes(`no payload key ring at ${file}`) && err.message.includes('migravi keys init'));
    await ensureKeyRing(file);
    await chmod(file, 0o644);
    await assert.rejects(loadKeyRing(file), new RegExp(`${file} is readable by others \\(mode 644\\): chmod 600`));
    await writeFile(file, JSON.stringify({ current: 'k2', keys: { k1: Buffer.alloc(16).toString('base64') } }), { mode: 0o600 });
    await chmod(file, 0o600);
    await assert.rejects(loadKeyRing(file), (err: Error) => /keys\.k1: a key is 32 bytes/.test(err.message) && /current: names a current key that is not in keys/.test(err.message));
  });

  it('serves the Web UI: decodes for its origin over HTTP, refuses any other origin', async () => {
    const { ring } = await ensureKeyRing(file);
    const [sealed] = await new AesGcmPayloadCodec(ring).encode([defaultPayloadConverter.toPayload(PLAN)]);
    const server = await startCodecServer({ ring, port: 0, origins: ['http://localhost:8233'] });
    try {
      const body = JSON.stringify({ payloads: [{ metadata: Object.fromEntries(Object.entries(sealed!.metadata!).map(([k, v]) => [k, Buffer.from(v!).toString('base64')])), data: Buffer.from(sealed!.data!).toString('base64') }] });
      const ok = await fetch(`${server.url}/decode`, { method: 'POST', headers: { origin: 'http://localhost:8233', 'content-type': 'application/json', 'x-namespace': 'default' }, body });
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('access-control-allow-origin'), 'http://localhost:8233');
      const decoded = (await ok.json()) as { payloads: Array<{ data: string }> };
      assert.deepEqual(JSON.parse(Buffer.from(decoded.payloads[0]!.data, 'base64').toString('utf8')), PLAN);
      const preflight = await fetch(`${server.url}/decode`, { method: 'OPTIONS', headers: { origin: 'http://localhost:8233', 'access-control-request-method': 'POST' } });
      assert.equal(preflight.status, 204);
      assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /x-namespace/);
      const evil = await fetch(`${server.url}/decode`, { method: 'POST', headers: { origin: 'http://evil.example', 'content-type': 'application/json' }, body });
      assert.equal(evil.status, 403);
      assert.ok(!(await evil.text()).includes('payroll-db'));
      const garbage = await fetch(`${server.url}/decode`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"payloads": 3}' });
      assert.equal(garbage.status, 400);
      assert.match(await garbage.text(), /no "payloads" array/);
    } finally {
      await server.close();
    }
  });
});
