-- wrk.lua - the read and put workloads of bench/daemon/run.sh for wrk.
--
-- Usage: BENCH_MODE=MODE BENCH_KEY=KEY wrk -s wrk.lua URL
--   syncd-get    GET /v1/collections/c/docs/KEY
--   etcd-range   POST /v3/kv/range of KEY (linearizable, etcd's default)
--   etcd-serial  the same with "serializable": true (no raft round)
--   syncd-put    PUT of the 1 KB document, create-or-replace
--   etcd-put     POST /v3/kv/put of the same document
--   syncd-get-random, etcd-range-random, etcd-serial-random
--                the reads above, each of a key chosen uniformly at random
--                among KEY000000 .. KEY(N-1) (N = BENCH_KEYS, default
--                100000; bench_daemon seed-many writes them); each thread
--                builds its N requests up front and seeds its own random
--                generator
-- Puts cycle through 64 bodies whose counter differs, so every put changes
-- the stored value. done() prints one line of key=value pairs. The mode
-- comes from the environment, not from init()'s args, because wrk decides
-- whether request() exists before it calls init(): reads stay static
-- requests, which cost wrk the least CPU.

local b64chars =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for k = 1, 4 do
      local idx = math.floor(n / 64 ^ (4 - k)) % 64
      quad[k] = b64chars:sub(idx + 1, idx + 1)
    end
    if not b then quad[3] = "=" end
    if not c then quad[4] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

-- The same 1 KB document as bench_daemon.c's doc_new().
local function doc(n)
  local head = string.format('{"n":%d,"kind":"volume","name":"bench-doc",'
    .. '"labels":{"tier":"gold","owner":"team-storage"}', n)
  local fill = 1024 - #head - #',"pad":""}'
  return head .. ',"pad":"' .. string.rep("x", fill) .. '"}'
end

local mode, key = os.getenv("BENCH_MODE"), os.getenv("BENCH_KEY")
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "100000")
local random = mode == "syncd-get-random" or mode == "etcd-range-random"
  or mode == "etcd-serial-random"
local requests = {}
local next_request = 1
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  if random then
    math.randomseed(thread_number or 1)
    for i = 1, nkeys do
      local k = string.format("%s%06d", key, i - 1)
      if mode == "syncd-get-random" then
        requests[i] = wrk.format("GET", "/v1/collections/c/docs/" .. k)
      else
        requests[i] = wrk.format("POST", "/v3/kv/range", nil,
          '{"key":"' .. b64(k) .. '"'
          .. (mode == "etcd-serial-random" and ',"serializable":true}' or "}"))
      end
    end
  elseif mode == "syncd-get" then
    wrk.method = "GET"
    wrk.path = "/v1/collections/c/docs/" .. key
  elseif mode == "etcd-range" or mode == "etcd-serial" then
    wrk.method = "POST"
    wrk.path = "/v3/kv/range"
    wrk.body = '{"key":"' .. b64(key) .. '"'
      .. (mode == "etcd-serial" and ',"serializable":true}' or "}")
  elseif mode == "syncd-put" then
    local headers = { ["Content-Type"] = "application/json" }
    for i = 1, 64 do
      requests[i] = wrk.format("PUT", "/v1/collections/c/docs/" .. key,
        headers, doc(i))
    end
  elseif mode == "etcd-put" then
    for i = 1, 64 do
      requests[i] = wrk.format("POST", "/v3/kv/put", nil,
        '{"key":"' .. b64(key) .. '","value":"' .. b64(doc(i)) .. '"}')
    end
  else
    error("unknown mode " .. tostring(mode))
  end
end

if random then
  function request()
    return requests[math.random(nkeys)]
  end
elseif mode == "syncd-put" or mode == "etcd-put" then
  function request()
    local r = requests[next_request]
    next_request = next_request % #requests + 1
    return r
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "ops=%d secs=%.2f per_sec=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
