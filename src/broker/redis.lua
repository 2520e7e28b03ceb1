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
--                    the general publish path last pushed out the expiries, ms); kept for the
--                    seq ttl, longer than the history, so a seq is never reused
--   P h:USER   list   envelopes of seq (seq - LLEN + 1) .. seq, oldest first (history ttl);
--                    an envelope from the plain path has a NUL byte where its seq goes
--   P k:USER   zset   the user's connections in the cluster: CONNID@NODE by creation
--   P reg      hash   USER -> "NODECCCCCC NODECCCCCC ...": how many of k:USER are on each
--                    node (6 digits); in a Redis Cluster the string P g:USER instead
--   P c:USER   channel  "E EPOCH SEQ ENVELOPE" | "B EPOCH FIRSTSEQ LEN,LEN,... ENVELOPES"
--                       (several, concatenated) | "e SEQ ENVELOPE" | "b FIRSTSEQ LEN,... ENVELOPES"
--                       (the plain path: the stream's current epoch, NUL for the seq) |
--                       "D CONNID ENVELOPE" | "X CONNID@NODE" (evicted: over the cap) |
--                       "K CONNID@NODE" (an operator's disconnect)
--   P L n:NODE string a node's heartbeat (expires when the node stops)
--   P L a:SLACK:PERIOD  set  users whose expiries the plain path pushed out in this period
--                    of SLACK ms (1/16 of the history ttl)
--   P i:USER\nKEY  string  the seq an idempotency key first got (0: a direct message's)
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

-- The registry's counts: how many of a user's registered connections are on each node,
-- "NODECCCCCC NODECCCCCC" (the count in 6 digits), written from the user's k: zset after
-- every change of it, so that a publish counts `delivered` for all of its users with one
-- read (nodes checked alive as for the zset) instead of reading each user's zset. On a
-- plain Redis or shard the field USER of the hash P reg (one HMGET per call); in a Redis
-- Cluster the string P g:USER (a GET per user: a command's keys share a slot), in the
-- user's slot, so that it moves with the user's other keys when the slot does.
local function reg_sync(u)
    local ms = rcall('ZRANGE', kkey(u), '0', '-1')
    local c, nodes = {}, {}
    for _, m in ipairs(ms) do
        if string.byte(m, 17) == 64 then
            local node = string.sub(m, 18)
            if not c[node] then nodes[#nodes + 1], c[node] = node, 0 end
            c[node] = c[node] + 1
        end
    end
    if #nodes == 0 then
        if L == '' then rcall('HDEL', P .. 'reg', u) else rcall('DEL', P .. 'g:' .. u) end
    else
        for i, node in ipairs(nodes) do
            nodes[i] = node .. string.format('%06d', math.min(c[node], 999999))
        end
        local v = table.concat(nodes, ' ')
        if L == '' then rcall('HSET', P .. 'reg', u, v) else rcall('SET', P .. 'g:' .. u, v) end
    end
end

-- The user's registered connections whose node is alive; drops the others.
local function live_conns(u)
    local k = kkey(u)
    local ms = rcall('ZRANGE', k, '0', '-1')
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
    if #live < #ms then reg_sync(u) end
    return live
end

-- How many of the user's registered connections are on live nodes; drops the others.
local function live_count(u)
    local k = kkey(u)
    local ms = rcall('ZRANGE', k, '0', '-1')
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
    if n < #ms then reg_sync(u) end
    return n
end

-- The user's stream (newest seq, epoch), created with epoch `ep` when missing.
local function stream(u, ep)
    local h = rcall('HMGET', ukey(u), 'seq', 'epoch')
    if not h[2] then
        rcall('HSET', ukey(u), 'seq', '0', 'epoch', ep)
        rcall('DEL', hkey(u)) -- retained events of an older stream
        return 0, ep
    end
    return tonumber(h[1]), h[2]
end

if op == 'chk' and ARGV[11] == 'p' then
    return { 'OK' } -- plain events: nothing to refuse

elseif op == 'pub' and ARGV[11] == 'p' then
    -- Plain events only (no run, idempotency key, direct connection or timeout): nothing
    -- can refuse them. ARGV: 4..10 as in the general case below, 11 'p', then per event 2
    -- fields: user, envelope with a NUL byte where its seq goes (JSON has no raw NUL); a
    -- user's events are consecutive (the node groups them, keeping their order).
    -- The envelopes are retained and published as they came: whoever reads one puts its seq
    -- in (a retained envelope's seq follows from its place in the list, as before; a
    -- published one's from the message). Per call: one HMGET of the users' registry counts
    -- (P reg; in a Redis Cluster a GET of P g:USER per user), one SMISMEMBER of whose expiries were pushed out in this period, one SADD
    -- of those pushed now. Per user: HINCRBY (the new seq), RPUSH, PUBLISH. Reply: "OK",
    -- then per user (in the order of the arguments) its newest seq and delivered.
    -- "e SEQ ENV" / "b FIRSTSEQ LEN,... ENVS" leave the epoch out (the stream's current
    -- one): a stream gets a new epoch only where it starts at seq 1, and those messages
    -- ("E"/"B") name it.
    local hsize, n = tonumber(ARGV[4]), tonumber(ARGV[9])
    local httl, sttl = tonumber(ARGV[5]), tonumber(ARGV[10])
    local slack = math.floor(httl / 16)
    local trim, ep = '-' .. ARGV[4], ARGV[7]
    local format, find, sub, byte = string.format, string.find, string.sub, string.byte
    -- The expiries are pushed out once per period of `slack` ms: P L a:SLACK:PERIOD is the
    -- set of the users whose were in this one (it expires after the next).
    if slack < 1 then slack = 1 end
    local act = PL .. 'a:' .. format('%d:%d', slack, math.floor(now / slack))
    -- The users, each with the index of its first event
    local us, at, m, prev = {}, {}, 0, nil
    for i = 1, n do
        local u = ARGV[10 + i * 2]
        if u ~= prev then
            m = m + 1
            us[m], at[m], prev = u, i, u
        end
    end
    at[m + 1] = n + 1
    -- CMD KEY ARGS... in chunks (unpack's limit), replies joined
    local function many(cmd, key, args)
        if m <= 512 then return rcall(cmd, key, unpack(args, 1, m)) end
        local all = {}
        for q = 1, m, 512 do
            local r = rcall(cmd, key, unpack(args, q, math.min(q + 511, m)))
            for z = 1, #r do all[q + z - 1] = r[z] end
        end
        return all
    end
    -- (in a Redis Cluster one GET per user: a command's keys must share a slot)
    local regs = L == '' and many('HMGET', P .. 'reg', us)
    local acts = many('SMISMEMBER', act, us)
    local pushed, np, counted = {}, 0, {}
    local Pu, Ph, Pc = P .. 'u:', P .. 'h:', P .. 'c:'
    local out, o = { 'OK' }, 1
    for q = 1, m do
        local user, b, k = us[q], 10 + at[q] * 2, at[q + 1] - at[q]
        local uk, hk = Pu .. user, Ph .. user
        local last = rcall('HINCRBY', uk, 'seq', k == 1 and '1' or format('%d', k))
        local first, epoch, push = last - k + 1, nil, false
        if first == 1 then
            -- No event yet: a new stream, or one a join made (seq 0, its epoch)
            epoch = rcall('HGET', uk, 'epoch')
            if not epoch then
                epoch, push = ep, true
                rcall('HSET', uk, 'epoch', ep)
                rcall('DEL', hk) -- retained events of an older stream
            end
        end
        -- delivered: the user's registered connections on live nodes
        local live, r = 0, nil
        if regs then r = regs[q] else r = rcall('GET', P .. 'g:' .. user) end
        if r and counted[r] then
            live = counted[r] -- users on the same nodes in the same numbers: counted once
        elseif r then
            local p, rl = 1, #r
            while p <= rl do
                local e = find(r, ' ', p, true) or rl + 1
                local node = sub(r, p, e - 7)
                local a = alive[node]
                if a == nil then
                    a = rcall('EXISTS', PL .. 'n:' .. node) == 1
                    alive[node] = a
                end
                if not a then
                    live = -1 -- a node is gone: drop its connections, count again
                    break
                end
                local c1, c2, c3, c4, c5, c6 = byte(r, e - 6, e - 1)
                live = live + ((((c1 * 10 + c2) * 10 + c3) * 10 + c4) * 10 + c5) * 10 + c6 -
                    5333328 -- '0' * 111111
                p = e + 1
            end
            if live < 0 then live = live_count(user) else counted[r] = live end
        end
        local len, msg
        if k == 1 then
            local env = ARGV[b + 1]
            len = rcall('RPUSH', hk, env)
            if epoch then
                msg = 'E ' .. epoch .. ' 1 ' .. env
            else
                msg = format('e %d ', last) .. env
            end
        else
            local envs, lens = {}, {}
            for z = 1, k do
                local env = ARGV[b + z * 2 - 1]
                envs[z], lens[z] = env, #env
            end
            for z = 1, k, 512 do
                len = rcall('RPUSH', hk, unpack(envs, z, math.min(z + 511, k)))
            end
            if epoch then
                msg = 'B ' .. epoch .. ' 1 ' .. table.concat(lens, ',') .. ' ' ..
                    table.concat(envs)
            else
                msg = 'b ' .. format('%d', first) .. ' ' .. table.concat(lens, ',') .. ' ' ..
                    table.concat(envs)
            end
        end
        if len > hsize then rcall('LTRIM', hk, trim, '-1') end
        -- The expiries, pushed out once per period of 1/16 of their ttl, that much past it:
        -- never sooner than the ttl after the newest event.
        if push or len == k or acts[q] == 0 then
            rcall('PEXPIRE', uk, format('%d', sttl + slack))
            rcall('PEXPIRE', hk, format('%d', httl + slack))
            np = np + 1
            pushed[np] = user
        end
        rcall('PUBLISH', Pc .. user, msg)
        out[o + 1], out[o + 2] = last, live
        o = o + 2
    end
    for z = 1, np, 512 do
        rcall('SADD', act, unpack(pushed, z, math.min(z + 511, np)))
    end
    if np > 0 then rcall('PEXPIRE', act, format('%d', 2 * slack + 1000)) end
    return out

elseif op == 'pub' or op == 'chk' then
    -- ARGV: 4 history size, 5 history ttl ms, 6 idempotency ms, 7 epoch for new streams,
    -- 8 run ttl ms, 9 count, 10 seq ttl ms, 11 'x', then per event 4 fields: user, envelope head,
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
    local B, F = 11, 4
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
            if ikey ~= '' then -- a direct message's too: a retry must not deliver it twice
                local k = P .. 'i:' .. user .. '\n' .. ikey
                if seen[k] then
                    dup[i] = { idx = seen[k] }
                else
                    local s = rcall('GET', k)
                    if s then dup[i] = { seq = s } else seen[k] = i end
                end
            end
            if direct ~= '' and not dup[i] then
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
            -- its key remembered with seq 0: a direct message has none
            if e[5] ~= '' then rcall('SET', P .. 'i:' .. user .. '\n' .. e[5], '0', 'PX', iwin) end
            seqs[i] = '0'
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
        reg_sync(user)
    end
    local seq, epoch = stream(user, ep)
    -- an existing stream's expiry only moves later: never sooner than a publish set it
    -- (PEXPIRE's GT is Redis 7 only)
    if rcall('PTTL', ukey(user)) < ttl then rcall('PEXPIRE', ukey(user), ttl) end
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
    if n > 0 then reg_sync(user) end
    return n

elseif op == 'leave' then
    -- ARGV: 4 user, 5 member CONNID@NODE: a connection of this node closed.
    if rcall('ZREM', kkey(ARGV[4]), ARGV[5]) == 1 then reg_sync(ARGV[4]) end
    return 0

elseif op == 'rejoin' then
    -- ARGV: 4 user, 5 member: back after an outage, the node's connections go back into the
    -- registry with the lowest rank (the first to be evicted) unless they are still there.
    if rcall('ZADD', kkey(ARGV[4]), 'NX', '0', ARGV[5]) == 1 then reg_sync(ARGV[4]) end
    return 0

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
