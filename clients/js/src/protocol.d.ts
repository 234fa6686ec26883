// GENERATED from src/livecart/protocol.py by scripts/gen_client_types.py: do not edit.
// Regenerate with `./dev types` (scripts/gen_client_types.py) after changing the protocol;
// a test fails while this file differs from a fresh generation.

export interface Position {
  /** 0–64 characters */
  epoch: string;
  /** ≥ 0 and ≤ 9223372036854775807 */
  offset: number;
}

export interface Join {
  type: "join";
  /** 1–64 characters */
  session: string;
  since?: Position | null;
}

export interface Leave {
  type: "leave";
  /** 1–64 characters */
  session: string;
}

export interface Chat {
  type: "chat";
  /** 1–64 characters */
  session: string;
  /** 0–4000 characters */
  text: string;
  /** 1–64 characters */
  ref: string;
}

export interface Like {
  type: "like";
  /** 1–64 characters */
  session: string;
  /** ≥ 1 and ≤ 50 */
  count?: number;
}

export interface Buy {
  type: "buy";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  offer: string;
  /** ≥ 1 and ≤ 1000 */
  qty: number;
  /** 1–64 characters */
  ref: string;
  /** ≥ 0 and ≤ 253402300799999 */
  video_at?: number | null;
}

/** A bid; with `max_cents` a proxy bid: the server bids for the user up to that max (SPEC §11). The max is shown to nobody but its owner. */
export interface Bid {
  type: "bid";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  auction: string;
  /** ≥ 1 and ≤ 1000000000000 */
  amount_cents: number;
  /** 1–64 characters */
  ref: string;
  /** ≥ 1 and ≤ 1000000000000 */
  max_cents?: number | null;
  /** ≥ 0 and ≤ 253402300799999 */
  video_at?: number | null;
}

/** Take the auction's lot at its buy-now price (SPEC §11): answered `order {ref, order}`. */
export interface BuyNow {
  type: "buy_now";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  auction: string;
  /** 1–64 characters */
  ref: string;
  /** ≥ 0 and ≤ 253402300799999 */
  video_at?: number | null;
}

export interface Signal {
  type: "signal";
  /** 1–64 characters */
  session: string;
  name: "add_to_cart" | "product_click" | "share";
  /** 1–64 characters */
  product?: string | null;
}

export interface Report {
  type: "report";
  /** 1–64 characters */
  session: string;
  /** ≥ 1 and ≤ 9223372036854775807 */
  offset: number;
  /** 1–200 characters */
  reason: string;
  /** 1–64 characters */
  ref: string;
}

export interface Feed {
  type: "feed";
  on: boolean;
}

export interface Ping {
  type: "ping";
  /** 1–64 characters */
  ref?: string | null;
}

/** A token sent as a frame instead of `?token=`: first (then `hello`), or later to refresh the one in force (same `sub`). */
export interface Auth {
  type: "auth";
  /** 1–8192 characters */
  token: string;
}

/** Take the `second_chance` offered to the caller: answered `order {ref, order}`. */
export interface Accept {
  type: "accept";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  auction: string;
  /** 1–64 characters */
  ref: string;
}

/** Enter a giveaway of a session the connection has joined (SPEC §13). */
export interface Enter {
  type: "enter";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  giveaway: string;
  /** 1–64 characters */
  ref: string;
}

/** Join a sold-out open offer's waitlist: `ack {ref, position}`. */
export interface Waitlist {
  type: "waitlist";
  /** 1–64 characters */
  session: string;
  /** 1–64 characters */
  offer: string;
  /** 1–64 characters */
  ref: string;
}

/** How far the client's picture is behind the studio, in ms (from the player's program-date-time); at most the server's `max_viewer_delay_ms` (`hello.limits`). */
export interface Delay {
  type: "delay";
  /** 1–64 characters */
  session: string;
  /** ≥ 0 and ≤ 3600000 */
  ms: number;
}

export interface Limits {
  max_frame_bytes: number;
  chat_max_chars: number;
  chat_rate_per_s: number;
  chat_burst: number;
  max_viewer_delay_ms: number;
  trip_allowance_ms: number;
}

export interface Hello {
  type: "hello";
  user: string;
  role: string;
  server_time: number;
  limits: Limits;
  node: string;
}

