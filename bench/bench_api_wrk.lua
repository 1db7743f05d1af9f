-- wrk script for bench/bench_api.py's closed loop (issue 14): one connection per wrk
-- thread, each a seat of the benchmark's clients replaying the requests the benchmark
-- wrote for it (its user's Basic credentials and the mix of questions of
-- bench_api.question), so the load generator costs little CPU.
--
-- A seat's requests are in the file BENCH_API_REQUESTS.<seat> (the prefix in the
-- environment variable BENCH_API_REQUESTS), one request a line: kind ("q" a question,
-- "n" the next page of the seat's previous answer), Authorization header value, path
-- with its query string; tab-separated. A "n" line whose previous answer had no
-- next_cursor is passed over.

local seats = 0
seat = nil -- set in each thread by setup()
local prefix = os.getenv("BENCH_API_REQUESTS")

function setup(thread)
   thread:set("seat", seats)
   seats = seats + 1
end

local mine = {}
local at = 0
local previous = nil -- the path of the seat's previous question
local cursor = nil -- the next_cursor of its previous answer

function init(args)
   local file = prefix .. "." .. seat
   for line in io.lines(file) do
      local kind, auth, path = line:match("^(%a)\t([^\t]+)\t(.+)$")
      mine[#mine + 1] = { kind = kind, auth = auth, path = path }
   end
   if #mine == 0 then
      error("no requests in " .. file)
   end
end

local function escape(value)
   return (value:gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", string.byte(c))
   end))
end

function request()
   while true do
      at = at % #mine + 1
      local item = mine[at]
      if item.kind == "q" then
         previous = item.path
         return wrk.format("GET", item.path, { Authorization = item.auth })
      elseif cursor ~= nil and previous ~= nil then
         return wrk.format(
            "GET",
            previous .. "&cursor=" .. escape(cursor),
            { Authorization = item.auth }
         )
      end
   end
end

local CURSOR_KEY = '"next_cursor":"'

function response(status, headers, body)
   cursor = nil
   -- only when this seat's next request is a next page: most answers are not read
   if status == 200 and mine[at % #mine + 1].kind == "n" then
      local _, key_end = body:find(CURSOR_KEY, 1, true)
      if key_end ~= nil then
         cursor = body:sub(key_end + 1, body:find('"', key_end + 1, true) - 1)
      end
   end
end

function done(summary, latency, requests)
   io.write(string.format(
      'BENCH_API_WRK {"requests": %d, "duration_us": %d, "status_errors": %d, '
         .. '"socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
      summary.requests,
      summary.duration,
      summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write
         + summary.errors.timeout,
      latency:percentile(50),
      latency:percentile(99),
      latency.max
   ))
end
