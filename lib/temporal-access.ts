/**
 * How every MigraVI process reaches Temporal: the address, the namespace, the TLS files when the
 * server is beyond the loopback, and the payload key ring whose codec encrypts what it sends. Clients, workers, the demo, the benchmark and the
 * tests all connect through here, so none sends a plaintext payload by forgetting an option.
 */
import { Client, Connection, type ClientOptions } from '@temporalio/client';
import type { DataConverter, Duration } from '@temporalio/common';
import { AesGcmPayloadCodec } from './payload-codec';
import { loadKeyRing, payloadKeysPath, type KeyRing } from './payload-keys';
import { loadTlsConfig, type TemporalTlsFiles } from './temporal-tls';

export interface TemporalAccess {
  address: string;
  namespace?: string;
  /** The key ring file (default: MIGRAVI_PAYLOAD_KEYS, else /var/lib/migravi/keys/payload-keys.json). */
  payloadKeys?: string;
  /** Mutual TLS: the authority to trust and the certificate to present (absent: plaintext, for a loopback server). */
  tls?: TemporalTlsFiles;
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
  const tls = access.tls ? await loadTlsConfig(access.tls) : undefined;
  const connection = await Connection.connect({ address: access.address, ...(tls ? { tls } : {}), ...(options.connectTimeout !== undefined ? { connectTimeout: options.connectTimeout } : {}) });
  return { connection, client: new Client({ connection, namespace: access.namespace ?? 'default', dataConverter, ...(options.identity ? { identity: options.identity } : {}) }) };
}

/** The TLS files from a process's options (all three, or none: half a configuration is refused by name). */
export function tlsFilesFrom(options: { ca?: string; cert?: string; key?: string; serverName?: string }, flag = '--temporal-tls'): TemporalTlsFiles | undefined {
  const given = (['ca', 'cert', 'key'] as const).filter((k) => options[k]);
  if (given.length === 0) return undefined;
  if (given.length < 3) throw new Error(`${flag}-ca, ${flag}-cert and ${flag}-key go together: only ${given.map((k) => `${flag}-${k}`).join(', ')} given`);
  return { ca: options.ca!, cert: options.cert!, key: options.key!, ...(options.serverName ? { serverName: options.serverName } : {}) };
}
