/**
 * Failure messages and stack traces name containers, addresses and paths: they go into an
 * encoded attribute (so the payload codec encrypts them) instead of the failure's plain fields.
 * Loaded by path (workers and clients alike; it runs in the workflow sandbox too).
 */
import { DefaultFailureConverter } from '@temporalio/common';

export const failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
