/**
 * The one rule for every name that reaches a path, a command line or a kernel object (network
 * namespace, interface, nftables set, runc container id, sshd account): a VI, a cloud, a
 * container, a network. Lowercase letters, digits and "-", starting with a letter, no "-" at the
 * end, bounded in length by what it becomes (interface names are 15 bytes). Nothing that reads
 * as an option ("-x"), a path ("a/b", ".."), a glob, a shell word or a second line passes.
 * Pure (zod only): the workflow sandbox checks plans with it too.
 */
import { z } from 'zod';

const IDENTIFIER = /^[a-z](?:[a-z0-9-]*[a-z0-9])?$/;

/** The schema of a `kind` name of at most `maxLength` characters, with the message every edge prints. */
export function nameRule(kind: string, maxLength: number) {
  const message = `a ${kind} name is 1-${maxLength} characters: lowercase letters, digits and "-", starting with a letter and not ending with "-"`;
  return z.string().max(maxLength, message).regex(IDENTIFIER, message);
}

export const isIdentifier = (value: unknown, maxLength: number): value is string => typeof value === 'string' && value.length <= maxLength && IDENTIFIER.test(value);

/**
 * A file a peer names inside a directory it may write (a CRIU image file, a volume's file): one
 * path component, no "." or "..", no separator, no control character.
 */
export const isPlainFileName = (name: unknown): name is string => typeof name === 'string' && name.length <= 255 && /^[A-Za-z0-9._-]+$/.test(name) && name !== '.' && name !== '..';

/** The names plans and VI descriptions carry, each bounded by the longest kernel name it becomes part of. */
export const viName = nameRule('VI', 32);
export const cloudName = nameRule('cloud', 16);
/** "v-" + container + a suffix is an interface name (15 bytes). */
export const containerName = nameRule('container', 12);
/** "br-" + network is a bridge name. */
export const networkName = nameRule('network', 11);
