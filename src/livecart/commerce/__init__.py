"""Commerce: the service the gateway and the REST routes call (SPEC §4–§6), one part per
module; this package re-exports what the rest of livecart uses."""

from .base import OnStock as OnStock
from .emitter import Publish as Publish
from .purchases import BUY_BATCH_MAX as BUY_BATCH_MAX
from .requests import AuctionCreate as AuctionCreate
from .requests import GiveawayCreate as GiveawayCreate
from .requests import OfferCreate as OfferCreate
from .requests import OrderCreate as OrderCreate
from .requests import SecondChanceAccept as SecondChanceAccept
from .service import CommerceService as CommerceService
