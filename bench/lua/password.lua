-- POST /token grant_type=password: logins of many users (one per line of the
-- file, all with the password in args[4]), each thread from its own start.
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done

local bodies, index = {}, 0
wrapped = 0

function init(args)
  for _, username in ipairs(common.read_lines(args[1])) do
    table.insert(bodies, "grant_type=password&username=" .. username .. "&password=" .. args[4])
  end
  index = common.offset(bodies, id, tonumber(args[3]))
  common.headers(args[2], "application/x-www-form-urlencoded")
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, "/token", nil, bodies[index])
end
