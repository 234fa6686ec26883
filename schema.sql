-- livecart schema. Idempotent: `livecart migrate` (and every start) applies it.
-- Money is integer minor units; times are timestamptz; ids are opaque text.

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    role        text NOT NULL DEFAULT 'viewer',
    minor       boolean NOT NULL DEFAULT false,
    settings    jsonb NOT NULL DEFAULT '{"personalization": true}'::jsonb,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS creator_moderators (
    creator     text NOT NULL,
    moderator   text NOT NULL,
    appointed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (creator, moderator)
);

CREATE TABLE IF NOT EXISTS products (
    id          text PRIMARY KEY,
    creator     text NOT NULL,
    title       text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    currency    text NOT NULL,
    stock       integer NOT NULL CHECK (stock >= 0),
    category    text NOT NULL DEFAULT '',
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_creator ON products (creator);

CREATE TABLE IF NOT EXISTS sessions (
    id           text PRIMARY KEY,
    creator      text NOT NULL,
    title        text NOT NULL,
    category     text NOT NULL DEFAULT '',
    tags         text[] NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'live', 'ended')),
    playback_url text,
    scheduled_at timestamptz,
    started_at   timestamptz,
    ended_at     timestamptz,
    pinned_product text,
    slow_seconds integer NOT NULL DEFAULT 0,
    shield       boolean NOT NULL DEFAULT false,
    like_total   bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_status ON sessions (status);
CREATE INDEX IF NOT EXISTS sessions_creator ON sessions (creator);

CREATE TABLE IF NOT EXISTS session_products (
    session     text NOT NULL REFERENCES sessions (id),
    product     text NOT NULL REFERENCES products (id),
    position    integer NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, product)
);

CREATE TABLE IF NOT EXISTS offers (
    id             text PRIMARY KEY,
    session        text NOT NULL REFERENCES sessions (id),
    product        text NOT NULL REFERENCES products (id),
    price_cents    bigint NOT NULL CHECK (price_cents >= 0),
    currency       text NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    remaining      integer NOT NULL CHECK (remaining >= 0),
    per_user_limit integer NOT NULL CHECK (per_user_limit > 0),
    starts_at      timestamptz NOT NULL DEFAULT now(),
    ends_at        timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
    returned       integer NOT NULL DEFAULT 0,
    CHECK (remaining <= quantity)
);
CREATE INDEX IF NOT EXISTS offers_session ON offers (session, status);

CREATE TABLE IF NOT EXISTS orders (
    id              text PRIMARY KEY,
    user_id         text NOT NULL,
    offer           text NOT NULL REFERENCES offers (id),
    qty             integer NOT NULL CHECK (qty > 0),
    unit_cents      bigint NOT NULL,
    total_cents     bigint NOT NULL,
    currency        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('reserved', 'paid', 'cancelled', 'expired')),
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS orders_offer_user ON orders (offer, user_id);
CREATE INDEX IF NOT EXISTS orders_reserved_expiry ON orders (expires_at) WHERE status = 'reserved';
CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, created_at);

CREATE TABLE IF NOT EXISTS auctions (
    id                  text PRIMARY KEY,
    session             text NOT NULL REFERENCES sessions (id),
    product             text NOT NULL REFERENCES products (id),
    start_cents         bigint NOT NULL,
    min_increment_cents bigint NOT NULL CHECK (min_increment_cents > 0),
    current_cents       bigint,
    leader              text,
    mode                text NOT NULL CHECK (mode IN ('extend', 'sudden_death')),
    ends_at             timestamptz NOT NULL,
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
    winner_order        text
);

CREATE TABLE IF NOT EXISTS bids (
    auction      text NOT NULL REFERENCES auctions (id),
    seq          integer NOT NULL,
    user_id      text NOT NULL,
    amount_cents bigint NOT NULL,
    ref          text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (auction, seq),
    UNIQUE (auction, user_id, ref)
);

-- SPEC §11: increment table, buy-now, hidden reserve, scheduled opening, proxy bids. The
-- leader's max (`leader_max_cents`, `leader_at` = the video time it was set at) and each
-- bid's `max_cents` are never shown to anyone but their owner; neither is `reserve_cents`.
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS increments jsonb;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS buy_now_cents bigint;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS reserve_cents bigint;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS opens_at timestamptz;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS leader_max_cents bigint;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS leader_at double precision;
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS end_reason text;
-- A scheduled auction is announced again (`auction` event, status open) once it opens.
ALTER TABLE auctions ADD COLUMN IF NOT EXISTS announced_open boolean NOT NULL DEFAULT true;
CREATE INDEX IF NOT EXISTS auctions_unannounced ON auctions (opens_at) WHERE NOT announced_open;
ALTER TABLE bids ADD COLUMN IF NOT EXISTS max_cents bigint;
ALTER TABLE bids ADD COLUMN IF NOT EXISTS price_cents bigint;
ALTER TABLE bids ADD COLUMN IF NOT EXISTS leader text;
ALTER TABLE bids ADD COLUMN IF NOT EXISTS video_at double precision;

-- Second chance (SPEC §11): the hidden 1-unit offer an auction's orders hang on names its
-- auction; each bidder below the winner is offered the unit at most once, in turn.
ALTER TABLE offers ADD COLUMN IF NOT EXISTS auction text;
CREATE TABLE IF NOT EXISTS second_chances (
    auction      text NOT NULL REFERENCES auctions (id),
    user_id      text NOT NULL,
    round        integer NOT NULL,
    offer        text NOT NULL REFERENCES offers (id),
    amount_cents bigint NOT NULL,
    offered_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    status       text NOT NULL CHECK (status IN ('offered', 'accepted', 'lapsed')),
    order_id     text,
    PRIMARY KEY (auction, user_id),
    UNIQUE (auction, round)
);
CREATE INDEX IF NOT EXISTS second_chances_due ON second_chances (expires_at) WHERE status = 'offered';

