-- wrk script: POST /v1/services/{id}/heartbeat, rotating over the ids in $SG_IDS
-- (one uuid per line). The $SG_THREADS wrk threads start evenly spaced over
-- the ids, so each id is beaten once per walk of each thread, and the beats
-- of an id are evenly spread in time. (Threads 7,919 ids apart beat an id
-- twice within seconds, then not for a whole walk: at 100,000 services, a
-- daemon that took 75% of the offered rate left ids unbeaten for 40 s.)
local ids = {}
for line in io.lines(os.getenv("SG_IDS")) do
  ids[#ids + 1] = line
end

local counter = 0
local threads = 0

function setup(thread)
  local spacing = math.floor(#ids / tonumber(os.getenv("SG_THREADS") or "1"))
  thread:set("offset", threads * spacing)
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
