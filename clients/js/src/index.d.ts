// Types of @livecart/client (index.js). The message shapes come from protocol.d.ts, generated
// from the server's protocol; types the SDK does not know yet arrive as `AnyMessage`.
import type {
  ErrorCode,
  Hello,
  Joined,
  RoomEventMap,
  ServerMessageMap,
  SessionState,
} from "./protocol.js";

export * from "./protocol.js";

/** Any server message, known to protocol.d.ts or added to the server since. */
export interface AnyMessage {
  type: string;
  [field: string]: unknown;
}

/** A refusal from the server; `code` is a SPEC §5 error code (or `closed`). */
export declare class LivecartError extends Error {
  constructor(code: string, message?: string, msg?: AnyMessage);
  readonly code: ErrorCode | "closed" | "superseded" | (string & {});
  readonly ref?: string;
  readonly retryAfterMs?: number;
  /** The `error` (or `held`) message itself. */
  readonly reply: AnyMessage;
}

export interface Position {
  epoch: string;
  offset: number;
}

/** A rejoin that could not resume (a new epoch, or outside the history window). */
export interface ResyncEvent {
  session: string;
  epoch: string;
  offset: number;
  /** The fresh snapshot: use it instead of what was built from earlier events. */
  state: SessionState;
  previous: Position;
  newEpoch: boolean;
  joined: Joined;
}

export interface OfflineEvent {
  code: number;
  reason: string;
  retryInMs: number;
}

/** What a room emits: its log events, coalesced state, personal messages, joined, resync. */
export interface RoomEvents extends RoomEventMap {
  joined: Joined;
  resync: ResyncEvent;
  viewers: ServerMessageMap["viewers"];
  likes: ServerMessageMap["likes"];
  stock: ServerMessageMap["stock"];
  muted: ServerMessageMap["muted"];
  chat_sampled: ServerMessageMap["chat_sampled"];
  error: ServerMessageMap["error"];
}

/** What the client emits besides every server message by type. */
export interface ClientEvents extends ServerMessageMap {
  feed: AnyMessage & { version?: number; items?: Array<Record<string, unknown>> };
  trending: AnyMessage & { products?: unknown[]; hosts?: unknown[] };
  open: Hello;
  offline: OfflineEvent;
  unauthorized: { code: number; reason: string };
  failure: unknown;
}

export type Unsubscribe = () => void;

export interface RequestOptions {
  /** How often an `unavailable` answer is retried with the same ref (default: the client's). */
  retries?: number;
}

export interface ClientOptions {
  /** A JWT; none connects as a guest. */
  token?: string;
  /** Gives a fresh token: called before the one in force expires and when it is refused. */
  getToken?: () => string | Promise<string>;
  /** A WebSocket constructor (default: the global one, else the `ws` package). */
  WebSocket?: unknown;
  /** Reconnect delays: exponential from minMs up to maxMs, with jitter. */
  backoff?: { minMs: number; maxMs: number };
  /** Retries of an `unavailable` answer per request (default 10). */
  retries?: number;
  pingMs?: number;
  pongMs?: number;
  /** Refresh this long before the token expires (at most half its remaining life). */
  refreshLeadMs?: number;
}

declare class Emitter<Events> {
  on<K extends keyof Events & string>(type: K, handler: (msg: Events[K]) => void): Unsubscribe;
  on(type: string, handler: (msg: AnyMessage) => void): Unsubscribe;
  off(type: string, handler: (msg: never) => void): void;
}

export declare class Room extends Emitter<RoomEvents> {
  readonly client: LivecartClient;
  readonly id: string;
  /** The last position delivered (null before the first `joined`). */
  readonly position: Position | null;
  /** The latest snapshot (`joined.state`). */
  readonly state: SessionState | null;
  /** Resolves with the new message's offset; `held` and refusals reject (LivecartError). */
  chat(text: string, options?: RequestOptions): Promise<number>;
  /** Resolves with the order; a refusal rejects with its code (`sold_out`, `limit_reached`…). */
  buy(offer: string, qty?: number, options?: RequestOptions): Promise<Record<string, unknown>>;
  /** A bid in minor units; with `max` a proxy bid up to that amount. Resolves with the ack. */
  bid(
    auction: string,
    amount: number,
    options?: RequestOptions & { max?: number | null },
  ): Promise<ServerMessageMap["ack"] & AnyMessage>;
  like(count?: number): boolean;
  signal(name: "product_click" | "add_to_cart" | "share", product?: string): boolean;
  report(offset: number, reason: string, options?: RequestOptions): Promise<AnyMessage>;
  /** Any frame with a ref for this session (`buy_now`, `accept`, `enter`…): the reply. */
  send(type: string, fields?: Record<string, unknown>, options?: RequestOptions): Promise<AnyMessage>;
  /** Any frame for this session without a reply (`like`…); false when offline. */
  post(type: string, fields?: Record<string, unknown>): boolean;
  /** The video delay last reported with `delay()` (null: never). */
  readonly delayMs: number | null;
  /** Reports the picture's delay behind the studio (ms; SPEC §12), again after every
   * re-join; bids and buys then carry `video_at`, the picture time they were made at. */
  delay(ms: number): boolean;
  /** The picture time now (epoch ms on the server's clock), null without a delay. */
  videoAt(): number | null;
  leave(): void;
}

export declare class LivecartClient extends Emitter<ClientEvents> {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  /** The WebSocket URL it connects to (no token in it). */
  readonly endpoint: string;
  readonly hello: Hello | null;
  /** The server's clock minus this one (ms), from the last `hello`'s `server_time`. */
  readonly clockOffsetMs: number;
  /** The time on the server's clock (epoch ms). */
  now(): number;
  readonly ready: boolean;
  readonly rooms: Map<string, Room>;
  /** Resolves with the first `hello`; reconnects by itself until `close()`. */
  connect(): Promise<Hello>;
  join(session: string): Room;
  leave(session: string): void;
  feed(on?: boolean): void;
  /** Refreshes the token on the open connection; resolves with the new `hello`. */
  auth(token: string): Promise<Hello | null>;
  /** A frame with a ref (made when missing): resolves with the reply carrying it. */
  request(frame: { type: string; ref?: string; [field: string]: unknown }, options?: RequestOptions): Promise<AnyMessage>;
  /** A frame without waiting for a reply; false when offline. */
  send(frame: { type: string; [field: string]: unknown }): boolean;
  close(): Promise<void>;
}

export declare function newRef(prefix?: string): string;
/** A JWT's `exp` in milliseconds (not verified), or null. */
export declare function tokenExpiry(token: string): number | null;
