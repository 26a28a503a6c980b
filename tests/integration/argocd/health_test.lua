-- Runs Perimeter's Argo CD health checks (deploy/argocd/perimeter.dev/*/health.lua) the way
-- Argo CD does: the script as a chunk, the object as the global `obj`, only the libraries Argo CD
-- opens, and the returned table read as {status, message}. Each sample in testdata/<kind>.json
-- is an object as the operator leaves it, with the health and message Argo CD must show for it.
--   lua5.4 health_test.lua <repository root>
local root = assert(arg[1], "usage: lua5.4 health_test.lua <repository root>")

local function read_file(path)
  local file, err = io.open(path, "rb")
  if not file then error("cannot read " .. path .. ": " .. tostring(err), 0) end
  local text = file:read("a")
  file:close()
  return text
end

-- A small strict JSON decoder: objects become tables keyed by name, arrays sequences, integers
-- integers (kubectl's generations are integers; Argo CD's Lua sees them as numbers either way).
local function decode_json(text, source)
  local pos = 1
  local function fail(what)
    error(string.format("%s: %s at byte %d", source, what, pos), 0)
  end
  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or #text + 1
  end
  local value
  local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
                    r = "\r", t = "\t" }
  local function string_value()
    pos = pos + 1
    local parts = {}
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1; break end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        if e == "u" then
          local code = tonumber(text:sub(pos + 2, pos + 5), 16) or fail("bad \\u escape")
          parts[#parts + 1] = utf8.char(code)
          pos = pos + 6
        else
          parts[#parts + 1] = escapes[e] or fail("bad escape")
          pos = pos + 2
        end
      else
        parts[#parts + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(parts)
  end
  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local object = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return object end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local key = string_value()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        object[key] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return object end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local array = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return array end
      while true do
        array[#array + 1] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return array end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return string_value()
    elseif text:find("^true", pos) then pos = pos + 4; return true
    elseif text:find("^false", pos) then pos = pos + 5; return false
    elseif text:find("^null", pos) then pos = pos + 4; return nil
    else
      local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not number or number == "" then fail("unexpected character '" .. c .. "'") end
      pos = pos + #number
      return math.tointeger(tonumber(number)) or tonumber(number)
    end
  end
  local result = value()
  skip()
  if pos <= #text then fail("trailing text") end
  return result
end

-- What Argo CD's Lua VM offers a script from argocd-cm (util/lua/lua.go, runLua): gopher-lua,
-- a Lua 5.1, with the standard libraries skipped and only the base and table libraries, package
-- and a reduced os opened. There is no string or math library, and strings have no methods; a
-- script that uses them fails here as it would in Argo CD. The os is left out here too: Perimeter's
-- scripts decide from the object alone, never from the clock.
local function sandbox(object)
  return {
    obj = object, _VERSION = "Lua 5.1",
    assert = assert, error = error, getmetatable = getmetatable, ipairs = ipairs, next = next,
    pairs = pairs, pcall = pcall, print = print, rawequal = rawequal, rawget = rawget,
    rawset = rawset, select = select, setmetatable = setmetatable, tonumber = tonumber,
    tostring = tostring, type = type, unpack = table.unpack, xpcall = xpcall,
    table = { concat = table.concat, insert = table.insert, remove = table.remove,
              sort = table.sort },
  }
end

local valid_health = { Healthy = true, Progressing = true, Degraded = true, Suspended = true,
                       Missing = true, Unknown = true }

local function run_health(script, chunk_name, object)
  local env = sandbox(object)
  local chunk, err = load(script, "=" .. chunk_name, "t", env)
  if not chunk then error(chunk_name .. " does not compile: " .. err, 0) end
  -- No methods on strings while the script runs, as in gopher-lua without its string library.
  local string_metatable = getmetatable("")
  debug.setmetatable("", nil)
  local ok, result = pcall(chunk)
  debug.setmetatable("", string_metatable)
  if not ok then return nil, "the script failed: " .. tostring(result) end
  if type(result) ~= "table" then return nil, "the script returned " .. type(result) end
  if not valid_health[result.status] then
    return nil, "the script returned the status " .. tostring(result.status)
  end
  return result
end

local failures, passed = 0, 0
local function fail(what)
  failures = failures + 1
  io.stderr:write("FAIL " .. what .. "\n")
end

local kinds = {
  { kind = "AgentEnvironment", data = "agentenvironment.json" },
  { kind = "McpTunnel", data = "mcptunnel.json" },
}
local here = root .. "/tests/integration/argocd/testdata/"
local scripts = {}
for _, k in ipairs(kinds) do
  local dir = "perimeter.dev_" .. k.kind -- the argocd-cm key's suffix, <group>_<kind>
  local path = "perimeter.dev/" .. k.kind .. "/health.lua"
  local script = read_file(root .. "/deploy/argocd/" .. path)
  scripts[dir] = script
  local cases = decode_json(read_file(here .. k.data), k.data)
  local seen, statuses = {}, {}
  for _, case in ipairs(cases) do
    local name = k.kind .. " / " .. case.name
    if seen[case.name] then fail(name .. ": two samples of this name") end
    seen[case.name] = true
    if case.object.kind ~= k.kind or case.object.apiVersion ~= "perimeter.dev/v1alpha1" then
      fail(name .. ": the sample is not a perimeter.dev/v1alpha1 " .. k.kind)
    end
    local health, err = run_health(script, path, case.object)
    if not health then
      fail(name .. ": " .. err)
    elseif health.status ~= case.health.status or health.message ~= case.health.message then
      fail(string.format("%s:\n  want %s %q\n  got  %s %q", name, case.health.status,
                         case.health.message, health.status, tostring(health.message)))
    else
      statuses[health.status] = true
      passed = passed + 1
    end
  end
  -- Every health the script can give appears among the samples.
  local expected = k.kind == "AgentEnvironment"
                   and { "Healthy", "Progressing", "Degraded", "Suspended", "Unknown" }
                   or { "Healthy", "Progressing", "Degraded", "Unknown" }
  for _, s in ipairs(expected) do
    if not statuses[s] then fail(k.kind .. ": no sample is " .. s) end
  end
  print(string.format("%s: %d samples", k.kind, #cases))
end

-- The argocd-cm snippet carries each script unchanged: read its block scalars back (two spaces
-- before the key, four before each line of the script, YAML's `|` keeping one final newline).
local snippet = read_file(root .. "/deploy/argocd/argocd-cm-snippet.yaml")
local found, current, lines = {}, nil, nil
local function close_block()
  if current then found[current] = table.concat(lines, "\n"):gsub("\n*$", "") .. "\n" end
end
for line in (snippet .. (snippet:sub(-1) == "\n" and "" or "\n")):gmatch("(.-)\n") do
  local key = line:match("^  resource%.customizations%.health%.([%w._-]+): |$")
  if key then
    close_block()
    current, lines = key, {}
  elseif current and (line == "" or line:sub(1, 4) == "    ") then
    lines[#lines + 1] = line:sub(5)
  else
    close_block()
    current = nil
  end
end
close_block()
for dir, script in pairs(scripts) do
  if found[dir] == nil then
    fail("argocd-cm-snippet.yaml has no resource.customizations.health." .. dir)
  elseif found[dir] ~= script then
    fail("argocd-cm-snippet.yaml's " .. dir .. " differs from its health.lua:" ..
         " run deploy/argocd/render-snippet.sh")
  end
end
for dir in pairs(found) do
  if not scripts[dir] then
    fail("argocd-cm-snippet.yaml has " .. dir .. ", which no test covers")
  end
end

-- With a second argument: argocd-cm as kubectl left it after applying the snippet as a merge
-- patch (snippet_kubectl_test.sh). Its data holds each script unchanged and keeps its own keys.
if arg[2] then
  local patched = decode_json(read_file(arg[2]), arg[2])
  local data = patched.data or {}
  local before = failures
  for dir, script in pairs(scripts) do
    local key = "resource.customizations.health." .. dir
    if data[key] ~= script then
      fail("argocd-cm patched by kubectl: " .. key .. " is not its health.lua")
    else
      passed = passed + 1
    end
  end
  if data.url ~= "https://argocd.example.com" then
    fail("argocd-cm patched by kubectl lost its own key url")
  end
  if failures == before then print("argocd-cm patched by kubectl holds the health scripts") end
end

print(string.format("%d checks passed, %d failures", passed, failures))
os.exit(failures == 0 and 0 or 1)
