-- POST /refresh along rotation chains, as real clients rotate (the chain load,
-- and the --scale loads): each request presents the refresh token that an
-- earlier answer returned. wrk's request() is per thread, not per connection,
-- so each thread keeps a queue of ready tokens: it starts with its own slice
-- of live tokens (more families than the thread has connections), response()
-- pushes each answer's new refresh token to the end, request() pops the
-- oldest. A token is popped once, so none is presented twice; a non-200
-- answer is an error (wrk counts it) and its family leaves the queue.
-- `wrapped` counts requests made while the queue was empty (they present no
-- live token; there should be none: with one request in flight per connection,
-- families - connections tokens are always waiting).
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
