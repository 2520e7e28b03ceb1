// @ts-check
/**
 * agentcast client: a dependency-free ES module for browsers and Node 20+.
 *
 * It keeps one WebSocket to an agentcast gateway (`GET /ws`), reconnects on its own with
 * exponential backoff and jitter, resumes with `last_seq` + `epoch` so that no event is lost or
 * delivered twice, answers the gateway's app-level `ping`, and groups events by `run_id` into
 * run views. See README.md next to this file for examples.
 *
 * Node 20 has no global WebSocket: pass one, e.g. `connect({ url, WebSocket })` with the
 * default export of the `ws` package. Node 22+ and browsers use `globalThis.WebSocket`.
 *
 * @module agentcast
 */

/**
 * The server envelope: one JSON object per text frame.
 * @typedef {object} Envelope
 * @property {string} type                  event type (`tool_executing`, `connected`, ...)
 * @property {number} [seq]                 per-user sequence number; absent on server messages and direct messages
 * @property {string} [user_id]
 * @property {string} [run_id]
 * @property {string} [thread_id]
 * @property {string} [timestamp]           ISO-8601 UTC with milliseconds, when the event was accepted
 * @property {Record<string, any>} [data]
 */

/**
 * A numbered event (it has a `seq`).
 * @typedef {Envelope & { seq: number }} AgentEvent
 */

/**
 * What an `'error'` listener receives: either the gateway's `error` envelope (it answers a
 * client message it cannot act on), or an error noticed by this client (`local: true`: a socket
 * error, an unparsable frame, a seq gap, a failed token callback, a connect timeout).
 * @typedef {object} ClientError
 * @property {'error'} type
 * @property {{ error: string }} data
 * @property {string} [timestamp]
 * @property {true} [local]                 set when the error was noticed by this client, not sent by the gateway
 * @property {unknown} [cause]              the underlying error object, when there is one
 */

/**
 * @typedef {'connecting' | 'connected' | 'reconnecting' | 'resumed' | 'closed'} ConnectionState
 */

/**
 * What a `'state'` listener receives.
 * - `connecting`: a socket is being opened (`attempt`: 0 for the first, then the reconnect attempt).
 * - `connected`: the gateway's `connected` message arrived (`recovered`, `connectionId`).
 * - `reconnecting`: the socket closed (`code`, `reason`); the next attempt starts in `delayMs`.
 * - `resumed`: after a connection that asked to resume, every replayed event has arrived;
 *   `missed` counts them, `recovered` is false when a `resync` came first.
 * - `closed`: for good: `close()` was called (code 1000), or the gateway closed with a code
 *   that means "do not come back" (1008 policy, 4001 evicted by a newer tab); 4003 (an operator cut the connection) resumes like any drop.
 * @typedef {object} StateEvent
 * @property {ConnectionState} state
 * @property {number} [attempt]
 * @property {number} [delayMs]
 * @property {number} [code]
 * @property {string} [reason]
 * @property {number} [missed]
 * @property {boolean} [recovered]
 * @property {string} [connectionId]
 */

/**
 * What a `'resync'` listener receives: the gateway could not replay everything after
 * `previousSeq` (events evicted from its history, another epoch, or a `last_seq` ahead of it).
 * The stream restarts at `fromSeq`; run views were reset. The application must refetch its
 * state from its own backend.
 * @typedef {object} ResyncInfo
 * @property {number} fromSeq               the first seq of the new stream (`resync.data.from_seq`)
 * @property {number | null} previousSeq    the last seq this client had seen
 * @property {number | null} lost           events that can never be replayed (`fromSeq - previousSeq - 1`), null when unknown (epoch changed)
 * @property {string | null} epoch          the current epoch
 * @property {string | null} previousEpoch  the epoch this client asked for
 * @property {Envelope} envelope            the `resync` message itself
 */

/**
 * One tool call inside a run.
 * @typedef {object} ToolCall
 * @property {string} tool
 * @property {string} tool_call_id
 * @property {'running' | 'done'} status
 * @property {any} args                     `data.args` (or `arguments`, `input`) of `tool_executing`
 * @property {any} result                   `data.result` of `tool_completed`
 */

/**
 * The view of one run, built from its events. It is updated in place and passed to `'run'`
 * listeners on every change.
 * @typedef {object} RunView
 * @property {string} run_id
 * @property {string | null} thread_id
 * @property {'running' | 'completed' | 'error'} status
 * @property {string | null} agent          `data.agent` of `agent_started`
 * @property {string} thinking              every `agent_thinking` `data.thought`, concatenated
 * @property {any[]} thoughts               every `data.thought`, in order
 * @property {Map<string, ToolCall>} tools  by `tool_call_id`, in the order they started
 * @property {any} result                   `data.result` of `agent_completed`
 * @property {any} error                    `data.error` of `agent_error`
 * @property {AgentEvent[]} events          every event of the run, in seq order
 * @property {string | null} startedAt      timestamp of the run's first event seen
 * @property {string | null} updatedAt      timestamp of the run's latest event
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initialMs=250]       delay before the first reconnect attempt
 * @property {number} [maxMs=10000]         cap on the delay
 * @property {number} [factor=2]            growth per attempt
 * @property {number} [jitter=0.5]          0..1: the delay is drawn from [base * (1 - jitter), base]
 * @property {number} [resetAfterMs=5000]   a connection that stays up this long resets the attempt count
 */

