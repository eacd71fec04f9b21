/** What every `migravi` command shares: the global options, the output (JSON or lines), the Temporal connection. */
import type { Client, Connection } from '@temporalio/client';
import { InvalidArgumentError, type Command } from 'commander';
import { KeyRingError } from '../lib/payload-keys';
import { connectClient, tlsFilesFrom } from '../lib/temporal-access';
import { TlsFilesError } from '../lib/temporal-tls';
import { UnreachableError } from './exit-codes';

export interface GlobalOptions {
  temporal: string;
  namespace: string;
  /** The payload key ring (the codec's keys): the same file the workers load. */
  payloadKeys?: string;
  /** Mutual TLS to a Temporal beyond the loopback (all three, or none). */
  temporalTlsCa?: string;
  temporalTlsCert?: string;
  temporalTlsKey?: string;
  temporalTlsServerName?: string;
  json: boolean;
}

/** What a command prints: one JSON document with --json (its lines then go to stderr), else its lines. */
export class Output {
  constructor(private readonly json: boolean) {}
  line(text: string): void {
    (this.json ? process.stderr : process.stdout).write(`${text}\n`);
  }
  result(value: unknown, lines: () => string[]): void {
    if (this.json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    else for (const text of lines()) process.stdout.write(`${text}\n`);
  }
}

export async function withClient<T>(opts: GlobalOptions, use: (client: Client) => Promise<T>): Promise<T> {
  let opened: { client: Client; connection: Connection };
  const tls = tlsFilesFrom({ ca: opts.temporalTlsCa, cert: opts.temporalTlsCert, key: opts.temporalTlsKey, serverName: opts.temporalTlsServerName });
  try {
    opened = await connectClient({ address: opts.temporal, namespace: opts.namespace, ...(opts.payloadKeys ? { payloadKeys: opts.payloadKeys } : {}), ...(tls ? { tls } : {}) }, { connectTimeout: '5s' });
  } catch (err) {
    // The key ring and the TLS files are read first: a missing or unsafe one is its own error, not an unreachable server.
    if (err instanceof KeyRingError || err instanceof TlsFilesError) throw err;
    throw new UnreachableError(`cannot reach Temporal at ${opts.temporal} (${(err as Error).message}); is it running? (--temporal HOST:PORT or TEMPORAL_ADDRESS)`);
  }
  try {
    return await use(opened.client);
  } finally {
    await opened.connection.close();
  }
}

export type Globals = (cmd: Command) => GlobalOptions;

export function positive(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${flag}: ${JSON.stringify(value)} is not a positive whole number`);
  return n;
}
