-- POST /token grant_type=client_credentials: a service gets an access token.
-- (args[1] is not used: every request is the same.)
local common = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "common.lua")
setup, done = common.setup, common.done
wrapped = 0

function init(args)
  common.headers(args[2], "application/x-www-form-urlencoded")
  wrk.body = "grant_type=client_credentials"
  wrk.path = "/token"
end
