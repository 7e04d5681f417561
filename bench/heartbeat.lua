-- wrk script: POST /v1/services/{id}/heartbeat, rotating over the ids in $SG_IDS
-- (one uuid per line). Each wrk thread starts at its own offset, so the
-- threads spread over the whole fleet instead of beating the same services.
local ids = {}
for line in io.lines(os.getenv("SG_IDS")) do
  ids[#ids + 1] = line
end

local counter = 0
local threads = 0

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local id = ids[((offset or 0) + counter) % #ids + 1]
  return wrk.format("POST", "/v1/services/" .. id .. "/heartbeat")
end

-- $SG_RATE: a fixed offered load, paced by pacing.lua (wrk2's send slots).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "pacing.lua")