/**
 * A WebSocket constructor with the browser API (`addEventListener`, `send`, `close`,
 * `readyState`); the `ws` package's default export qualifies.
 * @typedef {new (url: string) => any} WebSocketCtor
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string} url                   `ws://host:port/ws` or `wss://...`
 * @property {string | (() => string | Promise<string>)} [token]  JWT (`--auth=jwt`); a function is called before every attempt (token refresh)
 * @property {string} [userId]              user id (`--auth=none`, development only)
 * @property {string} [threadId]            labels the connection (`thread_id=`); it does not filter
 * @property {number} [lastSeq]             resume after this seq on the first connection (0: everything retained)
 * @property {string} [epoch]               the epoch `lastSeq` belongs to
 * @property {WebSocketCtor} [WebSocket]    defaults to `globalThis.WebSocket`
 * @property {BackoffOptions} [backoff]
 * @property {number[]} [noReconnectCodes=[1008, 4001]]  close codes after which the client stops for good
 * @property {number} [connectTimeoutMs=10000]  an attempt that has not received `connected` by then is abandoned
 * @property {number} [idleTimeoutMs=0]     reconnect when nothing at all was received for this long (0: off); use 2-3x the gateway's `--ping-interval`
 * @property {number} [maxQueue=100]        messages `send()` may hold while not connected
 * @property {number} [maxRuns=1000]        run views kept; beyond, the oldest finished ones are dropped first
 * @property {PositionStorage} [storage]    where to keep the position (`lastSeq`, `epoch`) across page loads, e.g. `localStorage`; the client resumes from it when `lastSeq` is not given
 * @property {string} [storageKey]          the key in `storage` (default `agentcast.position`, plus `:` and `userId` when given); use one key per user
 */

/**
 * Where the client keeps its position: anything with the Web Storage `getItem`/`setItem`
 * (`localStorage`, `sessionStorage`, or an object of your own).
 * @typedef {object} PositionStorage
 * @property {(key: string) => string | null} getItem
 * @property {(key: string, value: string) => void} setItem
 */

/**
 * A position in a user's stream, as kept in storage.
 * @typedef {object} Position
 * @property {number} lastSeq               the newest seq the application was handed
 * @property {string | null} epoch          the epoch of that seq
 * @property {string | null} userId         whose stream it is, when known
 */

/**
 * A chat message of the person, as the gateway puts it in their stream (`type: 'user_message'`).
 * @typedef {AgentEvent & { type: 'user_message', data: { text: string, thread_id?: string, connection_id: string } }} UserMessageEvent
 */

/**
 * @callback Listener
 * @param {any} payload
 * @returns {void}
 */

/** Server-only message types: they carry no seq and are not events of the stream. */
const SERVER_TYPES = new Set(['connected', 'ping', 'resync', 'error', 'closing']);
/** Listener names of this client that a published custom type could collide with. */
const CLIENT_TYPES = new Set(['state', 'run', 'resync', 'error', '*']);
const OPEN = 1;
const PONG = '{"type":"pong"}';

/** The storage key when none is given. */
const DEFAULT_STORAGE_KEY = 'agentcast.position';

/**
 * Reads a position kept by a client with `storage` (null when there is none, or it is not
 * one). A page that rebuilds what it shows from the replay reads it first, to learn the epoch
 * it last saw, then connects with `lastSeq: 0` and that epoch.
 * @param {PositionStorage | null | undefined} storage
 * @param {string} [key='agentcast.position']
 * @returns {Position | null}
 */
export function readPosition(storage, key = DEFAULT_STORAGE_KEY) {
    let raw;
    try {
        raw = storage?.getItem(key);
    } catch {
        return null; // storage refused (a private mode, a sandboxed frame)
    }
    if (typeof raw !== 'string') return null;
    let v;
    try {
        v = JSON.parse(raw);
    } catch {
        return null;
    }
    if (v === null || typeof v !== 'object' || !Number.isSafeInteger(v.last_seq) || v.last_seq < 0) return null;
    return {
        lastSeq: v.last_seq,
        epoch: typeof v.epoch === 'string' ? v.epoch : null,
        userId: typeof v.user_id === 'string' ? v.user_id : null,
    };
}

