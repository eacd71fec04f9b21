/** Zod's issues as the one-line problems every edge prints ("field.path: what is wrong"). Pure: runs in workflows too. */
import type { z } from 'zod';

export function problemsOf(error: z.ZodError, root: string): string[] {
  return error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : root}: ${issue.message}`);
}
