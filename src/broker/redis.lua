-- agentcast's cluster state in Redis. One script, loaded once per connection and called
-- with EVALSHA; ARGV[1] names the operation, ARGV[2] is the key prefix, ARGV[3] this
-- Redis's own tag (see L). Every operation is
-- one round trip and atomic: a publish checks idempotency and the run lifecycle for the
-- whole batch, then numbers, retains and publishes each event, or does nothing at all.
-- With several shards (one Redis each) a user's keys all live on the user's shard; every
-- shard holds the heartbeats of every node. In a Redis Cluster the same holds per master:
-- USER is then "{TAG}USER" (its slot), and each master's own keys sit under its tag L (the
-- script is loaded there with flags=allow-cross-slot-keys: both slots are on that master).
-- A run lives under the L of its user's shard or master.
--
-- Keys (P = prefix; a user or run id is a label: no control characters):
--   P u:USER   hash   seq (newest), epoch (names the stream; new when it is created), x (when
--                    a publish last pushed out the expiries, ms); kept for the seq ttl,
--                    longer than the history, so a seq is never reused
--   P h:USER   list   envelopes of seq (seq - LLEN + 1) .. seq, oldest first (history ttl)
--   P k:USER   zset   the user's connections in the cluster: CONNID@NODE by creation
--   P c:USER   channel  "E EPOCH SEQ ENVELOPE" | "B EPOCH FIRSTSEQ LEN,LEN,... ENVELOPES"
--                       (several, concatenated) | "D CONNID ENVELOPE" | "X CONNID@NODE"
--                       (evicted: over the cap) | "K CONNID@NODE" (an operator's disconnect)
--   P L n:NODE string a node's heartbeat (expires when the node stops)
--   P i:USER\nKEY  string  the seq an idempotency key first got
--   P L r:RUN  hash   user, thread, state (open/closed), closed_by, started, updated,
--                    last_seq, events
--   P L t:RUN  set    tool_call_ids executing
--   P L runs   zset   open runs by the time of their last event (ms)
--   P L cseq   string connection creation counter
local rcall = redis.call -- a local: cheaper than a global lookup per call
local op = ARGV[1]
local P = ARGV[2]
-- Keys of this Redis rather than of a user (heartbeats, open runs, the connection counter):
-- under P .. L. L is '' on a plain Redis or shard; in a Redis Cluster it is a hash tag of a
-- slot this master owns, as a user's keys carry the user's tag ({TAG}USER).
local L = ARGV[3]
local PL = P .. L
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Numbers go to redis.call as strings: Lua would format each number with "%.17g".
local snow = string.format('%d', now)

local function ukey(u) return P .. 'u:' .. u end
local function hkey(u) return P .. 'h:' .. u end
local function kkey(u) return P .. 'k:' .. u end
local function chan(u) return P .. 'c:' .. u end
local function rkey(r) return PL .. 'r:' .. r end
local function tkey(r) return PL .. 't:' .. r end

-- Node liveness, looked up once per node per call.
local alive = {}

-- The user's registered connections whose node is alive; drops the others.
local function live_conns(u)
    local k = kkey(u)
    local ms = rcall('ZRANGE', k, 0, -1)
    local live = {}
    for _, m in ipairs(ms) do
        local node = string.sub(m, 18)
        local a = alive[node]
        if a == nil then
            a = string.byte(m, 17) == 64 and rcall('EXISTS', PL .. 'n:' .. node) == 1
            alive[node] = a
        end
        if a then
            live[#live + 1] = m
        else
            rcall('ZREM', k, m)
        end
    end
    return live
end

-- How many of the user's registered connections are on live nodes; drops the others.
local function live_count(u)
    local k = kkey(u)
    local ms = rcall('ZRANGE', k, 0, -1)
    local n = 0
    for i = 1, #ms do
        local m = ms[i]
        local node = string.sub(m, 18)
        local a = alive[node]
        if a == nil then
            a = string.byte(m, 17) == 64 and rcall('EXISTS', PL .. 'n:' .. node) == 1
            alive[node] = a
        end
        if a then
            n = n + 1
        else
            rcall('ZREM', k, m)
        end
    end
    return n
end

-- The user's stream (newest seq, epoch), created with epoch `ep` when missing.
local function stream(u, ep)
    local h = rcall('HMGET', ukey(u), 'seq', 'epoch')
    if not h[2] then
        rcall('HSET', ukey(u), 'seq', 0, 'epoch', ep)
        rcall('DEL', hkey(u)) -- retained events of an older stream
        return 0, ep
    end
    return tonumber(h[1]), h[2]
end

if op == 'pub' or op == 'chk' then
    -- ARGV: 3 history size, 4 history ttl ms, 5 idempotency ms, 6 epoch for new streams,
    -- 7 run ttl ms, 8 count, 9 seq ttl ms, then per event 4 fields: user, envelope head,
    -- envelope tail, extra. `extra` is "" for a plain event, else 7 length-prefixed values
    -- ("LEN:VALUE"): lifecycle op, run, thread, tool_call_id, idempotency key, direct
    -- connection id, "1" for a timeout.
    -- 'chk' only decides (a batch across shards is checked on every shard first); 'pub'
    -- decides again and applies. Writes happen once per user and once per run per call, not
    -- per event: one RPUSH, one HSET, one PUBLISH (all of the user's envelopes) per user;
    -- the expiries of the user's keys are pushed out only every 1/16 of their ttl (the
    -- stream's field "x" says when last), a little past the ttl so that they never expire
    -- sooner than the ttl after the newest event.
    local hsize, ttl, iwin, ep, rttl = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8]
    local n, sttl = tonumber(ARGV[9]), tonumber(ARGV[10])
    local httl = tonumber(ttl)
    local slack = math.floor(httl / 16)
    local B, F = 10, 4
    local EMPTY = { 'other', '', '', '', '', '', '0' }
    local ex = {}
    local function extra(i)
        local e = ex[i]
        if e == nil then
            local s = ARGV[B + (i - 1) * F + 4]
            if s == '' then
                e = EMPTY
            else
                e = {}
                local pos = 1
                for k = 1, 7 do
                    local c = string.find(s, ':', pos, true)
                    local len = tonumber(string.sub(s, pos, c - 1))
                    e[k] = string.sub(s, c + 1, c + len)
                    pos = c + len + 1
                end
            end
            ex[i] = e
        end
        return e
    end

    -- Pass 1: decide, writing nothing.
    local runs, dup, seen = {}, {}, {}
    local function run(id)
        local r = runs[id]
        if r == nil then
            local h = rcall('HMGET', rkey(id), 'state', 'user')
            r = { state = h[1] or 'none', user = h[2], tools = {} }
            if h[1] == 'open' then
                for _, tc in ipairs(rcall('SMEMBERS', tkey(id))) do r.tools[tc] = true end
            end
            runs[id] = r
        end
        return r
    end
    for i = 1, n do
        local e = extra(i)
        if e ~= EMPTY then
            local user = ARGV[B + (i - 1) * F + 1]
            local kind, rid, tool, ikey, direct = e[1], e[2], e[4], e[5], e[6]
            if ikey ~= '' and direct == '' then
                local k = P .. 'i:' .. user .. '\n' .. ikey
                if seen[k] then
                    dup[i] = { idx = seen[k] }
                else
                    local s = rcall('GET', k)
                    if s then dup[i] = { seq = s } else seen[k] = i end
                end
            end
            if direct ~= '' then
                local found = false
                for _, m in ipairs(live_conns(user)) do
                    if string.sub(m, 1, #direct + 1) == direct .. '@' then found = true end
                end
                if not found then return { 'E', i - 1, 'connection_id: not open for this user', 404 } end
            elseif not dup[i] and rid ~= '' then
                local r = run(rid)
                local why
                if r.state ~= 'none' and r.user ~= user then
                    why = 'run_id: belongs to another user'
                elseif kind == 'started' then
                    if r.state == 'open' then why = 'run_id: run already open'
                    elseif r.state == 'closed' then why = 'run_id: run closed'
                    else r.state, r.user, r.tools = 'open', user, {} end
                elseif r.state == 'closed' then why = 'run_id: run closed'
                elseif r.state ~= 'open' then why = 'run_id: run not open'
                elseif kind == 'tool_executing' then
                    if r.tools[tool] then why = 'data.tool_call_id: already executing in this run'
                    else r.tools[tool] = true end
                elseif kind == 'tool_completed' then
                    if not r.tools[tool] then why = 'data.tool_call_id: not executing in this run'
                    else r.tools[tool] = nil end
                elseif kind == 'completed' or kind == 'error' then
                    r.state = 'closed'
                end
                if why then return { 'E', i - 1, why, 409 } end
            end
        end
    end
    if op == 'chk' then return { 'OK' } end

    -- Pass 2: number the events. Reply: "OK", then seq, delivered, duplicate (0/1) per event.
    local out, seqs, users, order, touched, tord = { 'OK' }, {}, {}, {}, {}, {}
    for i = 1, n do
        local b = B + (i - 1) * F
        local user, e = ARGV[b + 1], ex[i]
        local d = dup[i]
        if d then
            local s = d.seq or seqs[d.idx]
            seqs[i] = s
            out[#out + 1], out[#out + 2], out[#out + 3] = tonumber(s), 0, 1
        elseif e[6] ~= '' then
            rcall('PUBLISH', chan(user), 'D ' .. e[6] .. ' ' .. ARGV[b + 2] .. ARGV[b + 3])
            out[#out + 1], out[#out + 2], out[#out + 3] = 0, 1, 0
        else
            local st = users[user]
            if not st then
                -- one table per user, every field set at once (no rehash)
                local uk = ukey(user)
                local h = rcall('HMGET', uk, 'seq', 'epoch', 'x')
                local s0, new = tonumber(h[1]) or 0, not h[2]
                if new then rcall('DEL', hkey(user)) end -- retained events of an older stream
                st = { seq = s0, first = s0 + 1, epoch = h[2] or ep, x = tonumber(h[3]) or 0,
                    new = new, uk = uk, envs = {}, live = live_count(user), sseq = '' }
                users[user] = st
                order[#order + 1] = user
            end
            st.seq = st.seq + 1
            local sseq = string.format('%d', st.seq)
            st.sseq = sseq
            local envs = st.envs
            envs[#envs + 1] = ARGV[b + 2] .. sseq .. ARGV[b + 3]
            seqs[i] = sseq
            if e ~= EMPTY then
                local rid = e[2]
                if rid ~= '' then
                    local kind, w = e[1], touched[rid]
                    if not w then
                        w = { count = 0 }
                        touched[rid] = w
                        tord[#tord + 1] = rid
                    end
                    w.count, w.last = w.count + 1, sseq
                    if kind == 'started' then
                        w.started, w.count, w.user, w.thread, w.tools = true, 1, user, e[3], true
                    elseif kind == 'tool_executing' or kind == 'tool_completed' then
                        w.tools = true
                    elseif kind == 'completed' or kind == 'error' then
                        w.by = 'agent_' .. kind
                        if e[7] == '1' then w.by = 'timeout' end
                    end
                end
                if e[5] ~= '' then
                    rcall('SET', P .. 'i:' .. user .. '\n' .. e[5], sseq, 'PX', iwin)
                end
            end
            out[#out + 1], out[#out + 2], out[#out + 3] = st.seq, st.live, 0
        end
    end

    -- Apply, once per run and once per user.
    for _, rid in ipairs(tord) do
        local w, r, k, tk = touched[rid], runs[rid], rkey(rid), tkey(rid)
        if w.started then
            rcall('HSET', k, 'user', w.user, 'thread', w.thread, 'state', 'open',
                'started', snow, 'events', string.format('%d', w.count), 'closed_by', '',
                'updated', snow, 'last_seq', w.last)
        else
            rcall('HSET', k, 'updated', snow, 'last_seq', w.last)
            rcall('HINCRBY', k, 'events', string.format('%d', w.count))
        end
        if r.state == 'closed' then
            rcall('HSET', k, 'state', 'closed', 'closed_by', w.by)
            rcall('DEL', tk)
            rcall('ZREM', PL .. 'runs', rid)
            rcall('PEXPIRE', k, ttl)
        else
            if w.tools then
                rcall('DEL', tk)
                local tl = {}
                for tc in pairs(r.tools) do tl[#tl + 1] = tc end
                if #tl > 0 then rcall('SADD', tk, unpack(tl)) end
            end
            rcall('PEXPIRE', tk, rttl)
            rcall('ZADD', PL .. 'runs', snow, rid)
            rcall('PEXPIRE', k, rttl)
        end
    end
    for _, user in ipairs(order) do
        local st, hk = users[user], hkey(user)
        local envs, uk, sseq, len = st.envs, st.uk, st.sseq, 0
        for j = 1, #envs, 512 do
            len = rcall('RPUSH', hk, unpack(envs, j, math.min(j + 511, #envs)))
        end
        if len > hsize then rcall('LTRIM', hk, -hsize, -1) end
        if st.new or len == #envs or now - st.x >= slack then
            rcall('HSET', uk, 'seq', sseq, 'epoch', st.epoch, 'x', snow)
            rcall('PEXPIRE', uk, string.format('%d', sttl + slack))
            rcall('PEXPIRE', hk, string.format('%d', httl + slack))
        else
            rcall('HSET', uk, 'seq', sseq)
        end
        if #envs == 1 then
            rcall('PUBLISH', chan(user), 'E ' .. st.epoch .. ' ' .. sseq .. ' ' .. envs[1])
        else
            local lens = {}
            for j = 1, #envs do lens[j] = #envs[j] end
            rcall('PUBLISH', chan(user), 'B ' .. st.epoch .. ' ' ..
                string.format('%d', st.first) .. ' ' .. table.concat(lens, ',') .. ' ' ..
                table.concat(envs))
        end
    end
    return out

elseif op == 'join' then
    -- ARGV: 3 user, 4 member CONNID@NODE ("" to only read the stream: a node's resync),
    -- 5 per-user cap, 6 epoch for a new stream, 7 seq ttl ms (the stream's counter), 8 after ("" none),
    -- 9 the client's epoch ("" the current one).
    -- Reply: epoch, newest seq, oldest replayable seq, recovered (0/1), envelopes.
    local user, member, cap, ep, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7],
        tonumber(ARGV[8])
    if member ~= '' then
        local k = kkey(user)
        rcall('ZADD', k, rcall('INCR', PL .. 'cseq'), member)
        local live = live_conns(user)
        for i = 1, #live - cap do
            rcall('ZREM', k, live[i])
            rcall('PUBLISH', chan(user), 'X ' .. live[i])
        end
    end
    local seq, epoch = stream(user, ep)
    rcall('PEXPIRE', ukey(user), ttl)
    local len = rcall('LLEN', hkey(user))
    local oldest = seq - len + 1
    local out = { epoch, seq, oldest, 0 }
    if ARGV[9] ~= '' then
        local after = tonumber(ARGV[9])
        local same = ARGV[10] == '' or ARGV[10] == epoch
        local recovered = same and after <= seq and after + 1 >= oldest
        local from = oldest - 1
        if recovered then
            out[4] = 1
            from = after
        end
        if from < seq then
            for _, e in ipairs(rcall('LRANGE', hkey(user), from + 1 - oldest, -1)) do
                out[#out + 1] = e
            end
        end
    end
    return out

elseif op == 'kick' then
    -- ARGV: 3 user, 4 connection id ("" all of the user's). Removes them from the registry
    -- and tells their nodes ("K CONNID@NODE"); reply: how many.
    local user, id = ARGV[4], ARGV[5]
    local n = 0
    for _, m in ipairs(live_conns(user)) do
        if id == '' or string.sub(m, 1, #id + 1) == id .. '@' then
            rcall('ZREM', kkey(user), m)
            rcall('PUBLISH', chan(user), 'K ' .. m)
            n = n + 1
        end
    end
    return n

elseif op == 'claim' then
    -- ARGV: 3 run timeout ms. Claims open runs silent that long (at most 64 per call; a
    -- claim holds for one more timeout): reply the number of open runs, then run, user,
    -- thread per claimed run.
    local timeout = tonumber(ARGV[4])
    local out = { rcall('ZCARD', PL .. 'runs') }
    for _, id in ipairs(rcall('ZRANGEBYSCORE', PL .. 'runs', '-inf', now - timeout,
        'LIMIT', 0, 64)) do
        local h = rcall('HMGET', rkey(id), 'state', 'user', 'thread')
        if h[1] == 'open' then
            rcall('ZADD', PL .. 'runs', now, id)
            out[#out + 1], out[#out + 2], out[#out + 3] = id, h[2], h[3] or ''
        else
            rcall('ZREM', PL .. 'runs', id)
        end
    end
    return out

elseif op == 'run' then
    -- ARGV: 3 run. Reply: the hash's fields and values, then "tools", then the tool ids;
    -- empty when unknown.
    local h = rcall('HGETALL', rkey(ARGV[4]))
    if #h == 0 then return {} end
    h[#h + 1] = 'tools'
    for _, tc in ipairs(rcall('SMEMBERS', tkey(ARGV[4]))) do h[#h + 1] = tc end
    return h
end
return redis.error_reply('agentcast: unknown operation ' .. tostring(op))
