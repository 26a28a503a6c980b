// Runs the official Anthropic SDK's EnvironmentWorker against perimeter-sim until every work item
// the test enqueued has ended, then stops the worker. The test (conformance_test.cc) enqueues the
// scenarios beforehand and judges the outcome from the simulator's records afterwards; this driver
// only plays the reference worker, configured the way a user would configure it.
//
// usage: node driver.mjs <node_modules/@anthropic-ai/sdk dir>
// env:   PERIMETER_SIM_URL, PERIMETER_ENVIRONMENT_ID, PERIMETER_ENVIRONMENT_KEY, PERIMETER_WORKDIR,
//        PERIMETER_WORK_IDS (comma-separated), PERIMETER_DEADLINE_MS; optional:
//        PERIMETER_SESSION_IDS (comma-separated: sessions whose later items are queued as they
//        go, done once terminated with every item stopped), PERIMETER_MAX_IDLE_MS (the worker's
//        maxIdleMs, so that a turn's item ends idle soon enough for the next turn's)
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';

const sdkDir = process.argv[2];
const need = (name) => {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`driver: ${name} is required\n`);
    process.exit(2);
  }
  return value;
};
const simUrl = need('PERIMETER_SIM_URL');
const environmentId = need('PERIMETER_ENVIRONMENT_ID');
const environmentKey = need('PERIMETER_ENVIRONMENT_KEY');
const workdir = need('PERIMETER_WORKDIR');
const workIds = need('PERIMETER_WORK_IDS').split(',');
const sessionIds = (process.env.PERIMETER_SESSION_IDS ?? '').split(',').filter((id) => id !== '');
const maxIdleMs = process.env.PERIMETER_MAX_IDLE_MS ? Number(process.env.PERIMETER_MAX_IDLE_MS) : undefined;
const deadlineMs = Number(process.env.PERIMETER_DEADLINE_MS ?? '90000');

const load = (rel) => import(pathToFileURL(path.join(sdkDir, rel)).href);
const { default: Anthropic } = await load('index.mjs');
const { betaAgentToolset20260401 } = await load('tools/agent-toolset/node.mjs');
const { betaTool } = await load('helpers/beta/json-schema.mjs');

// A custom tool of the kind a user registers next to the built-in toolset.
const lookupTicket = betaTool({
  name: 'lookup_ticket',
  description: 'Look up a ticket by id',
  inputSchema: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
  run: async ({ id }) => `ticket ${id}: open`,
});

const client = new Anthropic({ baseURL: simUrl, apiKey: null, authToken: environmentKey });
const controller = new AbortController();
const worker = client.beta.environments.work.worker({
  environmentId,
  environmentKey,
  workdir,
  workerId: 'official-sdk-conformance',
  tools: (ctx) => [...betaAgentToolset20260401(ctx), lookupTicket],
  memorySyncIntervalMs: null,
  ...(maxIdleMs !== undefined ? { maxIdleMs } : {}),
});

// Watches the simulator's admin view of each item; the worker itself has no "queue drained" exit.
const allStopped = async () => {
  for (const id of workIds) {
    const response = await fetch(`${simUrl}/admin/work/${id}`);
    if (!response.ok) throw new Error(`admin/work/${id}: HTTP ${response.status}`);
    const item = await response.json();
    if (item.state !== 'stopped') return false;
  }
  for (const id of sessionIds) {
    const response = await fetch(`${simUrl}/admin/sessions/${id}`);
    if (!response.ok) throw new Error(`admin/sessions/${id}: HTTP ${response.status}`);
    const view = await response.json();
    if (view.session.status !== 'terminated') return false;
    if (view.items.some((item) => item.state !== 'stopped')) return false;
  }
  return true;
};

let timedOut = false;
const watcher = (async () => {
  const started = Date.now();
  while (!controller.signal.aborted) {
    // A failed look is retried: only the deadline ends the watch without every item stopped.
    const done = await allStopped().catch((e) => {
      process.stderr.write(`driver: admin check failed, retrying: ${e}\n`);
      return false;
    });
    if (done) break;
    if (Date.now() - started > deadlineMs) {
      timedOut = true;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  controller.abort();
})();

let failure;
try {
  await worker.run(controller.signal);
} catch (e) {
  if (!controller.signal.aborted) failure = e;
}
if (failure === undefined && !controller.signal.aborted) {
  failure = new Error('the worker returned before every item stopped');
}
controller.abort();
await watcher;
if (failure) {
  process.stderr.write(`driver: the worker failed: ${failure}\n`);
  process.exit(1);
}
if (timedOut) {
  process.stderr.write(`driver: not every work item stopped within ${deadlineMs} ms\n`);
  process.exit(1);
}
process.stdout.write(JSON.stringify({ event: 'all_stopped', work_ids: workIds }) + '\n');
