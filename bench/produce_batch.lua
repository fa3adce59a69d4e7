-- 100 records of ~100 bytes per request (the same body every time; the
-- server still appends each record).
local parts = {}
for i = 1, 100 do
  parts[i] = string.format('{"key":"k%d","value":{"id":%d,"side":"buy","qty":%d,"note":"abcdefghijklmnopqrstuvwxyz0123456789"}}', i % 64, i, i % 100)
end
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"records":[' .. table.concat(parts, ",") .. ']}'