/**
 * Opens a client; the first socket is opened in a microtask, so listeners added right after
 * this call see every state change.
 * @param {ConnectOptions} options
 * @returns {AgentcastClient}
 */
export function connect(options) {
    return new AgentcastClient(options);
}

/**
 * One logical connection to the gateway, made of as many sockets as it takes.
 */
export class AgentcastClient {
    /** @type {Required<Omit<ConnectOptions, 'token' | 'userId' | 'threadId' | 'lastSeq' | 'epoch' | 'backoff' | 'storage'>> & { token?: ConnectOptions['token'], userId?: string, threadId?: string, storage?: PositionStorage }} */
    #opts;
    /** @type {Required<BackoffOptions>} */
    #backoff;
    /** @type {Map<string, Set<Listener>>} */
    #listeners = new Map();
    /** @type {Set<EventQueue>} */
    #iterators = new Set();
    /** @type {Map<string, RunView>} */
    #runs = new Map();
    /** @type {string[]} */
    #queue = [];

    /** @type {any} the current socket, or null */
    #ws = null;
    /** whether the current socket received `connected` */
    #live = false;
    /** @type {ConnectionState} */
    #state = 'connecting';
    #closed = false;
    #attempt = 0;

    /** @type {number | null} */
    #lastSeq = null;
    /** @type {string | null} */
    #epoch = null;
    /** @type {string | null} */
    #connectionId = null;
    /** @type {string | null} */
    #userId = null;
    /** @type {number | null} the `last_seq` the current socket was opened with */
    #sentLastSeq = null;
    /** @type {string | null} the `epoch` the current socket was opened with */
    #sentEpoch = null;
    /** @type {{ target: number, count: number, awaitingResync: boolean, recovered: boolean } | null} */
    #replay = null;
    /** @type {{ code: number, reason: string } | null} the `closing` message of the current socket */
    #closing = null;
    /** @type {Position | null} the position read from storage at the start */
    #restored = null;
    /** @type {string | null} what was last written to storage */
    #saved = null;
    #saveFailed = false;

    /** @type {ReturnType<typeof setTimeout> | null} */
    #retryTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    #connectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    #stableTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    #idleTimer = null;

