/** The baseline of the serving benchmark: a bare fastify POST route, nothing else. */
import Fastify from 'fastify';

const app = Fastify();
app.post('/v1/recommendations', async (req) => ({
  ok: true,
  userId: (req.body as { userId?: string }).userId,
}));
app.get('/healthz', async () => ({ status: 'ok' }));
await app.listen({ host: '127.0.0.1', port: Number(process.env['PORT'] ?? 0) });
console.log(JSON.stringify({ port: (app.server.address() as { port: number }).port }));
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
