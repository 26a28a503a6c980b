// The official SDK's per-item flow, started the way `ant beta:worker poll --on-work` starts a
// process: EnvironmentWorker.handleItem() with no arguments reads ANTHROPIC_WORK_ID,
// ANTHROPIC_ENVIRONMENT_ID, ANTHROPIC_SESSION_ID and ANTHROPIC_WORK_SECRET; the client reads
// ANTHROPIC_BASE_URL. The reference peer of perimeter-runner in the differential test and the
// benchmark. PERIMETER_MEMORY_SYNC_INTERVAL_MS is read as perimeter-runner reads it: unset, the
// SDK's default (15 s); `off`, memorySyncIntervalMs: null (memory stores off); else the interval.
//
// usage: node handle_item.mjs <node_modules/@anthropic-ai/sdk dir>   (cwd: the workdir)
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';

const sdkDir = process.argv[2];
const load = (rel) => import(pathToFileURL(path.join(sdkDir, rel)).href);
const { default: Anthropic } = await load('index.mjs');

const maxIdleMs = process.env.PERIMETER_MAX_IDLE_MS ? Number(process.env.PERIMETER_MAX_IDLE_MS) : undefined;
const memoryEnv = process.env.PERIMETER_MEMORY_SYNC_INTERVAL_MS;
const memorySyncIntervalMs =
  memoryEnv === 'off' ? null
  : memoryEnv ? Number(memoryEnv)
  : undefined;
// No API key: every per-item call carries the sessions token from the work secret.
const client = new Anthropic({ apiKey: null, authToken: null });
const controller = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => controller.abort());
const worker = client.beta.environments.work.worker({
  workdir: process.cwd(),
  ...(memorySyncIntervalMs !== undefined ? { memorySyncIntervalMs } : {}),
  ...(maxIdleMs !== undefined ? { maxIdleMs } : {}),
});
try {
  await worker.handleItem({ signal: controller.signal });
} catch (e) {
  process.stderr.write(`handle_item: ${e}\n`);
  process.exit(1);
}
