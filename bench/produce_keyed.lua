-- One ~100-byte JSON record per request, keyed over 64 keys, each request
-- with an Idempotency-Key of its own (thread number and request number).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"key":"k%d","value":{"id":%d,"side":"buy","qty":%d,"note":"abcdefghijklmnopqrstuvwxyz0123456789"}}', n % 64, n, n % 100)
  local headers = {["content-type"] = "application/json", ["idempotency-key"] = string.format("t%d-%d", tid, n)}
  return wrk.format("POST", nil, headers, body)
end
