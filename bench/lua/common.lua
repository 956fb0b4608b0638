-- Shared by the bench's wrk scripts (loaded with dofile from each of them).
--
-- Arguments after `--` on the wrk command line, the same for every script:
--   args[1]  file with one item per line (tokens, usernames, ...)
--   args[2]  value of the Authorization header (HTTP Basic of the client)
--   args[3]  number of wrk threads (to cut the file into one slice per thread)
--   args[4]  extra value for the script (the password, for password.lua)
--
-- setup() numbers the threads (global `id` in each thread's state); done()
-- prints one line `BENCH_RESULT {json}` that the Python side parses.

local common = {}
local threads = {}

function common.setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function common.read_lines(path)
  local items = {}
  for line in io.lines(path) do
    if line ~= "" then
      table.insert(items, line)
    end
  end
  return items
end

-- The id-th of `count` contiguous, disjoint slices of `items`.
function common.slice(items, index, count)
  local first = math.floor(#items * index / count) + 1
  local last = math.floor(#items * (index + 1) / count)
  local part = {}
  for i = first, last do
    table.insert(part, items[i])
  end
  return part
end

-- The position where thread `index` of `count` starts cycling through `items`.
function common.offset(items, index, count)
  return math.floor(#items * index / count)
end

-- The User-Agent of a browser, as a BFF forwards it: the one bench/seed.py
-- gives the seeded sessions, so a rotation rewrites as much as it would.
local USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 " ..
  "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

function common.headers(authorization, content_type)
  wrk.method = "POST"
  wrk.headers["Authorization"] = authorization
  wrk.headers["Content-Type"] = content_type
  wrk.headers["User-Agent"] = USER_AGENT
end

function common.done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + (tonumber(thread:get("wrapped")) or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, ' ..
    '"wrapped": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, wrapped))
end

return common
