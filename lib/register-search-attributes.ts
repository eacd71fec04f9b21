/**
 * Adds the migration's search attributes (lib/search-attributes.ts) to a namespace that lacks
 * them: a server started before this release, or by someone else, gets them before the first
 * workflow of this release sets one (an unknown attribute would fail its workflow task).
 */
import { temporal } from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from './search-attributes';

interface HasOperatorService {
  operatorService: {
    listSearchAttributes(req: temporal.api.operatorservice.v1.IListSearchAttributesRequest): Promise<temporal.api.operatorservice.v1.IListSearchAttributesResponse>;
    addSearchAttributes(req: temporal.api.operatorservice.v1.IAddSearchAttributesRequest): Promise<unknown>;
  };
}

/** Returns the names it added (none when the namespace had them all). */
export async function ensureSearchAttributes(connection: HasOperatorService, namespace: string): Promise<string[]> {
  const have = (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  const missing = Object.values(SEARCH_ATTRIBUTES).map((key) => key.name).filter((name) => !(name in have));
  if (missing.length) {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((name) => [name, temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD])),
    });
  }
  return missing;
}
