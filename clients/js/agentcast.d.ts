// Type declarations for agentcast.js (the agentcast gateway's browser/Node client).

/** The server envelope: one JSON object per text frame. */
export interface Envelope {
    /** event type (`tool_executing`, `connected`, ...) */
    type: string;
    /** per-user sequence number; absent on server messages and direct messages */
    seq?: number;
    user_id?: string;
    run_id?: string;
    thread_id?: string;
    /** ISO-8601 UTC with milliseconds, when the event was accepted */
    timestamp?: string;
    data?: Record<string, any>;
}

/** A numbered event (it has a `seq`). */
export type AgentEvent = Envelope & { seq: number };

/**
 * The person's chat message, put in their stream by the gateway (never by a publisher) before
 * the agent gets it; every connection of the user receives it, the sender's included.
 */
export type UserMessageEvent = AgentEvent & {
    type: 'user_message';
    data: {
        text: string;
        thread_id?: string;
        /** the connection that sent it (compare with `client.connectionId`) */
        connection_id: string;
    };
};

/** Where the client keeps its position: `localStorage`, `sessionStorage`, or your own. */
export interface PositionStorage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
}

/** A position in a user's stream, as kept in storage. */
export interface Position {
    /** the newest seq the application was handed */
    lastSeq: number;
    epoch: string | null;
    /** whose stream it is, when known */
    userId: string | null;
}

/**
 * What an `'error'` listener receives: the gateway's `error` envelope, or an error noticed by
 * this client (`local: true`: socket error, unparsable frame, seq gap, token callback, timeout).
 */
export interface ClientError {
    type: 'error';
    data: { error: string };
    timestamp?: string;
    /** set when the error was noticed by this client, not sent by the gateway */
    local?: true;
    cause?: unknown;
}

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'resumed' | 'closed';

/** What a `'state'` listener receives. */
export interface StateEvent {
    state: ConnectionState;
    /** `connecting`, `connected`, `reconnecting`: the attempt number (0: the first connection) */
    attempt?: number;
    /** `reconnecting`: the wait before the next attempt */
    delayMs?: number;
    /** `reconnecting`, `closed`: the close code */
    code?: number;
    /** `reconnecting`, `closed`: the close reason */
    reason?: string;
    /** `resumed`: the events replayed on this connection */
    missed?: number;
    /** `connected`, `resumed`: false when the gateway could not replay everything (a `resync`) */
    recovered?: boolean;
    /** `connected`, `resumed` */
    connectionId?: string;
}

/** What a `'resync'` listener receives. The app must refetch its state; run views were reset. */
export interface ResyncInfo {
    /** the first seq of the new stream (`resync.data.from_seq`) */
    fromSeq: number;
    /** the last seq this client had seen */
    previousSeq: number | null;
    /** events that will never be replayed; null when unknown (the epoch changed) */
    lost: number | null;
    epoch: string | null;
    previousEpoch: string | null;
    /** the `resync` message itself */
    envelope: Envelope;
}

export interface ToolCall {
    tool: string;
    tool_call_id: string;
    status: 'running' | 'done';
    /** `data.args` (or `arguments`, `input`) of `tool_executing` */
    args: any;
    /** `data.result` of `tool_completed` */
    result: any;
}

/** The view of one run, updated in place; passed to `'run'` listeners on every change. */
export interface RunView {
    run_id: string;
    thread_id: string | null;
    status: 'running' | 'completed' | 'error';
    agent: string | null;
    /** every `agent_thinking` `data.thought`, concatenated */
    thinking: string;
    thoughts: any[];
    /** by `tool_call_id`, in the order they started */
    tools: Map<string, ToolCall>;
    result: any;
    error: any;
    /** every event of the run, in seq order */
    events: AgentEvent[];
    startedAt: string | null;
    updatedAt: string | null;
}

