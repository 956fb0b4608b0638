-- The framework ceiling: the same request shape as refresh.lua (JSON body with
-- a token, HTTP Basic) against the minimal app's one route, POST /.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local tokens, index = {}, 0
wrapped = 0

function init(args)
  tokens = common.read_lines(args[1])
  index = common.offset(tokens, id, tonumber(args[3]))
  common.headers(args[2], "application/json")
end

function request()
  index = index % #tokens + 1
  return wrk.format(nil, "/", nil, '{"refresh_token": "' .. tokens[index] .. '"}')
end
