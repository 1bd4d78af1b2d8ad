import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fromSchema } from '@openapi-contrib/openapi-schema-to-json-schema';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const SPEC_PATH = fileURLToPath(new URL('./openapi.json', import.meta.url));
const SPEC_ID = 'qdrant-openapi';

interface OpenApiOperation {
  operationId: string;
  parameters?: { name: string; in: string; required?: boolean; schema?: unknown }[];
  requestBody?: { content?: { 'application/json'?: { schema?: { $ref?: string } } } };
  responses: Record<string, { content?: { 'application/json'?: { schema?: unknown } } }>;
}

export interface OperationValidators {
  operationId: string;
  body: ValidateFunction | undefined;
  query: Map<string, ValidateFunction>;
  response: ValidateFunction | undefined;
}

/**
 * Ajv validators for Qdrant's operations, built from the spec: each OpenAPI 3.0 schema is
 * converted to JSON Schema (the spec uses `nullable` beside `anyOf`, which ajv rejects) and
 * registered under one $id so that the spec's own $refs resolve.
 */
export class QdrantSpec {
  readonly ajv: Ajv;
  private readonly paths: Record<string, Record<string, OpenApiOperation>>;
  private readonly cache = new Map<string, OperationValidators>();

  constructor() {
    const spec = JSON.parse(readFileSync(SPEC_PATH, 'utf8')) as {
      paths: Record<string, Record<string, OpenApiOperation>>;
      components: { schemas: Record<string, unknown> };
    };
    this.paths = spec.paths;
    this.ajv = new Ajv({ strict: false, allErrors: false, validateFormats: true });
    addFormats(this.ajv);
    for (const f of ['uint64', 'uint32', 'uint16', 'uint8', 'uint', 'usize']) this.ajv.addFormat(f, { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= 0 });
    for (const f of ['int64', 'int32', 'int16', 'int8']) this.ajv.addFormat(f, { type: 'number', validate: (n: number) => Number.isInteger(n) });
    for (const f of ['double', 'float']) this.ajv.addFormat(f, { type: 'number', validate: () => true });
    const schemas: Record<string, unknown> = {};
    for (const [name, schema] of Object.entries(spec.components.schemas)) {
      const converted = fromSchema(schema as object, { cloneSchema: true }) as Record<string, unknown>;
      delete converted.$schema;
      schemas[name] = converted;
    }
    this.ajv.addSchema({ $id: SPEC_ID, components: { schemas } });
  }

  validator(schema: unknown): ValidateFunction {
    const converted = fromSchema(schema as object, { cloneSchema: true }) as Record<string, unknown>;
    delete converted.$schema;
    return this.ajv.compile(rewriteRefs(converted) as object);
  }

  /** Validators for the operation at `path` (the spec's template, e.g. /collections/{collection_name}). */
  operation(method: string, path: string): OperationValidators {
    const cacheKey = `${method} ${path}`;
    const cached = this.cache.get(cacheKey);
    if (cached) return cached;
    const op = this.paths[path]?.[method.toLowerCase()];
    if (!op) throw new Error(`the Qdrant spec has no operation ${method} ${path}`);
    const bodyRef = op.requestBody?.content?.['application/json']?.schema;
    const responseSchema = op.responses['200']?.content?.['application/json']?.schema;
    const query = new Map<string, ValidateFunction>();
    for (const p of op.parameters ?? []) if (p.in === 'query' && p.schema) query.set(p.name, this.validator(p.schema));
    const validators: OperationValidators = {
      operationId: op.operationId,
      body: bodyRef ? this.validator(bodyRef) : undefined,
      query,
      response: responseSchema ? this.validator(responseSchema) : undefined,
    };
    this.cache.set(cacheKey, validators);
    return validators;
  }
}

function rewriteRefs(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(rewriteRefs);
  if (schema && typeof schema === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(schema)) out[k] = k === '$ref' && typeof v === 'string' && v.startsWith('#/') ? `${SPEC_ID}${v}` : rewriteRefs(v);
    return out;
  }
  return schema;
}

export function describeAjvError(errors: ErrorObject[] | null | undefined, data: unknown): string {
  const first = errors?.[0];
  if (!first) return 'invalid';
  return `${first.instancePath || '/'} ${first.message ?? 'is invalid'}${data === undefined ? '' : ''}`;
}
