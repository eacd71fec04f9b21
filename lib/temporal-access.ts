/**
 * How every MigraVI process reaches Temporal: the address, the namespace, and the payload key
 * ring whose codec encrypts what it sends. Clients, workers, the demo, the benchmark and the
 * tests all connect through here, so none sends a plaintext payload by forgetting an option.
 */
import { Client, Connection, type ClientOptions } from '@temporalio/client';
import type { DataConverter, Duration } from '@temporalio/common';
import { AesGcmPayloadCodec } from './payload-codec';
import { loadKeyRing, payloadKeysPath, type KeyRing } from './payload-keys';

export interface TemporalAccess {
  address: string;
  namespace?: string;
  /** The key ring file (default: MIGRAVI_PAYLOAD_KEYS, else /var/lib/migravi/keys/payload-keys.json). */
  payloadKeys?: string;
}

/** The data converter of every client and worker: the AES-GCM codec over the key ring, failures encoded too. */
export function migraviDataConverter(ring: KeyRing): DataConverter {
  return {
    payloadCodecs: [new AesGcmPayloadCodec(ring)],
    failureConverterPath: require.resolve('./failure-converter'),
  };
}

/** Loads the ring named by `access` (or the default one) and returns the data converter over it. */
export async function loadDataConverter(access: Pick<TemporalAccess, 'payloadKeys'> = {}): Promise<DataConverter> {
  return migraviDataConverter(await loadKeyRing(payloadKeysPath(access.payloadKeys)));
}

/**
 * A client whose payloads are encrypted. The key ring is read before connecting, so a missing
 * or unsafe ring is reported as such and not as an unreachable server.
 */
export async function connectClient(
  access: TemporalAccess,
  options: { connectTimeout?: Duration } & Pick<ClientOptions, 'identity'> = {},
): Promise<{ client: Client; connection: Connection }> {
  const dataConverter = await loadDataConverter(access);
  const connection = await Connection.connect({ address: access.address, ...(options.connectTimeout !== undefined ? { connectTimeout: options.connectTimeout } : {}) });
  return { connection, client: new Client({ connection, namespace: access.namespace ?? 'default', dataConverter, ...(options.identity ? { identity: options.identity } : {}) }) };
}
