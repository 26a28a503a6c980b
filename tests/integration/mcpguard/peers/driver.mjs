// The official MCP TypeScript SDK client (StreamableHTTPClientTransport) driving every feature
// @modelcontextprotocol/server-everything offers over Streamable HTTP, against one URL (the server
// directly, or perimeter-mcp-guard in front of it). Prints ONE JSON document on stdout:
//
//   { "results": {...}, "sent": [...], "marker": "..." }
//
// `results` is normalized (session ids, task ids, times and random values stripped) so that a run
// directly and a run through the guard compare equal. `sent` lists every JSON-RPC request and
// notification this client POSTed ({method, id}), for the audit assertions.
//
//   node driver.mjs PEERS_DIR URL full MARKER
//   node driver.mjs PEERS_DIR URL deny DENIED_TOOL ALLOWED_TOOL
//
// PEERS_DIR is the install of tests/mcp-peers (hack/setup/mcp-peers.sh --check prints it).
// Every step is bounded in time; the process exits non-zero (printing what failed on stderr) on
// any unexpected failure, and a watchdog ends it after PERIMETER_DRIVER_DEADLINE_MS.
import path from "node:path";
import { pathToFileURL } from "node:url";

const [peersDir, url, mode, ...rest] = process.argv.slice(2);
if (!peersDir || !url || !mode) {
  console.error("usage: driver.mjs PEERS_DIR URL full MARKER | deny DENIED ALLOWED");
  process.exit(2);
}
const deadlineMs = Number(process.env.PERIMETER_DRIVER_DEADLINE_MS || 120000);
const watchdog = setTimeout(() => {
  console.error(`driver: deadline of ${deadlineMs} ms exceeded`);
  process.exit(3);
}, deadlineMs);

const sdkRoot = path.join(peersDir, "node_modules/@modelcontextprotocol/sdk/dist/esm");
const load = (file) => import(pathToFileURL(path.join(sdkRoot, file)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const types = await load("types.js");

const STEP_TIMEOUT_MS = 30000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- normalization ------------------------------------------------------------------------
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;
const ISO_TIME = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?/g;
const CLOCK = /\b\d{1,2}:\d{2}:\d{2}(\s?[AP]M)?/g;
const VOLATILE_KEYS = new Set(["createdAt", "lastUpdatedAt", "timestamp", "sessionId", "taskId"]);

function normalizeString(text) {
  return text.replace(UUID, "<uuid>").replace(ISO_TIME, "<time>").replace(CLOCK, "<time>");
}

function decodeBlob(blob) {
  const bytes = Buffer.from(blob, "base64");
  const text = bytes.toString("utf8");
  // Printable text (the dynamic blob resources embed the time they were made): compare it
  // normalized; real binary (the gzip) is compared byte for byte.
  if (/^[\x20-\x7e\n\r\t]*$/.test(text)) return { blob_text: normalizeString(text) };
  return { blob_base64: blob };
}

function normalize(value) {
  if (typeof value === "string") return normalizeString(value);
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) {
      if (VOLATILE_KEYS.has(key)) {
        out[key] = "<volatile>";
      } else if (key === "blob" && typeof value[key] === "string") {
        out[key] = decodeBlob(value[key]);
      } else {
        out[key] = normalize(value[key]);
      }
    }
    return out;
  }
  return value;
}

function errorOf(error) {
  return { error: { code: error?.code ?? null, message: normalizeString(String(error?.message)) } };
}

