/** What every `migravi` command shares: the global options, the output (JSON or lines), the Temporal connection. */
import { Client, Connection } from '@temporalio/client';
import { InvalidArgumentError, type Command } from 'commander';
import { loadDataConverter } from '../lib/temporal-access';
import { UnreachableError } from './exit-codes';

export interface GlobalOptions {
  temporal: string;
  namespace: string;
  /** The payload key ring (the codec's keys): the same file the workers load. */
  payloadKeys?: string;
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
  // The key ring first: a missing or unsafe ring is its own error, not an unreachable server.
  const dataConverter = await loadDataConverter({ ...(opts.payloadKeys ? { payloadKeys: opts.payloadKeys } : {}) });
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: opts.temporal, connectTimeout: '5s' });
  } catch (err) {
    throw new UnreachableError(`cannot reach Temporal at ${opts.temporal} (${(err as Error).message}); is it running? (--temporal HOST:PORT or TEMPORAL_ADDRESS)`);
  }
  try {
    return await use(new Client({ connection, namespace: opts.namespace, dataConverter }));
  } finally {
    await connection.close();
  }
}

export type Globals = (cmd: Command) => GlobalOptions;

export function positive(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${flag}: ${JSON.stringify(value)} is not a positive whole number`);
  return n;
}
