-- One ~100-byte JSON record per request, keyed over 64 keys.
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"key":"k%d","value":{"id":%d,"side":"buy","qty":%d,"note":"abcdefghijklmnopqrstuvwxyz0123456789"}}', n % 64, n, n % 100)
  return wrk.format("POST", nil, {["content-type"] = "application/json"}, body)
end