async function attempt(fn) {
  try {
    return await fn();
  } catch (error) {
    return errorOf(error);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function waitFor(predicate, ms, what) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// ---- the client ---------------------------------------------------------------------------
const sent = [];
const notifications = [];
const serverRequests = [];
const ROOTS = [{ uri: "file:///perimeter/roots/workspace", name: "perimeter-workspace" }];

function makeClient() {
  const client = new Client(
    { name: "perimeter-mcp-guard-peers-driver", version: "1.0.0" },
    {
      capabilities: {
        sampling: {},
        elicitation: { form: {}, url: {} },
        roots: { listChanged: true },
      },
    },
  );
  client.setRequestHandler(types.CreateMessageRequestSchema, async (request) => {
    serverRequests.push("sampling/createMessage");
    const first = request.params.messages[0]?.content;
    return {
      model: "perimeter-test-model",
      role: "assistant",
      stopReason: "endTurn",
      content: { type: "text", text: `sampled: ${first?.type === "text" ? first.text : "?"}` },
    };
  });
  client.setRequestHandler(types.ElicitRequestSchema, async (request) => {
    serverRequests.push(`elicitation/create:${request.params.mode ?? "form"}`);
    if (request.params.mode === "url") return { action: "accept" };
    return {
      action: "accept",
      content: {
        name: "Perimeter Test",
        check: true,
        firstLine: "It was a dark and stormy night.",
        email: "test@example.com",
        homepage: "https://example.com",
        birthdate: "2000-01-01",
      },
    };
  });
  client.setRequestHandler(types.ListRootsRequestSchema, async () => {
    serverRequests.push("roots/list");
    return { roots: ROOTS };
  });
  client.fallbackNotificationHandler = async (notification) => {
    notifications.push(notification);
  };
  client.setNotificationHandler(types.LoggingMessageNotificationSchema, async (notification) => {
    notifications.push(notification);
  });
  client.setNotificationHandler(types.ResourceUpdatedNotificationSchema, async (notification) => {
    notifications.push(notification);
  });
  return client;
}

function makeTransport() {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    reconnectionOptions: {
      initialReconnectionDelay: 200,
      maxReconnectionDelay: 1000,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 2,
    },
  });
  // Record what is POSTed (a send with a resumption token is a GET, not a request).
  const send = transport.send.bind(transport);
  transport.send = async (message, options) => {
    if (message.method && !options?.resumptionToken) {
      const record = { method: message.method, id: message.id ?? null };
      // The tool of a call: the guard counts calls by tool (perimeter_mcp_guard_requests_total).
      if (message.method === "tools/call") record.tool = message.params?.name ?? null;
      sent.push(record);
    }
    return send(message, options);
  };
  return transport;
}

function toolCall(client, name, args, options = {}) {
  return withTimeout(
    client.callTool({ name, arguments: args }, undefined, { timeout: STEP_TIMEOUT_MS, ...options }),
    STEP_TIMEOUT_MS + 5000,
    `tools/call ${name}`,
  );
}

// ---- deny mode ----------------------------------------------------------------------------
// Valid arguments, so that the call would succeed were it not denied.
const SAMPLE_ARGUMENTS = {
  "get-sum": { a: 1, b: 2 },
  echo: { message: "still allowed" },
  "get-annotated-message": { messageType: "success" },
  "get-structured-content": { location: "Chicago" },
};

async function runDeny(denied, allowed) {
  const client = makeClient();
  const transport = makeTransport();
  await withTimeout(client.connect(transport), STEP_TIMEOUT_MS, "initialize");
  const listed = await client.listTools();
  const result = {
    tools: listed.tools.map((tool) => tool.name).sort(),
    denied: await attempt(async () => normalize(await toolCall(client, denied, SAMPLE_ARGUMENTS[denied] ?? {}))),
    allowed: await attempt(async () =>
      normalize(await toolCall(client, allowed, SAMPLE_ARGUMENTS[allowed] ?? {})),
    ),
  };
  await attempt(() => transport.terminateSession());
  await client.close();
  return result;
}

