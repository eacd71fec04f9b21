/**
 * Encrypts every Temporal payload with AES-256-GCM before it leaves the process, so the server,
 * its database and anyone on the way see only ciphertext: plans, reports, activity arguments,
 * heartbeat details, memos, and (with lib/failure-converter.ts) failure messages.
 *
 * Wire format (the one Temporal's encryption sample uses, so its tools can read ours):
 * metadata `encoding: binary/encrypted`, `encryption-key-id: <id>`; data = 12-byte IV ‖
 * ciphertext ‖ 16-byte tag of the whole original Payload, protobuf-encoded. The key id and the
 * encoding are authenticated too (GCM's additional data): a payload relabelled with another key
 * id does not decrypt.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { KeyRing } from './payload-keys';

export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';
const IV_BYTES = 12;
const TAG_BYTES = 16;

const ProtoPayload = temporal.api.common.v1.Payload;
const text = (value: Uint8Array | null | undefined): string | undefined => (value ? Buffer.from(value).toString('utf8') : undefined);
const additionalData = (keyId: string) => Buffer.from(`${ENCRYPTED_ENCODING}:${keyId}`);

export class AesGcmPayloadCodec implements PayloadCodec {
  constructor(private readonly ring: KeyRing) {}

  /** Whether a payload is one of ours (a plaintext payload from before encryption is passed through). */
  static isEncrypted(payload: Payload): boolean {
    return text(payload.metadata?.encoding) === ENCRYPTED_ENCODING;
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const keyId = this.ring.current;
    const key = this.ring.keys.get(keyId)!;
    return payloads.map((payload) => {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(additionalData(keyId));
      const sealed = Buffer.concat([iv, cipher.update(ProtoPayload.encode(payload).finish()), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: { encoding: Buffer.from(ENCRYPTED_ENCODING), [KEY_ID_METADATA]: Buffer.from(keyId) },
        data: sealed,
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      if (!AesGcmPayloadCodec.isEncrypted(payload)) return payload;
      const keyId = text(payload.metadata?.[KEY_ID_METADATA]);
      if (!keyId) throw new Error(`an encrypted payload carries no ${KEY_ID_METADATA}`);
      const key = this.ring.keys.get(keyId);
      if (!key) throw new Error(`a payload is encrypted with key ${JSON.stringify(keyId)}, which this key ring does not hold (it holds ${[...this.ring.keys.keys()].join(', ')}): load a ring that still has it`);
      const data = Buffer.from(payload.data ?? []);
      if (data.length < IV_BYTES + TAG_BYTES) throw new Error(`an encrypted payload (key ${keyId}) is ${data.length} bytes, shorter than its IV and tag`);
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES));
      decipher.setAAD(additionalData(keyId));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new Error(`a payload encrypted with key ${keyId} fails authentication: it was altered, or the key under that id is not the one that sealed it`);
      }
      const inner = ProtoPayload.decode(plain);
      return { metadata: inner.metadata, data: inner.data };
    });
  }
}
