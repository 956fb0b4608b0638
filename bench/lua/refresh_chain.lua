-- POST /refresh along rotation chains, for the --scale loads: each thread starts
-- with its own slice of live tokens, and every answer's new refresh token goes
-- back to the end of the thread's queue. A fixed set of families is rotated
-- for as long as the load lasts, each request presenting a distinct live
-- token, so the store keeps its size in families. `wrapped` counts requests
-- made while the queue was empty (they present no live token; there should be
-- none: the queue starts with more tokens than the thread has connections).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local queue, first, last = {}, 1, 0
wrapped = 0

local function push(token)
  last = last + 1
  queue[last] = token
end

function init(args)
  for _, token in ipairs(common.slice(common.read_lines(args[1]), id, tonumber(args[3]))) do
    push(token)
  end
  common.headers(args[2], "application/json")
end

function request()
  local token = "none-left"
  if first <= last then
    token, queue[first], first = queue[first], nil, first + 1
  else
    wrapped = wrapped + 1
  end
  return wrk.format(nil, "/refresh", nil, '{"refresh_token": "' .. token .. '"}')
end

function response(status, headers, body)
  local token = status == 200 and body:match('"refresh_token":"([^"]+)"')
  if token then
    push(token)
  end
end
