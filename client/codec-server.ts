/**
 * The codec endpoint the Temporal Web UI calls to show an operator decoded payloads
 * (`temporal server start-dev --ui-codec-endpoint http://127.0.0.1:8234`): POST /decode and
 * /encode with `{"payloads": [{"metadata": {k: base64}, "data": base64}]}`, Temporal's codec
 * server protocol. Whoever reaches it can decrypt, so it listens on the loopback by default and
 * answers only the UI's origin (a page from any other origin is refused, not just left without
 * CORS headers); the operator's browser reaches it through the same tunnel as the UI.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Payload } from '@temporalio/common';
import { AesGcmPayloadCodec } from '../lib/payload-codec';
import type { KeyRing } from '../lib/payload-keys';

export interface CodecServerOptions {
  ring: KeyRing;
  host?: string;
  port: number;
  /** Origins allowed to call it: the Web UI's (e.g. http://localhost:8233). */
  origins: string[];
  log?: (line: string) => void;
}

interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

const MAX_BODY = 64 * 1024 * 1024;

function fromJson(p: JsonPayload, index: number): Payload {
  if (typeof p !== 'object' || p === null) throw new Error(`payloads[${index}] is not an object`);
  const metadata: Record<string, Uint8Array> = {};
  for (const [key, value] of Object.entries(p.metadata ?? {})) {
    if (typeof value !== 'string') throw new Error(`payloads[${index}].metadata.${key} is not base64 text`);
    metadata[key] = Buffer.from(value, 'base64');
  }
  if (p.data !== undefined && typeof p.data !== 'string') throw new Error(`payloads[${index}].data is not base64 text`);
  return { metadata, data: Buffer.from(p.data ?? '', 'base64') };
}

const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? []).toString('base64')])),
  data: Buffer.from(p.data ?? []).toString('base64'),
});

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error(`the request body exceeds ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function startCodecServer(opts: CodecServerOptions): Promise<{ url: string; close: () => Promise<void> }> {
  const codec = new AesGcmPayloadCodec(opts.ring);
  const origins = new Set(opts.origins.map((o) => o.replace(/\/+$/, '')));
  const log = opts.log ?? (() => undefined);
  const server = http.createServer((req, res) => {
    const origin = req.headers.origin;
    if (origin !== undefined && !origins.has(origin)) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`origin ${origin} may not use this codec endpoint\n`);
      log(`refused a request from origin ${origin}`);
      return;
    }
    if (origin) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-allow-methods', 'POST, OPTIONS');
      res.setHeader('access-control-allow-headers', 'content-type, x-namespace, authorization, caller-type');
      res.setHeader('access-control-allow-credentials', 'true');
      res.setHeader('vary', 'origin');
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    const route = new URL(req.url ?? '/', 'http://codec').pathname.replace(/\/+$/, '');
    if (req.method !== 'POST' || (route !== '/encode' && route !== '/decode')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('POST /encode or /decode\n');
      return;
    }
    void (async () => {
      try {
        const body = JSON.parse(await readBody(req)) as { payloads?: unknown };
        if (!Array.isArray(body.payloads)) throw new Error('the body has no "payloads" array');
        const payloads = (body.payloads as JsonPayload[]).map(fromJson);
        const out = route === '/encode' ? await codec.encode(payloads) : await codec.decode(payloads);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ payloads: out.map(toJson) }));
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
        log(`${route}: ${(err as Error).message}`);
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.address}:${address.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
