-- wrk script: POSTs the JSON bodies of $BENCH_BODIES (one body per line) to $BENCH_PATH, rotating
-- through them, and prints one machine-readable line with the latency distribution at the end.
-- Requests are formatted once in init(), so the per-request Lua cost is a table lookup.

local bodies_file = os.getenv("BENCH_BODIES")
local target = os.getenv("BENCH_PATH") or "/predict"
local requests = {}
local count = 0
local index = 0

function init(args)
  local handle = assert(io.open(bodies_file, "r"), "cannot open BENCH_BODIES=" .. tostring(bodies_file))
  for line in handle:lines() do
    if #line > 0 then
      count = count + 1
      requests[count] = wrk.format("POST", target, {["Content-Type"] = "application/json"}, line)
    end
  end
  handle:close()
  assert(count > 0, "no request bodies in " .. bodies_file)
end

function request()
  index = index % count + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end
