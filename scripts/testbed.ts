/**
 * Brings the embedded clouds up or down.
 *   node dist/scripts/testbed.js up   [--id migravi] [--clouds cloud-a,cloud-b] [--wan-mbit 1000] [--wan-gateway 203.0.113.1] [--host-link 198.18.0.0/30] [--plain-stretch]
 *   node dist/scripts/testbed.js down [--id migravi]
 *   node dist/scripts/testbed.js status [--id migravi]
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { criuPath, testbedsDir } from '../lib/paths';
import { DEFAULT_HOST_LINK, readTestbed, testbedDown, testbedUp } from '../providers/local/testbed';

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      id: { type: 'string', default: 'migravi' },
      clouds: { type: 'string', default: 'cloud-a,cloud-b' },
      'wan-mbit': { type: 'string', default: '1000' },
      'wan-gateway': { type: 'string', default: '203.0.113.1' },
      'host-link': { type: 'string', default: DEFAULT_HOST_LINK },
      'plain-stretch': { type: 'boolean', default: false },
    },
  });
  const command = positionals[0];
  const stateDir = path.join(testbedsDir, values.id);
  const log = (line: string) => console.log(`[testbed] ${line}`);
  switch (command) {
    case 'up':
      await testbedUp(
        {
          id: values.id,
          stateDir,
          clouds: values.clouds.split(',').map((c) => c.trim()),
          wanGateway: values['wan-gateway'],
          hostLink: values['host-link'],
          wanPrefixLength: 25,
          wanRateMbit: Number(values['wan-mbit']),
          criuPath,
          stretch: values['plain-stretch'] ? 'plain' : 'wireguard',
        },
        log,
      );
      break;
    case 'down':
      await testbedDown(stateDir, values.id, log);
      break;
    case 'status': {
      const record = await readTestbed(stateDir);
      console.log(record ? JSON.stringify(record, null, 2) : `testbed "${values.id}" is not up`);
      break;
    }
    default:
      throw new Error(`unknown command "${command ?? ''}": use up, down or status`);
  }
}

main().catch((err: unknown) => {
  console.error(`testbed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
