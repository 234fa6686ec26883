"""The bounds of client input, each stated once. The wire decoders (`protocol`), the REST
bodies (`models`, `commerce`), the rules (`commerce.rules`) and the checks behind them import
them from here; where they disagreed, SPEC's figure won (a purchase is 1-1,000 units)."""

from __future__ import annotations

# Ids (sessions, offers, products, auctions) and client-chosen refs and idempotency keys: 1-64
# characters (SPEC §5).
ID_MAX_CHARS = 64
# Chat text: 1-500 characters after trimming (SPEC §5), advertised in `hello`.
CHAT_MAX_CHARS = 500
# A `chat` frame's text before trimming: longer is refused while decoding.
CHAT_FRAME_MAX_CHARS = 4000
# Any price, bid or increment, in cents.
MAX_CENTS = 10**12
# Units of a product's stock and of an offer (products.stock is bounded by the same figure).
MAX_QUANTITY = 1_000_000_000
# Units of one purchase (`buy` frame, `POST /api/orders`).
MAX_BUY_QTY = 1000
# Room log offsets are PostgreSQL bigints.
MAX_OFFSET = 2**63 - 1
# Rows of one page of a listing (`?limit=`), checked by the route and stated in the OpenAPI
# document from the same figure.
SESSIONS_PAGE_MAX = 500
TIMELINE_PAGE_MAX = 1000
AUDIT_PAGE_MAX = 1000
TRENDING_PAGE_MAX = 50
