-- Webhook handler: POST /hook/<app_id> or /org_<name>/<app_id> -> one envelope on the channel.
--
-- Envelope (docs/protocol.md, src/wslarkbot/wire.py):
--   {"headers": {<request headers, lower-cased>, "x-app-id", "x-org-id", "x-request-id"},
--    "body": <the JSON body, byte for byte>, "raw_body": "<the same body as a JSON string>"}
-- A request without X-Lark-Signature (url_verification) then waits for the bot's reply, which the
-- bot posts to /sub/<request_id>; signed requests (events, card callbacks) are answered at once.
local cjson = require "cjson"

local orgid = ngx.var.orgid
local appid = ngx.var.appid

-- Credentials and hop-by-hop headers are never forwarded (same list as wire._DROPPED_HEADERS).
local DROPPED = {
    ["authorization"] = true, ["proxy-authorization"] = true, ["cookie"] = true,
    ["connection"] = true, ["keep-alive"] = true, ["transfer-encoding"] = true,
    ["upgrade"] = true, ["te"] = true, ["trailer"] = true,
}

local function fail(status, reason)
    ngx.status = status
    ngx.say(cjson.encode({ error = reason }))
    return ngx.exit(status)
end

ngx.req.read_body()
local raw = ngx.req.get_body_data()
if raw == nil then
    -- client_body_buffer_size = client_max_body_size keeps bodies in memory; read a file anyway.
    local path = ngx.req.get_body_file()
    if path ~= nil then
        local f = io.open(path, "rb")
        if f ~= nil then
            raw = f:read("*a")
            f:close()
        end
    end
end

local body_json, raw_json
if raw == nil or raw == "" then
    -- As the original: a request without a body carries its query arguments as the body.
    body_json = cjson.encode(ngx.req.get_uri_args())
else
    -- FIX: non-JSON or non-UTF-8 bodies are a 400, not a Lua 500 (or a frame clients reject).
    local ok = pcall(cjson.decode, raw)
    if not ok then
        return fail(ngx.HTTP_BAD_REQUEST, "body is not JSON")
    end
    local _, _, err = ngx.re.find(raw, "^", "uo")  -- PCRE checks UTF-8 before matching
    if err ~= nil then
        return fail(ngx.HTTP_BAD_REQUEST, "body is not UTF-8")
    end
    -- The body is embedded as it came (no decode/encode round trip: numbers, [] and key order
    -- survive), and again as a string so signatures can be checked on the exact bytes.
    body_json = raw
    raw_json = cjson.encode(raw)
end

local headers = {}
for name, value in pairs(ngx.req.get_headers(100)) do
    if not DROPPED[name] then
        if type(value) == "table" then
            value = table.concat(value, ", ")
        end
        headers[name] = value
    end
end

-- FIX: request ids are matched exactly; a missing or unusable one is replaced by nginx's own.
local request_id = headers["x-request-id"] or ngx.var.arg_request_id
if request_id == nil or not ngx.re.find(request_id, "^[A-Za-z0-9_.:-]{1,128}$", "jo") then
    request_id = ngx.var.request_id
end
headers["x-app-id"] = appid
headers["x-org-id"] = orgid
headers["x-request-id"] = request_id

local envelope = '{"headers":' .. cjson.encode(headers) .. ',"body":' .. body_json
if raw_json ~= nil then
    envelope = envelope .. ',"raw_body":' .. raw_json
end
envelope = envelope .. "}"

local channel = (orgid == "hook") and appid or orgid
local res = ngx.location.capture("/_pub/" .. channel, { method = ngx.HTTP_POST, body = envelope })
if res.status == ngx.HTTP_ACCEPTED then
    -- FIX: nchan says 202 when no subscriber was there: the event was dropped. Do not answer 200,
    -- so Feishu retries later instead of believing it was delivered.
    ngx.header["Retry-After"] = "15"
    return fail(ngx.HTTP_SERVICE_UNAVAILABLE, "no subscriber")
elseif res.status ~= ngx.HTTP_CREATED then
    ngx.log(ngx.ERR, "publishing to ", channel, " failed with status ", res.status)
    return fail(ngx.HTTP_BAD_GATEWAY, "publish failed")
end

if headers["x-lark-signature"] == nil then
    -- Challenge: answer with whatever the bot posts to /sub/<request_id> (bounded wait, then 408).
    ngx.req.discard_body()
    ngx.req.set_method(ngx.HTTP_GET)
    return ngx.exec("/_wait/" .. request_id)
end
