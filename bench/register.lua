-- wrk script: POST /v1/services {"host": ..., "binary": $SG_BINARY or "nova-compute"}, and
-- count the answers by status (printed at the end as "status <code> <count>").
--
-- New services: each request names a host no request named before, from
-- $SG_PREFIX, the thread's offset and the thread's counter.
-- Restarts ($SG_HOSTS, one host per line): the hosts in the file, rotated as
-- heartbeat.lua rotates ids, each thread from its own offset; the daemon
-- finds each one registered already and answers 200.
local prefix = os.getenv("SG_PREFIX") or "reg"
local hosts_file = os.getenv("SG_HOSTS") or ""
local binary = os.getenv("SG_BINARY") or "nova-compute"
local hosts = {}
if hosts_file ~= "" then
  for line in io.lines(hosts_file) do
    hosts[#hosts + 1] = line
  end
end

local threads = {}
local counter = 0
statuses = {} -- a global: done() reads each thread's with thread:get()

function setup(thread)
  thread:set("index", #threads)
  threads[#threads + 1] = thread
end

local function next_host()
  counter = counter + 1
  if #hosts > 0 then
    return hosts[((index or 0) * 7919 + counter) % #hosts + 1]
  end
  return string.format("%s-%d-%d.example.org", prefix, index or 0, counter)
end

function request()
  local body = '{"host": "' .. next_host() .. '", "binary": "' .. binary .. '"}'
  return wrk.format("POST", "/v1/services", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d %d\n", status, count))
  end
end

-- $SG_RATE: a fixed offered load, paced by pacing.lua (wrk2's send slots).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "pacing.lua")
