/** One idle TCP connection held open from inside a namespace (hold-connection.ts), asked on demand. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { stopPid, waitFor } from '../../lib/processes';

export class IdleConnection {
  /** Every line the holder printed: "open", the answers, "closed" if the service ended it. */
  readonly output: string[] = [];

  private constructor(private readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => this.output.push(line));
  }

  static async open(netns: string, host: string, port: number): Promise<IdleConnection> {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, path.join(__dirname, 'hold-connection.js'), host, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const connection = new IdleConnection(child);
    await connection.nextLine(0);
    if (connection.output[0] !== 'open') throw new Error(`could not connect to ${host}:${port}: ${connection.output.join(' | ')}`);
    return connection;
  }

  /** Sends one line and returns the next line the holder prints (the answer, or "closed"). */
  async ask(line: string): Promise<string> {
    const seen = this.output.length;
    this.child.stdin!.write(`${line}\n`);
    return this.nextLine(seen);
  }

  async close(): Promise<void> {
    if (this.child.pid) await stopPid(this.child.pid);
  }

  private async nextLine(index: number): Promise<string> {
    await waitFor(`line ${index + 1} from the connection's holder`, () => this.output.length > index || this.child.exitCode !== null, 10_000, 10);
    return this.output[index] ?? `(the holder exited: ${this.output.join(' | ')})`;
  }
}
