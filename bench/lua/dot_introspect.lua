-- django-oauth-toolkit's introspection: POST /o/introspect/, form-encoded
-- token=, a gateway application in HTTP Basic (bench/peer.py). DOT
-- introspects access tokens only: the file holds users' access tokens, and,
-- as introspect.lua, each thread cycles through all of it from its own start.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local bodies, index = {}, 0
wrapped = 0

function init(args)
  for _, token in ipairs(common.read_lines(args[1])) do
    table.insert(bodies, "token=" .. token .. "&token_type_hint=access_token")
  end
  index = common.offset(bodies, id, tonumber(args[3]))
  common.headers(args[2], "application/x-www-form-urlencoded")
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, "/o/introspect/", nil, bodies[index])
end
