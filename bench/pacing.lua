-- Shared by heartbeat.lua and register.lua (each loads it with dofile).
--
-- $SG_RATE: a fixed offered load of that many requests per second in all
-- ($SG_THREADS wrk threads), as wrk2 does: each thread hands out send slots
-- 1000 x threads / rate ms apart on the monotonic clock (LuaJIT's FFI), and
-- a connection ready early waits for its slot. A daemon that falls behind
-- gets no burst to catch up: the slot is never in the past, so the achieved
-- rate shows the shortfall. Latency is then the daemon's at that rate, not
-- the queueing of a closed loop driven to saturation.
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
