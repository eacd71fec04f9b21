import { spawn, type ChildProcess } from 'node:child_process';
import { currentAttempt } from './attempt-scope';

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`command failed (exit ${exitCode}): ${command}\n${stderr.trim()}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  /** Run inside this network namespace (by name under /run/netns), through nsenter. */
  netns?: string;
  /** Text written to the command's standard input. */
  input?: string;
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
}

/**
 * Runs a program (no shell) and returns its output; throws a CommandError naming the command and
 * its stderr on failure. `nsenter --net` rather than `ip netns exec`, because the latter also makes
 * a mount namespace that CRIU refuses to dump (PLATFORM.md).
 */
export function run(program: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const argv = options.netns ? ['nsenter', `--net=/run/netns/${options.netns}`, program, ...args] : [program, ...args];
  const printable = argv.join(' ');
  return new Promise((resolve, reject) => {
    const attempt = currentAttempt();
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      cwd: options.cwd,
      env: options.env ?? process.env,
      // In an activity, children get their own process group: a given-up attempt kills them all.
      detached: attempt !== undefined,
    });
    const untrack = attempt ? trackChild(child) : () => undefined;
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (err) => reject(new CommandError(printable, null, err.message)));
    child.on('close', (exitCode) => {
      untrack();
      if (exitCode === 0 || options.allowFailure) resolve({ stdout, stderr, exitCode });
      else reject(new CommandError(printable, exitCode, stderr || stdout));
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a program may exit without reading its input
      child.stdin.end(options.input);
    }
  });
}

/** `ip` inside a namespace (or the root namespace when netns is undefined). */
export function ip(args: readonly string[], netns?: string, allowFailure = false): Promise<RunResult> {
  return run('ip', args, { netns, allowFailure });
}

/**
 * Ties a child process to the current activity attempt: its CPU time counts as progress, its
 * exit too, and it is killed (with its process group) when the attempt is given up. Returns the
 * function to call when the child has exited.
 */
export function trackChild(child: ChildProcess): () => void {
  const attempt = currentAttempt();
  if (!attempt || child.pid === undefined) return () => undefined;
  const pid = child.pid;
  attempt.childStarted(pid);
  const kill = () => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  };
  if (attempt.signal.aborted) kill();
  attempt.signal.addEventListener('abort', kill, { once: true });
  return () => {
    attempt.signal.removeEventListener('abort', kill);
    attempt.childExited(pid);
    attempt.progress();
  };
}