-- Giveaways (SPEC §13): `winners` units taken from stock at creation; `seed` stays secret
-- until the draw, `commitment` = hex SHA-256(seed) is public from the start. After the draw
-- `drawn` holds the winners (draw order), `offer` the hidden offer their orders hang on and
-- `returned` the units that went back to stock (fewer entrants than winners).
CREATE TABLE IF NOT EXISTS giveaways (
    id          text PRIMARY KEY,
    session     text NOT NULL REFERENCES sessions (id),
    product     text NOT NULL REFERENCES products (id),
    winners     integer NOT NULL CHECK (winners > 0),
    eligibility text NOT NULL CHECK (eligibility IN ('viewers', 'buyers')),
    seed        text NOT NULL,
    commitment  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
    drawn       text[],
    offer       text,
    returned    integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS giveaways_open ON giveaways (ends_at) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS giveaways_session ON giveaways (session, status);

CREATE TABLE IF NOT EXISTS giveaway_entries (
    giveaway    text NOT NULL REFERENCES giveaways (id),
    user_id     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (giveaway, user_id)
);

-- The durable room log: every event a session's viewers see, in offset order.
-- Chat rows carry author and text; a deleted message keeps its row with state 'removed'.
CREATE TABLE IF NOT EXISTS room_events (
    session     text NOT NULL,
    "offset"    bigint NOT NULL,
    type        text NOT NULL,
    author      text,
    text        text,
    state       text NOT NULL DEFAULT 'visible' CHECK (state IN ('visible', 'removed', 'held', 'rejected')),
    body        jsonb NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, "offset")
);
CREATE INDEX IF NOT EXISTS room_events_author ON room_events (author) WHERE author IS NOT NULL;

CREATE TABLE IF NOT EXISTS moderation_actions (
    id          bigserial PRIMARY KEY,
    creator     text NOT NULL,
    session     text,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text,
    "offset"    bigint,
    seconds     integer,
    reason      text,
    original_text text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS moderation_actions_creator ON moderation_actions (creator, at);

CREATE TABLE IF NOT EXISTS mutes (
    creator     text NOT NULL,
    user_id     text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('timeout', 'ban')),
    until       timestamptz,
    PRIMARY KEY (creator, user_id)
);

CREATE TABLE IF NOT EXISTS blocked_terms (
    scope       text NOT NULL,          -- '*' for global, else the creator id
    term        text NOT NULL,
    action      text NOT NULL CHECK (action IN ('block', 'hold')),
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, term)
);

CREATE TABLE IF NOT EXISTS held_messages (
    id          text PRIMARY KEY,
    session     text NOT NULL,
    author      text NOT NULL,
    name        text NOT NULL DEFAULT '',
    text        text NOT NULL,
    reason      text NOT NULL,
    ref         text,
    status      text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'approved', 'rejected')),
    claimed_by  text,
    claimed_until timestamptz,
    decided_by  text,
    decided_at  timestamptz,
    "offset"    bigint,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS held_messages_session ON held_messages (session, status);

CREATE TABLE IF NOT EXISTS reports (
    session     text NOT NULL,
    "offset"    bigint NOT NULL,
    reporter    text NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, "offset", reporter)
);

CREATE TABLE IF NOT EXISTS interest_profiles (
    user_id     text PRIMARY KEY,
    profile     jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS creator_stats (
    creator     text PRIMARY KEY,
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox for merchant webhooks.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    topic       text NOT NULL,
    payload     jsonb NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    next_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at) WHERE delivered_at IS NULL;

-- Selling in a show (SPEC §13): claim words, waitlists, bundles.
-- An offer's claim word as typed and in the chat normaliser's form (`claim_key`); two open
-- offers of one session never share a key, so a chat message names at most one offer.
ALTER TABLE offers ADD COLUMN IF NOT EXISTS claim_word text;
ALTER TABLE offers ADD COLUMN IF NOT EXISTS claim_key text;
CREATE UNIQUE INDEX IF NOT EXISTS offers_open_claim ON offers (session, claim_key)
    WHERE status = 'open' AND claim_key IS NOT NULL;

-- One place per user per offer, served in `seq` order under the offer's row lock.
CREATE TABLE IF NOT EXISTS waitlist (
    offer       text NOT NULL REFERENCES offers (id),
    user_id     text NOT NULL,
    ref         text NOT NULL,
    seq         bigserial,
    status      text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'served', 'dropped')),
    order_id    text,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (offer, user_id)
);
CREATE INDEX IF NOT EXISTS waitlist_waiting ON waitlist (offer, seq) WHERE status = 'waiting';

-- Sessions whose bundles are still to close once they end; sessions that existed before
-- bundles did count as closed (no flood of webhooks for old shows).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS bundles_open boolean NOT NULL DEFAULT false;
ALTER TABLE sessions ALTER COLUMN bundles_open SET DEFAULT true;
CREATE INDEX IF NOT EXISTS sessions_bundles_open ON sessions (ended_at)
    WHERE status = 'ended' AND bundles_open;

-- A buyer's bundle once its session ended: written with its `bundle.closed` webhook in one
-- transaction, once (the primary key); open bundles are read from the orders themselves.
CREATE TABLE IF NOT EXISTS bundles (
    session     text NOT NULL REFERENCES sessions (id),
    user_id     text NOT NULL,
    id          text NOT NULL UNIQUE,
    orders      jsonb NOT NULL,
    total_cents bigint NOT NULL,
    currency    text NOT NULL,
    closed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, user_id)
);

INSERT INTO schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
