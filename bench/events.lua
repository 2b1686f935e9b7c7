-- wrk script: Feishu-like signed event POSTs, each body carrying a sequence number and its send time.
--
-- Environment (set by bench/loadgen.py):
--   BENCH_PATH       /hook/<app_id>
--   BENCH_PAD        the "encrypt" value (base64 of random bytes: a 1.2 KB encrypted-looking body)
--   BENCH_RATE       offered events/s for this wrk thread (0 = as fast as the connections allow)
--   BENCH_SIGNED     "1": X-Lark-Signature headers (answered at once); "0": a challenge (waits)
-- Body: {"encrypt":"<pad>","bench":{"s":<seq>,"t":<CLOCK_MONOTONIC ns>}}; bench/subscriber.py reads it.
local ffi = require "ffi"
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec_t")

local function now_ns()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return string.format("%d%09d", tonumber(ts.tv_sec), tonumber(ts.tv_nsec))
end

local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local path = os.getenv("BENCH_PATH") or "/hook/cli_bench"
local pad = os.getenv("BENCH_PAD") or string.rep("A", 1200)
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local signed = (os.getenv("BENCH_SIGNED") or "1") == "1"

local threads = {}
local next_tid = 0

function setup(thread)
    next_tid = next_tid + 1
    thread:set("tid", next_tid)
    table.insert(threads, thread)
end

local counter = 0
local prefix = '{"encrypt":"' .. pad .. '","bench":{"s":'
local headers = { ["Content-Type"] = "application/json; charset=utf-8" }
if signed then
    headers["X-Lark-Request-Timestamp"] = "1700000000"
    headers["X-Lark-Request-Nonce"] = "bench-nonce"
    headers["X-Lark-Signature"] = string.rep("ab", 32)
end

function request()
    counter = counter + 1
    local seq = tid * 1000000000 + counter
    headers["X-Request-Id"] = string.format("bench-%d", seq)
    local body = prefix .. string.format("%d", seq) .. ',"t":' .. now_ns() .. "}}"
    return wrk.format("POST", path, headers, body)
end

-- Pacing: each request takes the next slot of a schedule at `rate`/s shared by all connections of the
-- thread (open loop while enough connections are free). A schedule more than 50 ms behind is reset:
-- the server did not keep up, and the achieved rate shows it.
if rate > 0 then
    local interval = 1000 / rate
    local next_slot = nil
    function delay()
        local now = now_ms()
        if next_slot == nil or next_slot < now - 50 then
            next_slot = now
        end
        next_slot = next_slot + interval
        local wait = next_slot - now
        if wait < 0 then
            return 0
        end
        return wait
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"lat_p50_us":%d,"lat_p99_us":%d}\n',
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99)))
end
