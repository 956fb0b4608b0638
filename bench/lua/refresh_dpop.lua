-- POST /refresh of a DPoP-bound family: each line of the file is a distinct
-- live refresh token and a proof made for it (RFC 9449: jti unique, htu this
-- server's /refresh, iat when the file was written), separated by a space.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local items, index = {}, 0
wrapped = 0

function init(args)
  items = common.slice(common.read_lines(args[1]), id, tonumber(args[3]))
  common.headers(args[2], "application/json")
end

function request()
  index = index + 1
  if index > #items then
    index, wrapped = 1, wrapped + 1
  end
  local token, proof = items[index]:match("^(%S+) (%S+)$")
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["DPoP"] = proof
  return wrk.format(nil, "/refresh", headers, '{"refresh_token": "' .. token .. '"}')
end
