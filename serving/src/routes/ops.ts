/** Probes, metrics, the OpenAPI document and the admin route that hot-swaps a model. */
import { Type, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { MODEL_TASKS } from '../../../contracts/model-metadata.js';
import type { ServingContext } from '../context.js';
import { ServingError } from '../errors.js';
import { withDeadline } from '../features/deadline.js';
import { ModelLoadError } from '../model/loader.js';
import { checkModelUri } from '../model/uri.js';
import { errorResponses, stringEnum, requireBearer } from './schemas.js';

export const opsRoutes: FastifyPluginAsyncTypebox<{ ctx: ServingContext }> = async (app, { ctx }) => {
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    {
      schema: {
        summary:
          'Ready when the model of every task this process serves is loaded, and Redis answers or a feature snapshot is loaded',
        response: {
          200: ReadyResponse,
          503: ReadyResponse,
        },
      },
    },
    async (_req, reply) => {
      const model = ctx.requiredTasks.every((t) => ctx.models.peek(t) !== undefined);
      let redis = false;
      try {
        redis = (await withDeadline(ctx.redis.ping(), 250)) === 'PONG';
      } catch {
        redis = false;
      }
      const fallback = ctx.features.snapshot !== undefined;
      const draining = ctx.drain.active;
      const ready = !draining && model && (redis || fallback);
      return reply.code(ready ? 200 : 503).send({ ready, checks: { model, redis, fallback }, draining });
    },
  );

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.put(
    '/v1/admin/models/:task',
    {
      preValidation: requireBearer(ctx.adminToken),
      schema: {
        summary: 'Load, verify, warm and swap in a model revision (bearer token required)',
        params: Type.Object({ task: stringEnum(MODEL_TASKS) }),
        body: Type.Object(
          { uri: Type.String({ minLength: 1, maxLength: 2048 }) },
          { additionalProperties: false },
        ),
        security: [{ bearer: [] }],
        response: {
          200: Type.Object({ task: Type.String(), model: Type.String(), revision: Type.String() }),
          422: errorResponses[400],
          ...errorResponses,
        },
      },
    },
    async (req) => {
      // A malformed URI is the caller's mistake, not a failed load: 400 before anything is fetched.
      const problem = checkModelUri(req.body.uri);
      if (problem !== null) throw new ServingError('VALIDATION', `uri ${problem}`, { field: 'uri' });
      try {
        const m = await ctx.models.load(req.params.task, req.body.uri);
        return { task: req.params.task, model: m.meta.name, revision: m.revision };
      } catch (err) {
        ctx.metrics.modelLoads.inc({
          model: ctx.metrics.model,
          namespace: ctx.metrics.namespace,
          task: req.params.task,
          outcome: 'failed',
        });
        if (err instanceof ModelLoadError)
          throw new ServingError('MODEL_LOAD_FAILED', err.message, { field: 'uri' });
        throw err;
      }
    },
  );
};

const ReadyResponse = Type.Object({
  ready: Type.Boolean(),
  draining: Type.Boolean(),
  checks: Type.Object({ model: Type.Boolean(), redis: Type.Boolean(), fallback: Type.Boolean() }),
});
