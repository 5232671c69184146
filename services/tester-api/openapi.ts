// The OpenAPI 3.1 document of the tester API, built from the route table. The committed copy
// (openapi.json next to this file) is what the service serves; a test fails when the two drift.
// Regenerate with: node --import tsx services/tester-api/openapi.ts > services/tester-api/openapi.json
import { fileURLToPath } from 'node:url';
import { CATALOGUE } from '../../appliance/errors.js';
import { COMMON_ERRORS, ROUTES } from './routes.js';

const PROBLEM = {
  type: 'object',
  description: 'RFC 9457 problem details carrying a PKS error code',
  required: ['type', 'title', 'status', 'detail', 'code', 'retry'],
  properties: {
    type: { type: 'string', description: 'urn:pks:error:<code>' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    code: { type: 'string' },
    retry: { type: 'boolean', description: 'whether asking again can help' },
    instance: { type: 'string' },
    field: { type: 'string', description: 'the offending input field, for validation errors' },
  },
};

export function buildOpenApi(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const url = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters: unknown[] = [];
    for (const [where, schema] of [
      ['path', r.schema.params],
      ['query', r.schema.querystring],
    ] as const) {
      if (!schema) continue;
      const props = (schema as { properties: Record<string, unknown>; required?: string[] }).properties;
      const req = new Set((schema as { required?: string[] }).required ?? []);
      for (const [name, s] of Object.entries(props)) parameters.push({ name, in: where, required: where === 'path' || req.has(name), schema: s });
    }
    const codes = [...new Set([...(r.auth !== 'mtls' ? COMMON_ERRORS : ['PKS_RATE_LIMITED', 'PKS_INTERNAL']), ...r.errors])].sort();
    const op: Record<string, unknown> = {
      operationId: r.id,
      summary: r.summary,
      ...(parameters.length ? { parameters } : {}),
      ...(r.schema.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: r.schema.body } } } }
        : {}),
      responses: {
        200: { description: 'success', content: { 'application/json': { schema: r.schema.response[200] } } },
        default: {
          description: `problem details; codes: ${codes.map((c) => `${c} (${CATALOGUE[c as keyof typeof CATALOGUE].status})`).join(', ')}`,
          content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
        },
      },
      ...(r.bodyLimit ? { 'x-body-limit': r.bodyLimit } : {}),
    };
    (paths[url] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'PKS tester API',
      version,
      description:
        'End-of-line testers get SHE key packages and ECU certificates over mutual TLS (TLS 1.2+, a client certificate from the tester CA; the certificate CN is the tester id). Every error is application/problem+json with a stable `code`.',
    },
    servers: [{ url: 'https://pks.local:8443' }],
    security: [{ mutualTLS: [] }],
    components: { securitySchemes: { mutualTLS: { type: 'mutualTLS' } }, schemas: { Problem: PROBLEM } },
    paths,
  };
}

export const OPENAPI_FILE = fileURLToPath(new URL('./openapi.json', import.meta.url));
export const API_VERSION = '1.0.0';

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.write(JSON.stringify(buildOpenApi(API_VERSION), null, 2) + '\n');
}
