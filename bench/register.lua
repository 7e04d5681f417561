-- wrk script: POST /v1/services {"host": ..., "binary": "nova-compute"}, and
-- count the answers by status (printed at the end as "status <code> <count>").
--
-- New services: each request names a host no request named before, from
-- $SG_PREFIX, the thread's offset and the thread's counter.
-- Restarts ($SG_HOSTS, one host per line): the hosts in the file, rotated as
-- heartbeat.lua rotates ids, each thread from its own offset; the daemon
-- finds each one registered already and answers 200.
local prefix = os.getenv("SG_PREFIX") or "reg"
local hosts_file = os.getenv("SG_HOSTS") or ""
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
  local body = '{"host": "' .. next_host() .. '", "binary": "nova-compute"}'
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

-- $SG_RATE: a fixed offered load, paced as heartbeat.lua paces it (wrk2's
-- send slots on the monotonic clock, $SG_THREADS threads sharing the rate).
local rate = tonumber(os.getenv("SG_RATE") or "")
if rate then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } sg_timespec;
    int clock_gettime(int clock_id, sg_timespec *tp);
  ]]
  local CLOCK_MONOTONIC = 1
  local ts = ffi.new("sg_timespec")
  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 * tonumber(os.getenv("SG_THREADS")) / rate
  local due = 0
  function delay()
    local now = now_ms()
    local slot = math.max(due, now)
    due = slot + interval
    return slot - now
  end
end
