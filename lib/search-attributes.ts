/**
 * The migration's custom search attributes: what an operator filters the Web UI's workflow list
 * by (`MigraviVi = "demo"`, `MigraviState = "compensating"`), kept current by the workflow. The
 * server must know them before a workflow sets one: the dev server is started with them
 * (`--search-attribute`), and the orchestrator adds any a server lacks before it polls.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SEARCH_ATTRIBUTES = {
  vi: defineSearchAttributeKey('MigraviVi', SearchAttributeType.KEYWORD),
  source: defineSearchAttributeKey('MigraviSource', SearchAttributeType.KEYWORD),
  destination: defineSearchAttributeKey('MigraviDestination', SearchAttributeType.KEYWORD),
  phase: defineSearchAttributeKey('MigraviPhase', SearchAttributeType.KEYWORD),
  state: defineSearchAttributeKey('MigraviState', SearchAttributeType.KEYWORD),
} as const;

/** As the dev server's `--search-attribute NAME=TYPE` flags take them. */
export function searchAttributeFlags(): string[] {
  return Object.values(SEARCH_ATTRIBUTES).flatMap((key) => ['--search-attribute', `${key.name}=Keyword`]);
}
