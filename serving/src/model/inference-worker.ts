/**
 * The inference thread's entry point (worker_threads), started by InferenceThread in
 * thread.ts. It holds one NativeSession per open model and answers run requests in order.
 * Inputs arrive in SharedArrayBuffers written by the main thread (no transfer, no clone);
 * outputs go back as transferred ArrayBuffers.
 */
import { parentPort } from 'node:worker_threads';
import { NativeSession } from './engine.js';
import type { ThreadReply, ThreadRequest } from './thread.js';

const port = parentPort;
if (!port) throw new Error('inference-worker.ts must run in a worker thread');

const sessions = new Map<number, { session: NativeSession; input: string; output: string }>();

port.on('message', (msg: ThreadRequest) => {
  if (msg.type === 'open') {
    try {
      sessions.set(msg.session, {
        session: NativeSession.open(msg.bytes),
        input: msg.input,
        output: msg.output,
      });
    } catch {
      // Reported on the first run of this session; the main thread opened the same bytes already.
    }
    return;
  }
  if (msg.type === 'close') {
    sessions.get(msg.session)?.session.dispose();
    sessions.delete(msg.session);
    return;
  }
  if (msg.type === 'exit') {
    for (const s of sessions.values()) s.session.dispose();
    sessions.clear();
    port.close(); // nothing else keeps this thread alive: it ends
    return;
  }
  let reply: ThreadReply;
  try {
    const s = sessions.get(msg.session);
    if (!s) throw new Error(`inference thread: session ${msg.session} is not open`);
    const out = s.session.run(s.input, s.output, msg.data, msg.rows, msg.columns);
    reply = { id: msg.id, scores: out };
    port.postMessage(reply, [out.buffer as ArrayBuffer]);
    return;
  } catch (err) {
    reply = { id: msg.id, error: (err as Error).message };
  }
  port.postMessage(reply);
});
