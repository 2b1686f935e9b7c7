-- wrk script: the callers of the challenge round trip. Closed loop: each connection sends its next
-- url_verification POST when the previous answer arrived (no delay(), no rate limit); run with -t1.
--
-- Environment (set by bench/loadgen.py, ChallengeWrk):
--   BENCH_PATH   /hook/<app_id>
--   BENCH_RUN    a tag unique to this run (letters, digits, '-'): challenges and request ids of one run
--                never repeat those of another run against the same server
-- Request: no X-Lark-Signature, so the relay waits for the bot's answer;
--   X-Request-Id: chal-<run>-<thread>-<n>
--   body: {"challenge":"c-<run>-<thread>-<n>","token":"bench","type":"url_verification"}
-- Answer: counted good only if the status is 200 and the body's challenge is one this thread issued and
-- that is still unanswered (it is then struck off); anything else is bad. wrk measures the latency.
-- "outstanding": issued and not answered when wrk stopped; at most the connections' in-flight calls.
-- done() prints one line: BENCH_RESULT {"ok":..,"bad":..,"outstanding":..,"requests":..,
--   "duration_us":..,<wrk's error counters>,"p50":..,"p90":..,"p99":..,"p99.9":..,"max":..} (ms).

local path = os.getenv("BENCH_PATH") or "/hook/cli_challenge"
local run = os.getenv("BENCH_RUN") or "0"

local threads = {}
local next_tid = 0

function setup(thread)
    next_tid = next_tid + 1
    thread:set("tid", next_tid)
    table.insert(threads, thread)
end

-- Per thread (each wrk thread has its own Lua state; these are read back in done()).
tid = 0
ok = 0
bad = 0
outstanding_n = 0
-- wrk calls request() once more in the first thread's state before any connection opens (to see
-- whether the request can be pipelined): that challenge is never sent. So the first challenge of
-- each thread is tracked on its own and, if it was never answered, not counted as outstanding.
first_open = 0
local first = nil
local outstanding = {}
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local prefix = nil

function init(args)
    prefix = run .. "-" .. tid .. "-"
end

function request()
    counter = counter + 1
    local id = prefix .. counter
    local challenge = "c-" .. id
    outstanding[challenge] = true
    outstanding_n = outstanding_n + 1
    if counter == 1 then
        first, first_open = challenge, 1
    end
    headers["X-Request-Id"] = "chal-" .. id
    return wrk.format(
        "POST", path, headers,
        '{"challenge":"' .. challenge .. '","token":"bench","type":"url_verification"}'
    )
end

function response(status, headers, body)
    local challenge = body and body:match('"challenge"%s*:%s*"([^"]*)"')
    if status == 200 and challenge ~= nil and outstanding[challenge] then
        outstanding[challenge] = nil
        outstanding_n = outstanding_n - 1
        ok = ok + 1
        if challenge == first then
            first_open = 0
        end
    else
        bad = bad + 1
        if bad <= 3 then
            io.stderr:write(string.format("challenge.lua: bad answer %d: %s\n", status, tostring(body):sub(1, 200)))
        end
    end
end

function done(summary, latency, requests)
    local n_ok, n_bad, n_out = 0, 0, 0
    for _, thread in ipairs(threads) do
        n_ok = n_ok + thread:get("ok")
        n_bad = n_bad + thread:get("bad")
        n_out = n_out + thread:get("outstanding_n")
        if thread:get("tid") == 1 then
            n_out = n_out - thread:get("first_open")
        end
    end
    local e = summary.errors
    local function ms(p)
        return latency:percentile(p) / 1000
    end
    io.write(string.format(
        'BENCH_RESULT {"ok":%d,"bad":%d,"outstanding":%d,"requests":%d,"duration_us":%d,'
            .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
            .. '"p50":%.3f,"p90":%.3f,"p99":%.3f,"p99.9":%.3f,"max":%.3f}\n',
        n_ok, n_bad, n_out, summary.requests, summary.duration,
        e.connect, e.read, e.write, e.status, e.timeout,
        ms(50), ms(90), ms(99), ms(99.9), latency.max / 1000))
end
