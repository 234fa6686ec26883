"""Offers, orders, auctions, bids and the webhook outbox in PostgreSQL.

Every function takes the database handle of `runtime.db` (an `Executor`, or a `Connection`
where it runs its own transaction). Decisions come from `livecart.commerce.rules`; the
counters are changed by conditional single-statement updates that mirror `apply_buy` /
`apply_release` / `apply_end`, so a concurrent writer can never push a counter past its
bound. Lock order, where a transaction takes several row locks: order → auction → offer →
product; batches lock offers and products in id order.

One module per concern: `offers`, `purchases` (the batched buy path), `orders` (confirm,
cancel, expiry, and `return_units`, where their units come back), `auctions`, `chances`
(second chance), `giveaways`, `selling` (claim words, waitlists and `give_back`, where an
offer's units come back, bundles), `outbox` (webhooks, returned-stock notices) and `rows` (row
mapping); this package re-exports what the service and the tests use.
"""

from .auctions import BidOutcome as BidOutcome
from .auctions import BidRequest as BidRequest
from .auctions import Closed as Closed
from .auctions import bid_many as bid_many
from .auctions import buy_now as buy_now
from .auctions import close_due_auction as close_due_auction
from .auctions import create_auction as create_auction
from .auctions import get_auction as get_auction
from .auctions import open_auction as open_auction
from .auctions import opened_auctions as opened_auctions
from .auctions import return_unit as return_unit
from .chances import accept as accept
from .chances import chance_of as chance_of
from .chances import lapse_due_chance as lapse_due_chance
from .giveaways import Drawn as Drawn
from .giveaways import EntryBatch as EntryBatch
from .giveaways import create_giveaway as create_giveaway
from .giveaways import draw_due_giveaway as draw_due_giveaway
from .giveaways import enter_many as enter_many
from .giveaways import get_giveaway as get_giveaway
from .giveaways import open_giveaway as open_giveaway
from .giveaways import prize_orders as prize_orders
from .offers import Ended as Ended
from .offers import Observation as Observation
from .offers import end_due_offer as end_due_offer
from .offers import end_offer as end_offer
from .offers import get_offer as get_offer
from .offers import offer_creator as offer_creator
from .offers import open_offer as open_offer
from .offers import open_offers as open_offers
from .offers import remaining_of as remaining_of
from .orders import Release as Release
from .orders import cancel as cancel
from .orders import confirm as confirm
from .orders import expire_due as expire_due
from .orders import get_order as get_order
from .orders import list_orders as list_orders
from .orders import return_units as return_units
from .outbox import PERSONAL as PERSONAL
from .outbox import STOCK_RETURNED as STOCK_RETURNED
from .outbox import enqueue_webhook as enqueue_webhook
from .outbox import notify_returned as notify_returned
from .outbox import webhook_event as webhook_event
from .purchases import BatchOutcome as BatchOutcome
from .purchases import BuyOutcome as BuyOutcome
from .purchases import BuyRequest as BuyRequest
from .purchases import buy_many as buy_many
from .rows import at as at
from .selling import WAITLIST_SERVED as WAITLIST_SERVED
from .selling import Bundle as Bundle
from .selling import GivenBack as GivenBack
from .selling import Place as Place
from .selling import Served as Served
from .selling import bundles_of as bundles_of
from .selling import claim_words as claim_words
from .selling import close_due_bundles as close_due_bundles
from .selling import give_back as give_back
from .selling import join_waitlist as join_waitlist
from .selling import waitlist_place as waitlist_place
