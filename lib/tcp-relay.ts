/**
 * Relays services that listen on the host's loopback only (the Temporal frontend; the
 * development OpenStack's APIs) to where the cloud workers can reach them: a worker runs inside
 * its cloud's namespace and reaches the host only at the host's end of the testbed's host link.
 * This process, started with the testbed's workers and stopped with the testbed by PID, listens
 * on that address, one port per service, and pipes each connection to the same port on the loopback.
 *
 * With --tls-cert/--tls-key/--tls-ca it terminates mutual TLS: only a client presenting a
 * certificate signed by that authority gets through (the Temporal relay: the host link is
 * reachable from the testbed's WAN, where anyone may stand).
 *
 *   node tcp-relay.js --listen 198.18.0.5 --ports 7233 --to 127.0.0.1 [--tls-cert F --tls-key F --tls-ca F]
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

export const RELAY_READY = /tcp relay ready/;

/** One listening port: each accepted connection is piped both ways to target:port; a failed end closes the other. */
function relayPort(listen: string, port: number, target: string, tlsOptions?: tls.TlsOptions): Promise<net.Server> {
  const relay = (inbound: net.Socket) => {
    const outbound = net.connect({ host: target, port });
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    const close = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', close);
    outbound.on('error', close);
    inbound.on('close', close);
    outbound.on('close', close);
  };
  // A handshake refused (no certificate, another authority's) ends that connection only.
  const server = tlsOptions ? tls.createServer(tlsOptions, relay).on('tlsClientError', () => undefined) : net.createServer(relay);
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${listen}:${port}: ${err.message}`)));
    server.listen({ host: listen, port }, () => resolve(server));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { listen: { type: 'string' }, ports: { type: 'string' }, to: { type: 'string', default: '127.0.0.1' }, 'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'tls-ca': { type: 'string' } },
  });
  const ports = (values.ports ?? '').split(',').filter(Boolean).map(Number);
  if (!values.listen || !ports.length || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new Error('usage: tcp-relay --listen ADDRESS --ports PORT[,PORT...] [--to ADDRESS]');
  }
  const tlsFiles = [values['tls-cert'], values['tls-key'], values['tls-ca']];
  if (tlsFiles.some(Boolean) && !tlsFiles.every(Boolean)) throw new Error('--tls-cert, --tls-key and --tls-ca go together');
  const tlsOptions: tls.TlsOptions | undefined = values['tls-cert']
    ? { cert: readFileSync(values['tls-cert']), key: readFileSync(values['tls-key']!), ca: readFileSync(values['tls-ca']!), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'], minVersion: 'TLSv1.2' }
    : undefined;
  const servers = await Promise.all(ports.map((p) => relayPort(values.listen!, p, values.to!, tlsOptions)));
  const stop = () => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log(`tcp relay ready: ${values.listen} ports ${ports.join(', ')} to ${values.to}${tlsOptions ? ' (mutual TLS)' : ''}`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
