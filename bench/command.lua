-- A command round trip per request: open a new account (a fresh aggregate
-- each time, so every command is applied), waiting for the result.
local n = 0
local thread_id = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
request = function()
  n = n + 1
  local body = string.format('{"aggregate":"acc-%d-%d","name":"open","data":{"owner":"bench"}}', tid or 0, n)
  return wrk.format("POST", nil, {["content-type"] = "application/json"}, body)
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non-200 answers: %d\n", summary.status.status_5xx or 0))
end
