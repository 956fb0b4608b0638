-- POST /refresh: every request presents a distinct live refresh token.
-- Each thread rotates its own disjoint slice of the token file; `wrapped`
-- counts how often a thread ran out (a re-presented token is reuse: an error).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local tokens, index = {}, 0
wrapped = 0

function init(args)
  tokens = common.slice(common.read_lines(args[1]), id, tonumber(args[3]))
  common.headers(args[2], "application/json")
end

function request()
  index = index + 1
  if index > #tokens then
    index, wrapped = 1, wrapped + 1
  end
  return wrk.format(nil, "/refresh", nil, '{"refresh_token": "' .. tokens[index] .. '"}')
end
