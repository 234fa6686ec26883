"""Offers, orders and auctions over REST: thin calls into the one CommerceService."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..runtime.rest.common import body, endpoint, identity, json, node_of, signed_in
from . import AuctionCreate, GiveawayCreate, OfferCreate, OrderCreate, SecondChanceAccept


@endpoint
async def open_offer(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, OfferCreate)
    offer = await node_of(request).commerce.open_offer(
        who,
        request.path_params["id"],
        data.product_id,
        data.price_cents,
        data.quantity,
        data.per_user_limit,
        data.duration_s,
        claim_word=data.claim_word,
    )
    return json(offer, 201)


@endpoint
async def end_offer(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.end_offer(who, request.path_params["id"]))


@endpoint
async def get_offer(request: Request) -> Response:
    return json(await node_of(request).commerce.get_offer(request.path_params["id"]))


@endpoint
async def create_order(request: Request) -> Response:
    who = identity(request)
    data = await body(request, OrderCreate)
    order = await node_of(request).buy(who, data.offer_id, data.qty, data.idempotency_key)
    return json(order, 201)


@endpoint
async def get_order(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.get_order(who, request.path_params["id"]))


@endpoint
async def my_orders(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.list_orders(who))


@endpoint
async def confirm_order(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.confirm(who, request.path_params["id"]))


@endpoint
async def cancel_order(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.cancel(who, request.path_params["id"]))


@endpoint
async def create_auction(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, AuctionCreate)
    auction = await node_of(request).commerce.create_auction(
        who,
        request.path_params["id"],
        data.product_id,
        data.start_cents,
        data.min_increment_cents,
        data.duration_s,
        data.mode,
        increments=data.increments,
        buy_now_cents=data.buy_now_cents,
        reserve_cents=data.reserve_cents,
        starts_in_s=data.starts_in_s,
    )
    return json(auction, 201)


@endpoint
async def get_auction(request: Request) -> Response:
    return json(await node_of(request).commerce.get_auction(request.path_params["id"]))


@endpoint
async def accept_second_chance(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, SecondChanceAccept)
    order = await node_of(request).commerce.accept_second_chance(
        who, request.path_params["id"], data.idempotency_key
    )
    return json(order, 201)


@endpoint
async def my_second_chance(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.second_chance_of(who, request.path_params["id"]))


@endpoint
async def create_giveaway(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, GiveawayCreate)
    giveaway = await node_of(request).commerce.create_giveaway(
        who,
        request.path_params["id"],
        data.product_id,
        data.winners,
        data.duration_s,
        data.eligibility,
    )
    return json(giveaway, 201)


@endpoint
async def get_giveaway(request: Request) -> Response:
    return json(await node_of(request).commerce.get_giveaway(request.path_params["id"]))


# ---------------------------------------------------------------- selling (SPEC §13)


@endpoint
async def my_waitlist_place(request: Request) -> Response:
    who = signed_in(request)
    node = node_of(request)
    return json(await node.commerce.waitlist_place(who, request.path_params["id"]))


@endpoint
async def my_bundles(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).commerce.bundles(who))
