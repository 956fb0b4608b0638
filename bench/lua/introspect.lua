-- POST /introspect: a gateway asks about a mix of access tokens (JWTs) and
-- refresh tokens, cycling through the whole file, each thread from its own
-- starting point; the hint names the token's kind, as a gateway would.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local bodies, index = {}, 0
wrapped = 0

function init(args)
  for _, token in ipairs(common.read_lines(args[1])) do
    local hint = select(2, token:gsub("%.", "")) == 2 and "access_token" or "refresh_token"
    table.insert(bodies, "token=" .. token .. "&token_type_hint=" .. hint)
  end
  index = common.offset(bodies, id, tonumber(args[3]))
  common.headers(args[2], "application/x-www-form-urlencoded")
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, "/introspect", nil, bodies[index])
end