// ---- full mode ----------------------------------------------------------------------------
async function runFull(marker) {
  const r = {};
  const client = makeClient();
  const transport = makeTransport();
  await withTimeout(client.connect(transport), STEP_TIMEOUT_MS, "initialize");
  r.initialize = normalize({
    protocolVersion: transport.protocolVersion,
    serverVersion: client.getServerVersion(),
    capabilities: client.getServerCapabilities(),
    instructions: client.getInstructions(),
    sessionIdIssued: typeof transport.sessionId === "string" && transport.sessionId.length > 0,
  });
  r.ping = await attempt(async () => normalize(await client.ping()));

  // The conditional tools are registered once `notifications/initialized` is handled, and the
  // server asks for the roots 350 ms later.
  await waitFor(() => serverRequests.includes("roots/list"), 10000, "the server's roots/list");
  const listed = await client.listTools();
  r.tools_list = normalize(listed.tools.sort((a, b) => a.name.localeCompare(b.name)));
  const toolNames = listed.tools.map((tool) => tool.name);

  r.logging_set_level = await attempt(async () => normalize(await client.setLoggingLevel("debug")));

  const calls = {};
  calls.echo = await attempt(async () => normalize(await toolCall(client, "echo", { message: marker })));
  calls.get_sum = await attempt(async () => normalize(await toolCall(client, "get-sum", { a: 19, b: 23 })));
  calls.get_tiny_image = await attempt(async () => normalize(await toolCall(client, "get-tiny-image", {})));
  calls.get_annotated_message = {};
  for (const messageType of ["error", "success", "debug"]) {
    calls.get_annotated_message[messageType] = await attempt(async () =>
      normalize(await toolCall(client, "get-annotated-message", { messageType, includeImage: messageType === "success" })),
    );
  }
  calls.get_structured_content = {};
  for (const location of ["New York", "Chicago", "Los Angeles"]) {
    calls.get_structured_content[location] = await attempt(async () =>
      normalize(await toolCall(client, "get-structured-content", { location })),
    );
  }
  calls.get_resource_links = await attempt(async () => normalize(await toolCall(client, "get-resource-links", { count: 4 })));
  calls.get_resource_reference = {
    text: await attempt(async () => normalize(await toolCall(client, "get-resource-reference", { resourceType: "Text", resourceId: 2 }))),
    blob: await attempt(async () => normalize(await toolCall(client, "get-resource-reference", { resourceType: "Blob", resourceId: 3 }))),
  };
  calls.get_env = await attempt(async () => {
    const result = await toolCall(client, "get-env", {});
    const env = JSON.parse(result.content[0].text);
    return { isError: result.isError ?? false, has_env: Object.keys(env).length > 0 };
  });
  const gzipInput = "data:text/plain;base64," + Buffer.from("perimeter mcp guard\n".repeat(64)).toString("base64");
  calls.gzip_file_as_resource = {
    resource: await attempt(async () =>
      normalize(await toolCall(client, "gzip-file-as-resource", { name: "guard.txt.gz", data: gzipInput, outputType: "resource" })),
    ),
    link: await attempt(async () =>
      normalize(await toolCall(client, "gzip-file-as-resource", { name: "guard-link.txt.gz", data: gzipInput, outputType: "resourceLink" })),
    ),
  };
  calls.gzip_file_as_resource.read_back = await attempt(async () =>
    normalize(await client.readResource({ uri: calls.gzip_file_as_resource.link.content[0].uri })),
  );

  // Progress notifications on the request's own SSE stream; resumption tokens (SSE event ids).
  const progress = [];
  const resumptionTokens = [];
  calls.trigger_long_running_operation = await attempt(async () =>
    normalize(
      await toolCall(client, "trigger-long-running-operation", { duration: 1, steps: 4 }, {
        onprogress: (p) => progress.push(normalize(p)),
        resetTimeoutOnProgress: true,
        onresumptiontoken: (token) => resumptionTokens.push(token),
      }),
    ),
  );
  r.progress = progress;
  r.resumption_tokens_seen = resumptionTokens.length > 0;

  // Resumption: GET with Last-Event-ID (the SDK sends it when given a resumption token), which
  // replays the events after the first one, ending with the long operation's result.
  r.resumption = await attempt(async () => {
    if (resumptionTokens.length === 0) throw new Error("the server sent no SSE event ids");
    const replayed = await withTimeout(
      client.request(
        { method: "tools/call", params: { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 4 } } },
        types.CallToolResultSchema,
        { resumptionToken: resumptionTokens[0], timeout: 15000 },
      ),
      20000,
      "resumption",
    );
    return normalize(replayed);
  });

  // Sampling and elicitation: the server's request rides the tool call's SSE stream.
  calls.trigger_sampling_request = await attempt(async () =>
    normalize(await toolCall(client, "trigger-sampling-request", { prompt: "guard sampling", maxTokens: 50 })),
  );
  calls.trigger_elicitation_request = await attempt(async () =>
    normalize(await toolCall(client, "trigger-elicitation-request", {})),
  );
  calls.trigger_url_elicitation = {
    request_path: await attempt(async () =>
      normalize(
        await toolCall(client, "trigger-url-elicitation", {
          url: "https://example.com/authorize",
          message: "Open it",
          elicitationId: "perimeter-elicitation-1",
        }),
      ),
    ),
    error_path: await attempt(async () =>
      normalize(
        await toolCall(client, "trigger-url-elicitation", {
          url: "https://example.com/other",
          message: "Open it",
          elicitationId: "perimeter-elicitation-2",
          errorPath: true,
        }),
      ),
    ),
  };
  calls.get_roots_list = await attempt(async () => normalize(await toolCall(client, "get-roots-list", {})));

  // Tasks (SEP-1686): a tool that only runs as a task; created, polled, result fetched.
  calls.simulate_research_query = await attempt(async () => {
    const kinds = [];
    const statuses = new Set();
    let final = null;
    const stream = client.experimental.tasks.callToolStream(
      { name: "simulate-research-query", arguments: { topic: "reverse proxies" } },
      types.CallToolResultSchema,
      { task: { ttl: 60000 }, timeout: STEP_TIMEOUT_MS },
    );
    for await (const message of stream) {
      if (!kinds.includes(message.type)) kinds.push(message.type);
      if (message.task?.status) statuses.add(message.task.status);
      if (message.type === "result") final = normalize(message.result);
      if (message.type === "error") final = errorOf(message.error);
    }
    return { kinds, statuses: [...statuses].sort(), final };
  });
  calls.tasks_list = await attempt(async () => {
    const list = await client.experimental.tasks.listTasks();
    return { count: list.tasks.length, statuses: list.tasks.map((task) => task.status).sort() };
  });
  r.tools_call = calls;
  r.tools_called = Object.keys(calls).sort();
  r.tools_not_called = toolNames
    .filter((name) => !Object.keys(calls).includes(name.replace(/-/g, "_")))
    .filter((name) => !["toggle-simulated-logging", "toggle-subscriber-updates"].includes(name))
    .sort();

  // Resources.
  const resources = await client.listResources();
  r.resources_list = normalize(resources);
  r.resources_templates_list = normalize(await client.listResourceTemplates());
  r.resources_read = {
    static_text: await attempt(async () => normalize(await client.readResource({ uri: "demo://resource/static/document/features.md" }))),
    dynamic_text: await attempt(async () => normalize(await client.readResource({ uri: "demo://resource/dynamic/text/1" }))),
    dynamic_blob: await attempt(async () => normalize(await client.readResource({ uri: "demo://resource/dynamic/blob/2" }))),
    unknown: await attempt(async () => normalize(await client.readResource({ uri: "demo://resource/dynamic/text/not-a-number" }))),
  };

  // Subscriptions: subscribe, let the server's simulated updates run, unsubscribe.
  const subscribedUri = "demo://resource/dynamic/text/1";
  r.resources_subscribe = await attempt(async () => normalize(await client.subscribeResource({ uri: subscribedUri })));
  r.toggle_subscriber_updates_on = await attempt(async () => normalize(await toolCall(client, "toggle-subscriber-updates", {})));
  await attempt(() =>
    waitFor(
      () => notifications.some((n) => n.method === "notifications/resources/updated" && n.params.uri === subscribedUri),
      10000,
      "notifications/resources/updated",
    ),
  );
  r.toggle_subscriber_updates_off = await attempt(async () => normalize(await toolCall(client, "toggle-subscriber-updates", {})));
  r.resources_unsubscribe = await attempt(async () => normalize(await client.unsubscribeResource({ uri: subscribedUri })));

  // Logging: the simulated, random-leveled log messages on the standalone GET stream.
  r.toggle_simulated_logging_on = await attempt(async () =>
    normalize(await toolCall(client, "toggle-simulated-logging", {})),
  );
  await attempt(() =>
    waitFor(
      () => notifications.some((n) => n.method === "notifications/message" && /level[- ]message/i.test(String(n.params.data))),
      10000,
      "a simulated log message",
    ),
  );
  r.toggle_simulated_logging_off = await attempt(async () =>
    normalize(await toolCall(client, "toggle-simulated-logging", {})),
  );

  // Prompts and completion.
  r.prompts_list = normalize(await client.listPrompts());
  r.prompts_get = {
    simple: await attempt(async () => normalize(await client.getPrompt({ name: "simple-prompt" }))),
    args: await attempt(async () => normalize(await client.getPrompt({ name: "args-prompt", arguments: { city: "Lisbon", state: "Lisboa" } }))),
    completable: await attempt(async () =>
      normalize(await client.getPrompt({ name: "completable-prompt", arguments: { department: "Engineering", name: "Alice" } })),
    ),
    resource_text: await attempt(async () =>
      normalize(await client.getPrompt({ name: "resource-prompt", arguments: { resourceType: "Text", resourceId: "3" } })),
    ),
    resource_blob: await attempt(async () =>
      normalize(await client.getPrompt({ name: "resource-prompt", arguments: { resourceType: "Blob", resourceId: "4" } })),
    ),
    missing: await attempt(async () => normalize(await client.getPrompt({ name: "no-such-prompt" }))),
  };
  r.completion = {
    prompt_department: await attempt(async () =>
      normalize(await client.complete({ ref: { type: "ref/prompt", name: "completable-prompt" }, argument: { name: "department", value: "E" } })),
    ),
    prompt_name_in_context: await attempt(async () =>
      normalize(
        await client.complete({
          ref: { type: "ref/prompt", name: "completable-prompt" },
          argument: { name: "name", value: "" },
          context: { arguments: { department: "Sales" } },
        }),
      ),
    ),
    resource_template: await attempt(async () =>
      normalize(
        await client.complete({ ref: { type: "ref/resource", uri: "demo://resource/dynamic/text/{resourceId}" }, argument: { name: "resourceId", value: "1" } }),
      ),
    ),
  };
  r.unknown_tool = await attempt(async () => normalize(await toolCall(client, "no-such-tool", {})));
  r.unknown_method = await attempt(async () =>
    normalize(await client.request({ method: "perimeter/no-such-method", params: {} }, types.EmptyResultSchema)),
  );
  r.roots_list_changed = await attempt(async () => {
    await client.sendRootsListChanged();
    return "sent";
  });
  r.ping_again = await attempt(async () => normalize(await client.ping()));

  // Notifications the server pushed: the deterministic ones exactly, the random log levels as a
  // count of at least one.
  const pushed = new Set();
  let simulatedLogs = 0;
  let resourceUpdates = 0;
  for (const n of notifications) {
    if (n.method === "notifications/message" && /level[- ]message/i.test(String(n.params.data))) {
      simulatedLogs += 1;
    } else if (n.method === "notifications/tasks/status") {
      // How many "working" updates arrive depends on timing; the final status does not.
      if (n.params.status === "completed") pushed.add(JSON.stringify({ method: n.method, status: "completed" }));
    } else if (n.method === "notifications/resources/updated") {
      resourceUpdates += 1;
      pushed.add(JSON.stringify(normalize(n)));
    } else {
      pushed.add(JSON.stringify(normalize(n)));
    }
  }
  r.notifications = {
    distinct: [...pushed].sort().map((text) => JSON.parse(text)),
    simulated_log_messages_seen: simulatedLogs > 0,
    resource_updates_seen: resourceUpdates > 0,
  };
  r.server_requests = [...new Set(serverRequests)].sort();

  // Session termination (DELETE), then the old session is gone.
  const sessionUrl = url;
  const sessionId = transport.sessionId;
  r.terminate_session = await attempt(async () => {
    await withTimeout(transport.terminateSession(), STEP_TIMEOUT_MS, "DELETE");
    return { session_cleared: transport.sessionId === undefined };
  });
  r.after_termination = await attempt(async () => {
    const response = await fetch(sessionUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": sessionId,
        "mcp-protocol-version": r.initialize.protocolVersion,
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: "after-delete", method: "ping" }),
      signal: AbortSignal.timeout(10000),
    });
    sent.push({ method: "ping", id: "after-delete" });
    return { status: response.status, body: normalize(await response.json().catch(() => null)) };
  });
  await client.close();
  return r;
}

try {
  let results;
  if (mode === "full") {
    results = await runFull(rest[0] ?? "perimeter-marker");
  } else if (mode === "deny") {
    results = await runDeny(rest[0], rest[1] ?? "echo");
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  process.stdout.write(JSON.stringify({ results, sent }) + "\n");
  clearTimeout(watchdog);
  process.exit(0);
} catch (error) {
  console.error("driver failed:", error?.stack ?? error);
  process.exit(1);
}
