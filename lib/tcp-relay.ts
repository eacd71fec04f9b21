/**
 * Relays services that listen on the host's loopback only (the Temporal frontend; the
 * development OpenStack's APIs) to where the cloud workers can reach them: a worker runs inside
 * its cloud's namespace and reaches the host only at the host's end of the testbed's host link.
 * This process, started with the testbed's workers and stopped with the testbed by PID, listens
 * on that address, one port per service, and pipes each connection to the same port on the loopback.
 *
 *   node tcp-relay.js --listen 198.18.0.5 --ports 7233 --to 127.0.0.1
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

export const RELAY_READY = /tcp relay ready/;

/** One listening port: each accepted connection is piped both ways to target:port; a failed end closes the other. */
function relayPort(listen: string, port: number, target: string): Promise<net.Server> {
  const server = net.createServer((inbound) => {
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
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${listen}:${port}: ${err.message}`)));
    server.listen({ host: listen, port }, () => resolve(server));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { listen: { type: 'string' }, ports: { type: 'string' }, to: { type: 'string', default: '127.0.0.1' } } });
  const ports = (values.ports ?? '').split(',').filter(Boolean).map(Number);
  if (!values.listen || !ports.length || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new Error('usage: tcp-relay --listen ADDRESS --ports PORT[,PORT...] [--to ADDRESS]');
  }
  const servers = await Promise.all(ports.map((p) => relayPort(values.listen!, p, values.to!)));
  const stop = () => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log(`tcp relay ready: ${values.listen} ports ${ports.join(', ')} to ${values.to}`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
