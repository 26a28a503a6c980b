// Runs the official SDK's agent toolset (agent_toolset_20260401) for Perimeter's differential tests.
//
// Protocol: one JSON request per stdin line, one JSON reply per stdout line, in order.
//   {"workdir": "/abs", "tool": "read", "input": {...}}  ->  {"content": [...], "is_error": bool}
//   {"workdir": "/abs", "close": true}                    ->  {"closed": true}
//   {"workdir": ..., "tool": ..., "input": ..., "timing": true} adds "elapsed_ms" to the reply.
// One toolset per workdir, kept until closed, so the bash tool's shell persists across calls the
// way it does within one session. A reply is the `user.tool_result` fields the SDK's
// SessionToolRunner would post: runRunnableTool for the outcome, then the same text-block mapping.
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';
import * as readline from 'node:readline';

const sdkDir = process.argv[2];
if (!sdkDir) {
  process.stderr.write('usage: driver.mjs <node_modules/@anthropic-ai/sdk directory>\n');
  process.exit(2);
}
const load = (rel) => import(pathToFileURL(path.join(sdkDir, rel)).href);
const { betaAgentToolset20260401 } = await load('tools/agent-toolset/node.mjs');
const { runRunnableTool } = await load('lib/tools/BetaRunnableTool.mjs');

// SessionToolRunner's toSessionContent is module-private; the toolset only ever returns strings,
// for which it is this one line.
const toSessionContent = (content) =>
  typeof content === 'string' ? [{ type: 'text', text: content || '(no output)' }] : content;

const toolsets = new Map();
const toolsetFor = (workdir) => {
  let tools = toolsets.get(workdir);
  if (!tools) {
    tools = new Map(betaAgentToolset20260401({ workdir }).map((t) => [t.name, t]));
    toolsets.set(workdir, tools);
  }
  return tools;
};

const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  if (req.close) {
    for (const tool of toolsetFor(req.workdir).values()) await tool.close?.();
    toolsets.delete(req.workdir);
    reply({ closed: true });
    continue;
  }
  const tool = toolsetFor(req.workdir).get(req.tool);
  if (!tool) {
    reply({ error: `unknown tool ${req.tool}` });
    continue;
  }
  const started = performance.now();
  const outcome = await runRunnableTool(tool, req.input, { toolUse: undefined, toolUseBlock: undefined });
  const elapsedMs = performance.now() - started;
  const result = { content: toSessionContent(outcome.content), is_error: outcome.isError };
  // The benchmark asks for the time spent inside the tool, without the pipe round trip.
  reply(req.timing ? { ...result, elapsed_ms: elapsedMs } : result);
}
for (const tools of toolsets.values()) for (const tool of tools.values()) await tool.close?.();