    /**
     * @param {ConnectOptions} options
     */
    constructor(options) {
        if (!options || typeof options.url !== 'string') throw new TypeError('agentcast: options.url is required');
        const WS = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
        if (typeof WS !== 'function') {
            throw new TypeError('agentcast: no WebSocket: pass options.WebSocket (in Node 20: the `ws` package)');
        }
        new URL(options.url); // throws on a malformed URL, now rather than at every attempt
        const b = options.backoff ?? {};
        this.#backoff = {
            initialMs: num(b.initialMs, 250, 0),
            maxMs: num(b.maxMs, 10000, 0),
            factor: num(b.factor, 2, 1),
            jitter: Math.min(1, num(b.jitter, 0.5, 0)),
            resetAfterMs: num(b.resetAfterMs, 5000, 0),
        };
        this.#opts = {
            url: options.url,
            token: options.token,
            userId: options.userId,
            threadId: options.threadId,
            WebSocket: WS,
            noReconnectCodes: options.noReconnectCodes ?? [1008, 4001],
            connectTimeoutMs: num(options.connectTimeoutMs, 10000, 0),
            idleTimeoutMs: num(options.idleTimeoutMs, 0, 0),
            maxQueue: num(options.maxQueue, 100, 0),
            maxRuns: num(options.maxRuns, 1000, 1),
            storage: options.storage ?? undefined,
            storageKey:
                typeof options.storageKey === 'string' && options.storageKey !== ''
                    ? options.storageKey
                    : DEFAULT_STORAGE_KEY + (options.userId !== undefined ? `:${options.userId}` : ''),
        };
        if (this.#opts.storage !== undefined && (typeof this.#opts.storage.getItem !== 'function' || typeof this.#opts.storage.setItem !== 'function')) {
            throw new TypeError('agentcast: options.storage needs getItem and setItem');
        }
        if (options.lastSeq !== undefined && options.lastSeq !== null) {
            if (!Number.isSafeInteger(options.lastSeq) || options.lastSeq < 0) {
                throw new TypeError('agentcast: options.lastSeq must be a non-negative integer');
            }
            this.#lastSeq = options.lastSeq;
            this.#epoch = options.epoch ?? null;
        } else if (this.#opts.storage !== undefined) {
            // A position kept by an earlier page load: resume after it (one of another user is ignored).
            const p = readPosition(this.#opts.storage, this.#opts.storageKey);
            if (p && (p.userId === null || options.userId === undefined || p.userId === options.userId)) {
                this.#restored = p;
                this.#lastSeq = p.lastSeq;
                this.#epoch = p.epoch;
            }
        }
        this.#userId = options.userId ?? null;
        queueMicrotask(() => this.#open());
    }

    // --------------------------------------------------------------------------------------
    // Public API

    /** @returns {ConnectionState} the latest state announced to `'state'` listeners */
    get state() {
        return this.#state;
    }
    /** @returns {number | null} the newest seq delivered to the application (resume point) */
    get lastSeq() {
        return this.#lastSeq;
    }
    /** @returns {string | null} the epoch of the seq stream */
    get epoch() {
        return this.#epoch;
    }
    /** @returns {string | null} the current connection's id (target of direct messages) */
    get connectionId() {
        return this.#connectionId;
    }
    /** @returns {string | null} the user id the gateway assigned (from the token, or `userId`) */
    get userId() {
        return this.#userId;
    }
    /** @returns {Map<string, RunView>} run views by run_id (read-only: do not modify) */
    get runs() {
        return this.#runs;
    }
    /** @returns {any} the current WebSocket, or null; read-only, for diagnostics and tests */
    get socket() {
        return this.#ws;
    }
    /** @returns {Position | null} the position this client resumed from, read from `storage` (null when none was used) */
    get restoredFrom() {
        return this.#restored;
    }

    /**
     * Adds a listener. `type`: an event type (`'tool_executing'`, a custom type, or a server
     * message: `'connected'`, `'ping'`, `'closing'`); `'*'`: every numbered event and every
     * direct message, in order; `'state'`, `'resync'`, `'error'`, `'run'`: see the typedefs.
     * Adding the same function twice for a type is a no-op.
     * @param {string} type
     * @param {Listener} fn
     * @returns {() => void} removes the listener
     */
    on(type, fn) {
        if (typeof fn !== 'function') throw new TypeError('agentcast: listener must be a function');
        let set = this.#listeners.get(type);
        if (!set) this.#listeners.set(type, (set = new Set()));
        set.add(fn);
        return () => this.off(type, fn);
    }

    /**
     * Removes a listener added with `on`.
     * @param {string} type
     * @param {Listener} fn
     * @returns {void}
     */
    off(type, fn) {
        const set = this.#listeners.get(type);
        if (set) {
            set.delete(fn);
            if (set.size === 0) this.#listeners.delete(type);
        }
    }

    /**
     * Sends one message (an object is sent as JSON, a string as is). While the client is not
     * connected the message is queued and sent, in order, once the next connection is up.
     * Delivery is at most once: a message sent just before a socket dies may be lost.
     * @param {unknown} message
     * @returns {boolean} true when written to the socket now, false when queued
     * @throws {Error} after `close()`; {RangeError} when the queue is full (`maxQueue`)
     */
    send(message) {
        if (this.#closed) throw new Error('agentcast: client is closed');
        const text = typeof message === 'string' ? message : JSON.stringify(message);
        if (this.#queue.length === 0 && this.#live && this.#trySend(text)) return true;
        if (this.#queue.length >= this.#opts.maxQueue) {
            throw new RangeError(`agentcast: send queue full (${this.#opts.maxQueue} messages)`);
        }
        this.#queue.push(text);
        return false;
    }

    /**
     * Sends a chat message of the person: `{type: 'user_message', text, thread_id}`. The gateway
     * puts it in the user's stream (a `user_message` event every connection of the user gets,
     * this one included) and hands it to the agent. Queued like `send()` while not connected.
     * @param {string} text
     * @param {{ threadId?: string }} [options]  default: the client's `threadId`
     * @returns {boolean} true when written to the socket now, false when queued
     */
    sendMessage(text, options = {}) {
        if (typeof text !== 'string' || text === '') throw new TypeError('agentcast: text must be a non-empty string');
        /** @type {Record<string, string>} */
        const msg = { type: 'user_message', text };
        const thread = options.threadId ?? this.#opts.threadId;
        if (thread !== undefined) msg.thread_id = thread;
        return this.send(msg);
    }

    /**
     * An async iterator over the numbered events, in seq order, from now on. It ends when the
     * client is closed for good. Events are buffered until consumed; stop iterating (`break`,
     * or the signal) to release the buffer. A `resync` is not an event: listen for `'resync'`.
     * @param {{ signal?: AbortSignal }} [options]
     * @returns {AsyncIterableIterator<AgentEvent>}
     */
    events(options = {}) {
        const q = new EventQueue(() => this.#iterators.delete(q));
        if (this.#closed) q.end();
        else this.#iterators.add(q);
        const signal = options.signal;
        if (signal) {
            if (signal.aborted) q.end();
            else signal.addEventListener('abort', () => q.end(), { once: true });
        }
        return q;
    }

    /**
     * Stops for good: closes the socket (1000), cancels any reconnect, drops the send queue,
     * ends the iterators, and announces `{state: 'closed', code: 1000}`.
     * @param {string} [reason='client closed']
     * @returns {void}
     */
    close(reason = 'client closed') {
        if (this.#closed) return;
        const ws = this.#ws;
        this.#detach();
        if (ws) {
            try {
                ws.close(1000, reason);
            } catch {
                /* already closing */
            }
        }
        this.#finish(1000, reason);
    }

    // --------------------------------------------------------------------------------------
    // Sockets

    #open() {
        if (this.#closed) return;
        this.#setState({ state: 'connecting', attempt: this.#attempt });
        const token = this.#opts.token;
        if (typeof token === 'function') {
            Promise.resolve()
                .then(() => token())
                .then(
                    (t) => this.#openWith(t),
                    (err) => {
                        if (this.#closed) return;
                        this.#localError(`token: ${errorText(err)}`, err);
                        this.#retry(undefined, 'token callback failed');
                    },
                );
        } else {
            this.#openWith(token);
        }
    }

    /** @param {string | undefined} token */
    #openWith(token) {
        if (this.#closed) return;
        const url = new URL(this.#opts.url);
        if (token !== undefined && token !== null) url.searchParams.set('token', String(token));
        if (this.#opts.userId !== undefined) url.searchParams.set('user_id', this.#opts.userId);
        if (this.#opts.threadId !== undefined) url.searchParams.set('thread_id', this.#opts.threadId);
        this.#sentLastSeq = this.#lastSeq;
        this.#sentEpoch = this.#lastSeq === null ? null : this.#epoch;
        if (this.#sentLastSeq !== null) url.searchParams.set('last_seq', String(this.#sentLastSeq));
        if (this.#sentEpoch !== null) url.searchParams.set('epoch', this.#sentEpoch);

        let ws;
        try {
            ws = new this.#opts.WebSocket(url.toString());
        } catch (err) {
            this.#localError(`websocket: ${errorText(err)}`, err);
            this.#retry(1006, errorText(err));
            return;
        }
        this.#ws = ws;
        this.#live = false;
        this.#closing = null;
        this.#replay = null;
        // The listeners stay attached for the socket's whole life (an `error` without a listener
        // would throw in `ws`); each first checks that its socket is still the current one.
        ws.addEventListener('message', (/** @type {{ data: unknown }} */ ev) => {
            if (this.#ws === ws) this.#onFrame(ev.data);
        });
        ws.addEventListener('error', (/** @type {any} */ ev) => {
            if (this.#ws === ws) this.#localError(`websocket: ${errorText(ev?.error ?? ev?.message ?? 'error')}`, ev?.error);
        });
        ws.addEventListener('close', (/** @type {{ code: number, reason: string }} */ ev) => {
            if (this.#ws === ws) this.#onClose(ev.code, ev.reason);
        });
        if (this.#opts.connectTimeoutMs > 0) {
            this.#connectTimer = setTimeout(() => {
                this.#connectTimer = null;
                if (this.#ws !== ws || this.#live) return;
                this.#localError(`connect timeout after ${this.#opts.connectTimeoutMs} ms`);
                this.#abandon(ws, 'connect timeout');
            }, this.#opts.connectTimeoutMs);
        }
        this.#touch();
    }

    /**
     * Gives up on a socket without waiting for its close event, then reconnects.
     * @param {any} ws
     * @param {string} reason
     */
    #abandon(ws, reason) {
        this.#detach();
        try {
            ws.close();
        } catch {
            /* ignore */
        }
        this.#afterClose(1006, reason);
    }

    /** Forgets the current socket and its timers. */
    #detach() {
        this.#ws = null;
        this.#live = false;
        this.#replay = null;
        for (const t of [this.#connectTimer, this.#stableTimer, this.#idleTimer]) if (t) clearTimeout(t);
        this.#connectTimer = this.#stableTimer = this.#idleTimer = null;
    }

    /**
     * @param {number} code
     * @param {string} reason
     */
    #onClose(code, reason) {
        const closing = this.#closing;
        this.#detach();
        // A browser may see 1006 where the close frame was lost: the `closing` message says why.
        if (closing && (code === 1005 || code === 1006 || code === closing.code)) {
            code = closing.code;
            reason = reason || closing.reason;
        }
        this.#afterClose(code, reason ?? '');
    }

    /**
     * @param {number} code
     * @param {string} reason
     */
    #afterClose(code, reason) {
        if (this.#closed) return;
        if (this.#opts.noReconnectCodes.includes(code)) this.#finish(code, reason);
        else this.#retry(code, reason);
    }

    /**
     * Schedules the next attempt.
     * @param {number | undefined} code
     * @param {string} reason
     */
    #retry(code, reason) {
        if (this.#closed) return;
        this.#attempt += 1;
        const delayMs = this.#delay(this.#attempt);
        /** @type {StateEvent} */
        const st = { state: 'reconnecting', attempt: this.#attempt, delayMs, reason };
        if (code !== undefined) st.code = code;
        this.#setState(st);
        if (this.#closed) return; // a listener called close()
        this.#retryTimer = setTimeout(() => {
            this.#retryTimer = null;
            this.#open();
        }, delayMs);
    }

    /**
     * The delay before attempt `n` (1-based): initialMs * factor^(n-1), capped at maxMs, then
     * jittered down by up to `jitter` of itself.
     * @param {number} n
     * @returns {number}
     */
    #delay(n) {
        const { initialMs, maxMs, factor, jitter } = this.#backoff;
        const base = Math.min(maxMs, initialMs * Math.pow(factor, n - 1));
        return Math.round(base * (1 - jitter * Math.random()));
    }

    /**
     * Ends the client for good.
     * @param {number} code
     * @param {string} reason
     */
    #finish(code, reason) {
        this.#closed = true;
        this.#detach();
        if (this.#retryTimer) clearTimeout(this.#retryTimer);
        this.#retryTimer = null;
        this.#queue.length = 0;
        this.#setState({ state: 'closed', code, reason });
        for (const q of [...this.#iterators]) q.end();
        this.#iterators.clear();
    }

    /** Restarts the idle timer (when `idleTimeoutMs` is set). */
    #touch() {
        if (this.#opts.idleTimeoutMs <= 0 || !this.#ws) return;
        if (this.#idleTimer) clearTimeout(this.#idleTimer);
        const ws = this.#ws;
        this.#idleTimer = setTimeout(() => {
            this.#idleTimer = null;
            if (this.#ws !== ws) return;
            this.#localError(`nothing received for ${this.#opts.idleTimeoutMs} ms`);
            this.#abandon(ws, 'idle timeout');
        }, this.#opts.idleTimeoutMs);
    }

    /**
     * @param {string} text
     * @returns {boolean} whether it was written
     */
    #trySend(text) {
        const ws = this.#ws;
        if (!ws || ws.readyState !== OPEN) return false;
        try {
            ws.send(text);
            return true;
        } catch (err) {
            this.#localError(`send: ${errorText(err)}`, err);
            return false;
        }
    }

    #flushQueue() {
        while (this.#queue.length > 0 && this.#live) {
            if (!this.#trySend(this.#queue[0])) return;
            this.#queue.shift();
        }
    }

    // --------------------------------------------------------------------------------------
    // Messages

    /** @param {unknown} data */
    #onFrame(data) {
        this.#touch();
        if (typeof data !== 'string') {
            this.#localError('binary frame ignored (the gateway sends text only)');
            return;
        }
        /** @type {Envelope} */
        let env;
        try {
            env = JSON.parse(data);
        } catch (err) {
            this.#localError('invalid JSON from the gateway', err);
            return;
        }
        if (env === null || typeof env !== 'object' || typeof env.type !== 'string') {
            this.#localError('a message without a type from the gateway');
            return;
        }
        if (typeof env.seq === 'number') {
            this.#onEvent(/** @type {AgentEvent} */ (env));
            return;
        }
        switch (env.type) {
            case 'connected':
                this.#onConnected(env);
                return;
            case 'resync':
                this.#onResync(env);
                return;
            case 'ping':
                this.#trySend(PONG);
                this.#emit('ping', env);
                return;
            case 'error':
                this.#emit('error', env);
                return;
            case 'closing': {
                const d = env.data ?? {};
                if (typeof d.code === 'number') this.#closing = { code: d.code, reason: String(d.reason ?? '') };
                this.#emit('closing', env);
                return;
            }
            default:
                // A direct message (a publish with connection_id): no seq, not replayed.
                this.#dispatch(env);
        }
    }

    /** @param {Envelope} env */
    #onConnected(env) {
        const d = env.data ?? {};
        const newest = typeof d.last_seq === 'number' ? d.last_seq : 0;
        const recovered = d.recovered === true;
        this.#live = true;
        if (this.#connectTimer) clearTimeout(this.#connectTimer);
        this.#connectTimer = null;
        this.#connectionId = typeof d.connection_id === 'string' ? d.connection_id : null;
        if (typeof env.user_id === 'string') this.#userId = env.user_id;
        if (typeof d.epoch === 'string') this.#epoch = d.epoch;
        // A fresh (live) start: the stream for this client begins after the newest seq, so a
        // later reconnect asks for whatever was published while it was away.
        if (this.#sentLastSeq === null && this.#lastSeq === null) this.#lastSeq = newest;
        if (recovered || this.#sentLastSeq === null) this.#savePosition(); // a resync saves its own
        if (this.#sentLastSeq !== null) {
            this.#replay = { target: newest, count: 0, awaitingResync: !recovered, recovered };
        }

        const ws = this.#ws;
        if (this.#backoff.resetAfterMs > 0) {
            this.#stableTimer = setTimeout(() => {
                this.#stableTimer = null;
                if (this.#ws === ws) this.#attempt = 0;
            }, this.#backoff.resetAfterMs);
        } else {
            this.#attempt = 0;
        }
        /** @type {StateEvent} */
        const st = { state: 'connected', attempt: this.#attempt, recovered };
        if (this.#connectionId !== null) st.connectionId = this.#connectionId;
        this.#setState(st);
        if (this.#ws !== ws) return; // a listener closed it
        this.#emit('connected', env);
        if (this.#ws !== ws) return;
        this.#flushQueue();
        this.#maybeResumed();
    }

    /** @param {Envelope} env */
    #onResync(env) {
        const from = env.data?.from_seq;
        if (typeof from !== 'number') {
            this.#localError('resync without data.from_seq');
            return;
        }
        const previousSeq = this.#lastSeq;
        const previousEpoch = this.#sentEpoch;
        const sameEpoch = previousEpoch === null || previousEpoch === this.#epoch;
        /** @type {ResyncInfo} */
        const info = {
            fromSeq: from,
            previousSeq,
            lost: previousSeq !== null && sameEpoch ? Math.max(0, from - previousSeq - 1) : null,
            epoch: this.#epoch,
            previousEpoch,
            envelope: env,
        };
        this.#lastSeq = from - 1;
        this.#runs.clear();
        this.#savePosition();
        if (this.#replay) this.#replay.awaitingResync = false;
        const ws = this.#ws;
        this.#emit('resync', info);
        if (this.#ws === ws) this.#maybeResumed();
    }

    /** @param {AgentEvent} env */
    #onEvent(env) {
        const seq = env.seq;
        if (this.#lastSeq !== null && seq <= this.#lastSeq) return; // a duplicate: already delivered
        if (this.#lastSeq !== null && seq !== this.#lastSeq + 1) {
            this.#localError(`seq gap: expected ${this.#lastSeq + 1}, got ${seq}`);
        }
        this.#lastSeq = seq;
        if (this.#replay && seq <= this.#replay.target) this.#replay.count += 1;
        const run = this.#updateRun(env);
        const ws = this.#ws;
        this.#dispatch(env);
        for (const q of this.#iterators) q.push(env);
        if (run) this.#emit('run', run);
        this.#savePosition(); // after the listeners: what is kept is what the application was handed
        if (this.#ws === ws) this.#maybeResumed();
    }

    /** Writes the position to `storage` (when given and changed); a refusal is reported once. */
    #savePosition() {
        const st = this.#opts.storage;
        if (st === undefined || this.#lastSeq === null) return;
        const value = JSON.stringify({ last_seq: this.#lastSeq, epoch: this.#epoch, user_id: this.#userId });
        if (value === this.#saved) return;
        try {
            st.setItem(this.#opts.storageKey, value);
            this.#saved = value;
        } catch (err) {
            if (this.#saveFailed) return;
            this.#saveFailed = true;
            this.#localError(`storage: ${errorText(err)}`, err);
        }
    }

    /** Announces `resumed` once the replay of a resuming connection is complete. */
    #maybeResumed() {
        const r = this.#replay;
        if (!r || r.awaitingResync) return;
        if ((this.#lastSeq ?? 0) < r.target) return;
        this.#replay = null;
        /** @type {StateEvent} */
        const st = { state: 'resumed', missed: r.count, recovered: r.recovered };
        if (this.#connectionId !== null) st.connectionId = this.#connectionId;
        this.#setState(st);
    }

    /**
     * Calls the type's listeners (unless the type collides with a client listener name), then '*'.
     * @param {Envelope} env
     */
    #dispatch(env) {
        if (!CLIENT_TYPES.has(env.type)) this.#emit(env.type, env);
        this.#emit('*', env);
    }

    // --------------------------------------------------------------------------------------
    // Run views

    /**
     * @param {AgentEvent} env
     * @returns {RunView | null} the view that changed
     */
    #updateRun(env) {
        const id = env.run_id;
        if (typeof id !== 'string') return null;
        const ts = env.timestamp ?? null;
        let run = this.#runs.get(id);
        if (!run) {
            run = {
                run_id: id,
                thread_id: env.thread_id ?? null,
                status: 'running',
                agent: null,
                thinking: '',
                thoughts: [],
                tools: new Map(),
                result: undefined,
                error: undefined,
                events: [],
                startedAt: ts,
                updatedAt: ts,
            };
            this.#runs.set(id, run);
            this.#pruneRuns();
        }
        const d = env.data ?? {};
        if (run.thread_id === null && typeof env.thread_id === 'string') run.thread_id = env.thread_id;
        if (run.agent === null && typeof d.agent === 'string') run.agent = d.agent;
        switch (env.type) {
            case 'agent_started':
                run.status = 'running';
                run.startedAt = ts;
                break;
            case 'agent_thinking':
                run.thoughts.push(d.thought);
                run.thinking += typeof d.thought === 'string' ? d.thought : JSON.stringify(d.thought ?? '');
                break;
            case 'tool_executing':
                run.tools.set(String(d.tool_call_id), {
                    tool: d.tool,
                    tool_call_id: String(d.tool_call_id),
                    status: 'running',
                    args: d.args ?? d.arguments ?? d.input,
                    result: undefined,
                });
                break;
            case 'tool_completed': {
                const callId = String(d.tool_call_id);
                const call = run.tools.get(callId);
                if (call) {
                    call.status = 'done';
                    call.result = d.result;
                } else {
                    run.tools.set(callId, { tool: d.tool, tool_call_id: callId, status: 'done', args: undefined, result: d.result });
                }
                break;
            }
            case 'agent_completed':
                run.status = 'completed';
                run.result = d.result;
                break;
            case 'agent_error':
                run.status = 'error';
                run.error = d.error;
                break;
            default:
                break;
        }
        run.events.push(env);
        run.updatedAt = ts;
        return run;
    }

    /** Keeps at most `maxRuns` views: drops the oldest finished ones, then the oldest. */
    #pruneRuns() {
        let excess = this.#runs.size - this.#opts.maxRuns;
        if (excess <= 0) return;
        for (const [id, run] of this.#runs) {
            if (excess <= 0) return;
            if (run.status !== 'running') {
                this.#runs.delete(id);
                excess -= 1;
            }
        }
        for (const id of this.#runs.keys()) {
            if (excess <= 0) return;
            this.#runs.delete(id);
            excess -= 1;
        }
    }

    // --------------------------------------------------------------------------------------
    // Listeners

    /** @param {StateEvent} st */
    #setState(st) {
        this.#state = st.state;
        this.#emit('state', st);
    }

    /**
     * @param {string} message
     * @param {unknown} [cause]
     */
    #localError(message, cause) {
        /** @type {ClientError} */
        const e = { type: 'error', data: { error: message }, local: true };
        if (cause !== undefined) e.cause = cause;
        this.#emit('error', e);
    }

    /**
     * Calls the listeners of `type` in the order they were added. A listener that throws does
     * not disturb the client or the other listeners; its error is reported asynchronously.
     * @param {string} type
     * @param {unknown} payload
     */
    #emit(type, payload) {
        const set = this.#listeners.get(type);
        if (!set) return;
        for (const fn of [...set]) {
            try {
                fn(payload);
            } catch (err) {
                reportLater(err);
            }
        }
    }
}

/**
 * The buffer behind one `events()` iterator.
 * @implements {AsyncIterableIterator<AgentEvent>}
 */
class EventQueue {
    /** @type {AgentEvent[]} */
    #buf = [];
    /** @type {((r: IteratorResult<AgentEvent>) => void)[]} */
    #waiting = [];
    #done = false;
    /** @type {() => void} */
    #onEnd;

    /** @param {() => void} onEnd */
    constructor(onEnd) {
        this.#onEnd = onEnd;
    }

    /** @param {AgentEvent} ev */
    push(ev) {
        if (this.#done) return;
        const w = this.#waiting.shift();
        if (w) w({ value: ev, done: false });
        else this.#buf.push(ev);
    }

    /** Ends the iteration once the buffered events are consumed. */
    end() {
        if (this.#done) return;
        this.#done = true;
        this.#onEnd();
        for (const w of this.#waiting.splice(0)) w({ value: undefined, done: true });
    }

    /** @returns {Promise<IteratorResult<AgentEvent>>} */
    next() {
        if (this.#buf.length > 0) return Promise.resolve({ value: /** @type {AgentEvent} */ (this.#buf.shift()), done: false });
        if (this.#done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiting.push(resolve));
    }

    /** @returns {Promise<IteratorResult<AgentEvent>>} */
    return() {
        this.#buf.length = 0;
        this.end();
        return Promise.resolve({ value: undefined, done: true });
    }

    [Symbol.asyncIterator]() {
        return this;
    }
}

/**
 * @param {unknown} v
 * @param {number} dflt
 * @param {number} min
 * @returns {number}
 */
function num(v, dflt, min) {
    return typeof v === 'number' && Number.isFinite(v) && v >= min ? v : dflt;
}

/**
 * @param {unknown} err
 * @returns {string}
 */
function errorText(err) {
    if (err instanceof Error) return err.message;
    if (typeof err === 'string') return err;
    return String(err);
}

/**
 * Reports a listener's exception without unwinding the client: `reportError` where there is
 * one (browsers), else an uncaught exception on a later tick (Node).
 * @param {unknown} err
 */
function reportLater(err) {
    const g = /** @type {any} */ (globalThis);
    if (typeof g.reportError === 'function') g.reportError(err);
    else
        setTimeout(() => {
            throw err;
        }, 0);
}
