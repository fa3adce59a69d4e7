-- A command round trip per request: open a new account (a fresh aggregate
-- each time, so every command is applied). wrk reports non-2xx answers.
local n = 0
local run = os.getenv("WRK_RUN") or "0"
local thread_id = 0
setup = function(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
request = function()
  n = n + 1
  local body = string.format('{"aggregate":"acc-%s-%d-%d","name":"open","data":{"owner":"bench"}}', run, tid or 0, n)
  return wrk.format("POST", nil, {["content-type"] = "application/json"}, body)
end