export interface BackoffOptions {
    /** delay before the first reconnect attempt (250) */
    initialMs?: number;
    /** cap on the delay (10000) */
    maxMs?: number;
    /** growth per attempt (2) */
    factor?: number;
    /** 0..1: the delay is drawn from [base * (1 - jitter), base] (0.5) */
    jitter?: number;
    /** a connection that stays up this long resets the attempt count (5000) */
    resetAfterMs?: number;
}

/** A WebSocket constructor with the browser API; the `ws` package's default export qualifies. */
export type WebSocketCtor = new (url: string) => any;

export interface ConnectOptions {
    /** `ws://host:port/ws` or `wss://...` */
    url: string;
    /** JWT (`--auth=jwt`); a function is called before every attempt (token refresh) */
    token?: string | (() => string | Promise<string>);
    /** user id (`--auth=none`, development only) */
    userId?: string;
    /** labels the connection (`thread_id=`); it does not filter */
    threadId?: string;
    /** resume after this seq on the first connection (0: everything retained) */
    lastSeq?: number;
    /** the epoch `lastSeq` belongs to */
    epoch?: string;
    /** defaults to `globalThis.WebSocket` (Node 20: pass the `ws` package) */
    WebSocket?: WebSocketCtor;
    backoff?: BackoffOptions;
    /** close codes after which the client stops for good ([1008, 4001]) */
    noReconnectCodes?: number[];
    /** an attempt without `connected` by then is abandoned (10000) */
    connectTimeoutMs?: number;
    /** reconnect when nothing was received for this long; 0: off (0) */
    idleTimeoutMs?: number;
    /** messages `send()` may hold while not connected (100) */
    maxQueue?: number;
    /** run views kept; beyond, the oldest finished ones are dropped first (1000) */
    maxRuns?: number;
    /**
     * keep the position (`lastSeq`, `epoch`) here across page loads, e.g. `localStorage`;
     * without `lastSeq`, the client resumes from what it finds there
     */
    storage?: PositionStorage;
    /** the key in `storage` (`agentcast.position`, plus `:userId` when given); one per user */
    storageKey?: string;
}

export class AgentcastClient {
    constructor(options: ConnectOptions);
    /** the latest state announced to `'state'` listeners */
    readonly state: ConnectionState;
    /** the newest seq delivered to the application (the resume point) */
    readonly lastSeq: number | null;
    readonly epoch: string | null;
    /** the current connection's id (target of direct messages) */
    readonly connectionId: string | null;
    /** the user id the gateway assigned */
    readonly userId: string | null;
    /** run views by run_id (read-only) */
    readonly runs: Map<string, RunView>;
    /** the current WebSocket or null; read-only, for diagnostics and tests */
    readonly socket: any;
    /** the position read from `storage` at the start and resumed from, or null */
    readonly restoredFrom: Position | null;

    on(type: 'state', fn: (ev: StateEvent) => void): () => void;
    on(type: 'resync', fn: (info: ResyncInfo) => void): () => void;
    on(type: 'error', fn: (err: ClientError) => void): () => void;
    on(type: 'run', fn: (run: RunView) => void): () => void;
    on(type: 'user_message', fn: (ev: UserMessageEvent) => void): () => void;
    on(type: '*', fn: (ev: Envelope) => void): () => void;
    on(type: string, fn: (ev: Envelope) => void): () => void;
    off(type: string, fn: (payload: any) => void): void;

    /** JSON over the socket (a string as is); queued while not connected. true: sent now; false: queued */
    send(message: unknown): boolean;
    /** the person's chat message: `{type: 'user_message', text, thread_id}` (the client's threadId by default); like send() */
    sendMessage(text: string, options?: { threadId?: string }): boolean;
    /** numbered events in seq order, from now on; ends when the client is closed for good */
    events(options?: { signal?: AbortSignal }): AsyncIterableIterator<AgentEvent>;
    /** stops for good (no reconnect) */
    close(reason?: string): void;
}

export function connect(options: ConnectOptions): AgentcastClient;

/** The position a client with `storage` kept under `key` (`agentcast.position`), or null. */
export function readPosition(storage: PositionStorage | null | undefined, key?: string): Position | null;
