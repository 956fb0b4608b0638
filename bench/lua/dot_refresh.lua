-- django-oauth-toolkit's refresh: POST /o/token/, form-encoded
-- grant_type=refresh_token, the client in HTTP Basic (bench/peer.py). As
-- refresh.lua: each thread presents its own slice of distinct live tokens
-- once; `wrapped` counts a thread running out (a second presentation is
-- reuse: DOT revokes the family and answers 400).
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local tokens, index = {}, 0
wrapped = 0

function init(args)
  tokens = common.slice(common.read_lines(args[1]), id, tonumber(args[3]))
  common.headers(args[2], "application/x-www-form-urlencoded")
end

function request()
  index = index + 1
  if index > #tokens then
    index, wrapped = 1, wrapped + 1
  end
  return wrk.format(nil, "/o/token/", nil, "grant_type=refresh_token&refresh_token=" .. tokens[index])
end