export interface SessionState {
  status: string;
  pinned: Record<string, unknown> | null;
  offers: Record<string, unknown>[];
  auction: Record<string, unknown> | null;
  viewers: number;
  likes: number;
  slow: number;
  chat: unknown[];
  giveaway: Record<string, unknown> | null;
}

export interface Joined {
  type: "joined";
  session: string;
  epoch: string;
  offset: number;
  recovered: boolean;
  state: SessionState;
  delay_ms: number;
}

export interface Left {
  type: "left";
  session: string;
}

export interface Ack {
  type: "ack";
  ref: string;
  offset?: number | null;
}

export interface ErrorMsg {
  type: "error";
  code: string;
  message: string;
  ref?: string | null;
  retry_after_ms?: number | null;
  session?: string | null;
  min_cents?: number | null;
}

export interface Pong {
  type: "pong";
  ref?: string | null;
}

export interface Muted {
  type: "muted";
  session: string;
  until: number | null;
}

export interface Held {
  type: "held";
  ref: string;
  reason?: string;
}

export interface OrderMsg {
  type: "order";
  ref: string;
  order: Record<string, unknown>;
}

/** `ack` to a bid: the auction's price after it, whether the bidder leads, and the bidder's own max (sent only to them). */
export interface BidAck {
  type: "ack";
  ref: string;
  amount_cents: number;
  leading: boolean;
  max_cents?: number | null;
}

export interface Outbid {
  type: "outbid";
  session: string;
  auction: string;
  amount_cents: number;
}

/** SPEC §13: the answer to `waitlist`; `position` 1 is served first. */
export interface WaitlistAck {
  type: "ack";
  ref: string;
  position: number;
}

/** Personal (SPEC §13): the user's place on an offer's waitlist, pushed whenever it changes: on joining, when a waiter ahead is served or dropped, and when the place itself ends. `status` is `waiting` (then `position`, 1 = served next), `served` (the `order` with the waitlist ref comes with it) or `dropped` (the offer ended, or the waiter could not be served: the per-user limit, a ref used meanwhile); `position` is null then. */
export interface WaitlistPlace {
  type: "waitlist_place";
  session: string;
  offer: string;
  status: string;
  position: number | null;
}

export interface Viewers {
  type: "viewers";
  session: string;
  count: number;
}

export interface Likes {
  type: "likes";
  session: string;
  total: number;
}

export interface Stock {
  type: "stock";
  session: string;
  offer: string;
  remaining: number;
}

/** Huge-room chat sampling: `skipped` chat messages were not sent to this viewer. */
export interface ChatSampled {
  type: "chat_sampled";
  session: string;
  skipped: number;
}

/** Personal: the unit of an auction whose order lapsed is offered to this bidder at their highest bid, until `expires_at` (ISO 8601, as orders carry it). */
export interface SecondChance {
  type: "second_chance";
  session: string;
  auction: string;
  amount_cents: number;
  expires_at: string;
}

export interface ChatEvent {
  type: "chat";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  user: string;
  name: string;
  text: string;
  at: number;
}

/** A deleted chat message as history serves it: no author, no text. */
export interface ChatTombstone {
  type: "chat";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  removed: boolean;
}

export interface ChatRemoved {
  type: "chat_removed";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  target: number;
}

export interface Pinned {
  type: "pinned";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  product: Record<string, unknown> | null;
}

export interface StatusEvent {
  type: "status";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  status: string;
}

export interface SlowEvent {
  type: "slow";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  seconds: number;
  shield: boolean;
}

/** An opened offer: every field of `commerce.rules.Offer`, `session` first. */
export interface OfferEvent {
  type: "offer";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  id: string;
  product: string;
  price_cents: number;
  currency: string;
  quantity: number;
  remaining: number;
  per_user_limit: number;
  starts_at: string;
  ends_at: string;
  status: string;
  claim_word?: string | null;
}

export interface OfferEnded {
  type: "offer_ended";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  offer: string;
  reason: string;
  returned: number;
}

export interface Sold {
  type: "sold";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  offer: string;
  qty: number;
}

/** An opened (or scheduled) auction: every field of `commerce.rules.Auction`, `session` first. Never the reserve nor any max. */
export interface AuctionEvent {
  type: "auction";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  id: string;
  product: string;
  start_cents: number;
  min_increment_cents: number;
  current_cents: number | null;
  leader: string | null;
  mode: string;
  ends_at: string;
  status: string;
  bids: number;
  winner_order: string | null;
  increments: ((number | null)[])[];
  buy_now_cents: number | null;
  reserve_met: boolean;
  opens_at: string | null;
  reason: string | null;
}

/** The auction's price after an accepted bid and who leads at it (`user`): with proxies that may be the one whose max answered, not the one who sent the bid. `outbid` is the previous leader when the lead changed hands (public already: the previous `user`). */
export interface BidEvent {
  type: "bid";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  auction: string;
  amount_cents: number;
  user: string;
  seq: number;
  ends_at: string;
  reserve_met: boolean;
  outbid?: string | null;
}

/** `reason`: time | buy_now | no_bids | reserve_not_met; `outbid`: on buy-now, the leader the lot was taken from. */
export interface AuctionEnded {
  type: "auction_ended";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  auction: string;
  winner: string | null;
  amount_cents: number | null;
  reason: string;
  outbid?: string | null;
}

/** An opened giveaway: every field of `commerce.draw.Giveaway` known at the start (no seed), `session` first. */
export interface GiveawayEvent {
  type: "giveaway";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  id: string;
  product: string;
  winners: number;
  eligibility: string;
  ends_at: string;
  status: string;
  commitment: string;
}

/** The draw: `winners` are user ids in draw order; `seed` opens the commitment; `returned` units went back to stock (fewer entrants than winners). */
export interface GiveawayEnded {
  type: "giveaway_ended";
  /** the event's position in the session's log (SPEC §5) */
  offset: number;
  session: string;
  giveaway: string;
  winners: string[];
  seed: string;
  entrants: number;
  returned: number;
}

/** Client → server frames by `type`. */
export interface ClientFrameMap {
  "join": Join;
  "leave": Leave;
  "chat": Chat;
  "like": Like;
  "buy": Buy;
  "bid": Bid;
  "buy_now": BuyNow;
  "signal": Signal;
  "report": Report;
  "feed": Feed;
  "ping": Ping;
  "auth": Auth;
  "accept": Accept;
  "enter": Enter;
  "waitlist": Waitlist;
  "delay": Delay;
}
export type ClientFrame = ClientFrameMap[keyof ClientFrameMap];

/** Room log events by `type`: each has `session` and `offset`. */
export interface RoomEventMap {
  "chat": ChatEvent | ChatTombstone;
  "chat_removed": ChatRemoved;
  "pinned": Pinned;
  "status": StatusEvent;
  "slow": SlowEvent;
  "offer": OfferEvent;
  "offer_ended": OfferEnded;
  "sold": Sold;
  "auction": AuctionEvent;
  "bid": BidEvent;
  "auction_ended": AuctionEnded;
  "giveaway": GiveawayEvent;
  "giveaway_ended": GiveawayEnded;
}
export type RoomEvent = RoomEventMap[keyof RoomEventMap];

/** The other server messages by `type` (state, personal, replies). */
export interface ServerMessageMap {
  "hello": Hello;
  "joined": Joined;
  "left": Left;
  "ack": Ack | BidAck | WaitlistAck;
  "error": ErrorMsg;
  "pong": Pong;
  "muted": Muted;
  "held": Held;
  "order": OrderMsg;
  "outbid": Outbid;
  "waitlist_place": WaitlistPlace;
  "viewers": Viewers;
  "likes": Likes;
  "stock": Stock;
  "chat_sampled": ChatSampled;
  "second_chance": SecondChance;
}
export type ServerMessage = ServerMessageMap[keyof ServerMessageMap];

/** SPEC §5 error codes. */
export type ErrorCode = "auction_closed" | "bad_frame" | "banned" | "bid_too_low" | "blocked" | "duplicate" | "forbidden" | "held" | "limit_reached" | "muted" | "not_found" | "not_live" | "offer_closed" | "rate_limited" | "slow_mode" | "sold_out" | "too_large" | "unauthorized" | "unavailable" | "unknown_type";
