// Auctions on the pages (SPEC §11): the clock of an auction, and the watch page's auction
// card — status (scheduled with its opening countdown, open, ended with its reason), price
// and leader, the reserve state, a bid with an optional max, buy-now, `outbid`, and the
// second-chance prompt.

import { money } from "./client.js";
import { clock, fill, h, toMs } from "./app.js";

export const END_REASONS = {
  time: "time is up",
  buy_now: "bought with buy-now",
  no_bids: "no bids",
  reserve_not_met: "reserve not met",
};

const BID_ERRORS = {
  auction_closed: "This auction is closed",
  not_live: "The session is not live",
  unauthorized: "Sign in to bid",
  forbidden: "This account cannot bid",
  not_found: "This auction no longer exists",
  rate_limited: "Too many bids; wait a moment",
};

/** "1:05" for 65,000 ms ("1:02:05" past an hour). */
function span(ms) {
  const left = Math.max(0, Math.ceil(ms / 1000));
  const hrs = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = String(left % 60).padStart(2, "0");
  return hrs ? `${hrs}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/**
 * Where `auction` stands on the viewer's clock: `{phase, ms, text}` with phase `scheduled`
 * (ms until it opens), `open` (ms until it ends), `closing` (past its end, not settled yet)
 * or `ended`. `offsetMs` is how far the viewer's clock runs behind the server's — their
 * video delay, so that the countdown follows the picture they see; 0 is the wall clock.
 */
export function auctionClock(auction, offsetMs = 0, now = Date.now()) {
  if (!auction) return { phase: "ended", ms: 0, text: "" };
  if (auction.status === "ended" || auction.reason) {
    return { phase: "ended", ms: 0, text: "ended" };
  }
  const at = now - offsetMs;
  const opens = toMs(auction.opens_at);
  if (opens !== null && at < opens) {
    return { phase: "scheduled", ms: opens - at, text: `opens in ${span(opens - at)}` };
  }
  const ends = toMs(auction.ends_at);
  if (ends === null || at >= ends) return { phase: "closing", ms: 0, text: "closing…" };
  return { phase: "open", ms: ends - at, text: `ends in ${span(ends - at)}` };
}

/** The step that applies at `price` in an increment table `[[up_to|null, step], …]`. */
export function stepAt(increments, price, fallback = 1) {
  for (const [upTo, step] of increments || []) {
    if (upTo === null || upTo === undefined || price < upTo) return step;
  }
  const rows = increments || [];
  return rows.length ? rows[rows.length - 1][1] : fallback;
}

/** The least bid the auction takes now. */
export function minimumBid(auction) {
  if (auction.current_cents === null || auction.current_cents === undefined) return auction.start_cents;
  return auction.current_cents + stepAt(auction.increments, auction.current_cents, auction.min_increment_cents);
}

/** "24.5" → 2450 minor units (2 decimals; the pages' amounts), or null. */
function cents(text) {
  const s = String(text || "").trim();
  if (!/^\d+(\.\d{0,2})?$/.test(s)) return null;
  const [whole, frac = ""] = s.split(".");
  return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
}

/**
 * The watch page's auction card and second-chance prompt. `box` and `prompt` are its two
 * elements; `products(id)` resolves a product; `signIn()` opens the sign-in box; `api` is
 * the page's REST call. Returns `onError(msg)`: true when an `error` answered one of its own
 * frames.
 */
export function mountWatchAuction({ socket, auth, sessionId, box, prompt, products, signIn, api }) {
  const me = auth.user ? auth.user.sub : null;
  const st = {
    auction: null,
    product: null,
    currency: "USD",
    reserveHidden: new Set(), // auctions seen with their reserve not met
    pending: new Map(), // ref -> "bid" | "buy_now" | "accept"
    notice: null, // {kind, text}
    myMax: null,
    chance: null, // the second_chance message
    offsetMs: 0,
  };

  function setAuction(a) {
    if (!a || !a.id) return;
    if (!st.auction || st.auction.id !== a.id) {
      st.notice = null;
      st.myMax = null;
      st.product = null;
      products(a.product).then((p) => {
        if (p && st.auction && st.auction.product === p.id) {
          st.product = p;
          st.currency = p.currency || "USD";
          render();
        }
      });
    }
    st.auction = { ...(st.auction && st.auction.id === a.id ? st.auction : {}), ...a };
    if (a.reserve_met === false) st.reserveHidden.add(a.id);
    render();
  }

  function say(kind, text) {
    st.notice = { kind, text };
    render();
  }

  function reserveLine(a) {
    if (a.reserve_met === false) return h("span", { class: "pill warn reserve" }, "Reserve not met");
    if (st.reserveHidden.has(a.id)) return h("span", { class: "pill ok reserve" }, "Reserve met");
    return null;
  }

  function render() {
    const a = st.auction;
    box.hidden = !a;
    if (a) renderCard(a);
    renderPrompt();
  }

  function renderCard(a) {
    const cur = st.currency;
    const t = auctionClock(a, st.offsetMs);
    const ended = t.phase === "ended";
    const price = a.current_cents ?? null;
    const leading = me && a.leader === me;
    const minimum = minimumBid(a);
    const statusText = ended
      ? `Ended — ${END_REASONS[a.reason] || a.reason || "closed"}`
      : t.phase === "scheduled" ? "Scheduled" : t.phase === "closing" ? "Closing" : "Open";
    const buyNowOpen = !ended && a.buy_now_cents && (price === null || price < a.buy_now_cents);
    const closedForBids = ended || t.phase === "closing";
    const amountInput = h("input", {
      id: "bid-amount", type: "number", min: "0", step: "0.01", inputmode: "decimal",
      value: (minimum / 100).toFixed(2), disabled: closedForBids,
    });
    const maxInput = h("input", {
      id: "bid-max", type: "number", min: "0", step: "0.01", inputmode: "decimal",
      placeholder: "optional", disabled: closedForBids,
    });
    // A re-render (a new bid, the clock) keeps what the viewer is typing, and the focus.
    const keep = box.querySelector("#bid-amount");
    const typing = keep && document.activeElement === keep;
    if (typing && keep.value) amountInput.value = keep.value;
    const keepMax = box.querySelector("#bid-max");
    const typingMax = keepMax && document.activeElement === keepMax;
    if (keepMax && keepMax.value) maxInput.value = keepMax.value;
    fill(box,
      h("div", { class: "auction-head" },
        h("span", { class: "eyebrow" }, "Live auction"),
        h("span", { class: `pill auction-status ${t.phase}`, dataset: { phase: t.phase } }, statusText),
        reserveLine(a)),
      h("h2", { class: "product-title auction-product" }, st.product ? st.product.title : "…"),
      h("p", { class: "price auction-price" },
        h("strong", {}, money(price ?? a.start_cents, cur)),
        h("span", { class: "muted small" },
          price === null ? " starting bid" : ` · ${a.bids} bid${a.bids === 1 ? "" : "s"}`),
        leading && !ended ? h("span", { class: "pill ok leading" }, "You lead") : null),
      ended
        ? h("p", { class: "auction-result" },
          a.leader
            ? (a.leader === me ? "You won" : `Won by @${a.leader}`) + ` at ${money(a.current_cents, cur)}`
            : "No sale")
        : h("p", { class: "auction-clock", dataset: { phase: t.phase } }, t.text),
      closedForBids ? null : h("form", { class: "bid-form", onsubmit: (ev) => { ev.preventDefault(); bid(amountInput, maxInput); } },
        h("div", { class: "field" },
          h("label", { for: "bid-amount" }, `Your bid (min ${money(minimum, cur)})`), amountInput),
        h("div", { class: "field" },
          h("label", { for: "bid-max" }, "Max bid"), maxInput),
        h("button", { type: "submit", class: "btn primary bid-btn" }, t.phase === "scheduled" ? "Pre-bid" : "Bid")),
      buyNowOpen ? h("button", {
        type: "button", class: "btn buy buy-now", onclick: buyNow,
        "aria-label": `Buy now for ${money(a.buy_now_cents, cur)}`,
      }, `Buy now · ${money(a.buy_now_cents, cur)}`) : null,
      st.myMax && !ended ? h("p", { class: "muted small my-max" }, `Your max: ${money(st.myMax, cur)} (only you see it)`) : null,
      st.notice ? h("p", { class: `order-status ${st.notice.kind} auction-notice`, role: "status" }, st.notice.text) : null);
    if (typing && !amountInput.disabled) amountInput.focus();
    if (typingMax && !maxInput.disabled) maxInput.focus();
  }

  function renderPrompt() {
    const c = st.chance;
    prompt.hidden = !c;
    if (!c) return;
    const left = (toMs(c.expires_at) || 0) - Date.now();
    const over = left <= 0 && !c.taken;
    fill(prompt,
      h("h2", { id: "second-chance-heading" }, "Second chance"),
      h("p", {},
        c.taken ? `✓ ${c.taken}` : over
          ? "This offer has expired."
          : `The winner did not complete the purchase. It is yours for your bid of ${money(c.amount_cents, st.currency)} until ${clock(c.expires_at)}.`),
      !c.taken && !over ? h("p", { class: "muted small chance-clock" }, `expires in ${span(left)}`) : null,
      c.error ? h("p", { class: "order-status error" }, c.error) : null,
      h("div", { class: "actions" },
        !c.taken && !over ? h("button", {
          type: "button", class: "btn primary accept-chance", disabled: c.busy,
          "aria-label": `Accept the second chance for ${money(c.amount_cents, st.currency)}`,
          onclick: accept,
        }, c.busy ? "Reserving…" : `Accept · ${money(c.amount_cents, st.currency)}`) : null,
        h("button", {
          type: "button", class: "btn", onclick: () => { st.chance = null; renderPrompt(); },
        }, c.taken || over ? "Close" : "No thanks")));
  }

  function needSignIn(text) {
    if (auth.signedIn) return false;
    say("error", text);
    signIn();
    return true;
  }

  function bid(amountInput, maxInput) {
    const a = st.auction;
    if (!a || needSignIn("Sign in to bid.")) return;
    const amount = cents(amountInput.value);
    const max = maxInput.value.trim() ? cents(maxInput.value) : null;
    if (amount === null || amount < 1) {
      say("error", "Enter a bid like 12.50");
      return;
    }
    if (maxInput.value.trim() && (max === null || max < amount)) {
      say("error", "The max bid must be at least your bid");
      return;
    }
    const ref = socket.bid(sessionId, a.id, amount, max);
    st.pending.set(ref, "bid");
    maxInput.value = ""; // the server keeps the max; the page shows it as "Your max"
    say("pending", socket.online ? "Bidding…" : "Offline — your bid is sent when you are back online.");
  }

  function buyNow() {
    const a = st.auction;
    if (!a || needSignIn("Sign in to buy.")) return;
    const ref = socket.buyNow(sessionId, a.id);
    st.pending.set(ref, "buy_now");
    say("pending", "Reserving…");
  }

  function accept() {
    const c = st.chance;
    if (!c || needSignIn("Sign in to accept.")) return;
    c.busy = true;
    c.error = null;
    const ref = socket.acceptSecondChance(c.session, c.auction);
    st.pending.set(ref, "accept");
    renderPrompt();
  }

  // The auctions this browser bid on in this session, so that a second chance offered while
  // the page was closed is shown when it opens again (`GET /api/auctions/{id}/second-chance`).
  const bidKey = `livecart.watch.bids.${me}.${sessionId}`;
  function remember(auctionId) {
    try {
      const ids = JSON.parse(window.localStorage.getItem(bidKey) || "[]").filter((x) => x !== auctionId);
      window.localStorage.setItem(bidKey, JSON.stringify([auctionId, ...ids].slice(0, 20)));
    } catch { /* storage disabled: the live message still comes */ }
  }
  async function pendingChances() {
    if (!me || !api) return;
    let ids = [];
    try { ids = JSON.parse(window.localStorage.getItem(bidKey) || "[]"); } catch { ids = []; }
    const keep = [];
    for (const id of ids) {
      try {
        const c = await api("GET", `/api/auctions/${encodeURIComponent(id)}/second-chance`);
        if (c && c.status === "offered" && (toMs(c.expires_at) || 0) > Date.now()) {
          keep.push(id);
          if (!st.chance) {
            st.chance = { type: "second_chance", session: c.session, auction: c.auction,
              amount_cents: c.amount_cents, expires_at: c.expires_at };
            renderPrompt();
          }
        }
      } catch (exc) {
        // 404: no chance for you on that auction (yet: it may still come live).
        if (!(exc && exc.status === 404)) keep.push(id);
        else if (st.auction && st.auction.id === id && st.auction.status !== "ended") keep.push(id);
      }
    }
    try { window.localStorage.setItem(bidKey, JSON.stringify(keep)); } catch { /* ignore */ }
  }

  function onAck(msg) {
    if (st.pending.get(msg.ref) !== "bid") return;
    st.pending.delete(msg.ref);
    if (st.auction) remember(st.auction.id);
    const cur = st.currency;
    if (msg.max_cents) st.myMax = msg.max_cents;
    if (msg.leading === false) {
      say("error", `Another bidder's max is higher — the price is now ${money(msg.amount_cents, cur)}`);
    } else {
      say("ok", `✓ You lead at ${money(msg.amount_cents, cur)}` + (msg.max_cents ? ` · your max ${money(msg.max_cents, cur)}` : ""));
    }
    if (st.auction && typeof msg.amount_cents === "number") {
      // The room's `bid` event follows; show the price now.
      if (st.auction.current_cents === null || msg.amount_cents > st.auction.current_cents) {
        st.auction.current_cents = msg.amount_cents;
        if (msg.leading) st.auction.leader = me;
        render();
      }
    }
  }

  function onOrder(msg) {
    const kind = st.pending.get(msg.ref);
    if (!kind) return;
    st.pending.delete(msg.ref);
    const o = msg.order || {};
    const text = `Reserved 1 × ${money(o.unit_cents, o.currency || st.currency)} — order ${o.id}` +
      (o.expires_at ? ` · pay by ${clock(o.expires_at)}` : "");
    if (kind === "accept" && st.chance) {
      st.chance.busy = false;
      st.chance.taken = text;
      renderPrompt();
    } else {
      say("ok", `✓ ${text}`);
    }
  }

  function onError(msg) {
    const kind = st.pending.get(msg.ref);
    if (!kind) return false;
    if (msg.code === "unavailable") return true; // the socket sends it again
    st.pending.delete(msg.ref);
    socket.retryable.delete(msg.ref);
    const least = typeof msg.min_cents === "number" ? msg.min_cents
      : st.auction ? minimumBid(st.auction) : null;
    const text = msg.code === "bid_too_low"
      ? `Your bid is too low — the minimum is ${money(least, st.currency)}`
      : BID_ERRORS[msg.code] || msg.message || msg.code;
    if (kind === "accept" && st.chance) {
      st.chance.busy = false;
      st.chance.error = msg.code === "auction_closed" ? "This second chance has expired."
        : msg.code === "forbidden" ? "This offer is not yours to take." : text;
      renderPrompt();
    } else {
      say("error", text);
    }
    if (msg.code === "unauthorized") signIn();
    return true;
  }

  socket.on("joined", (msg) => {
    if (msg.session !== sessionId) return;
    const a = (msg.state || {}).auction;
    if (a) setAuction(a);
    else if (st.auction && st.auction.status !== "ended") {
      // It ended while we were away: the ended state comes from the log or stays unknown.
      st.auction = { ...st.auction, status: "ended" };
      render();
    }
  });
  socket.on("auction", (m) => { if (m.session === sessionId) setAuction(m); });
  socket.on("bid", (m) => {
    if (m.session !== sessionId || !st.auction || st.auction.id !== m.auction) return;
    const a = st.auction;
    if (typeof m.seq === "number" && m.seq < a.bids) return; // an older event than we show
    a.current_cents = m.amount_cents;
    a.leader = m.user;
    if (typeof m.seq === "number") a.bids = m.seq;
    if (m.ends_at) a.ends_at = m.ends_at;
    if (typeof m.reserve_met === "boolean") {
      a.reserve_met = m.reserve_met;
      if (!m.reserve_met) st.reserveHidden.add(a.id);
    }
    render();
  });
  socket.on("auction_ended", (m) => {
    if (m.session !== sessionId || !st.auction || st.auction.id !== m.auction) return;
    Object.assign(st.auction, {
      status: "ended", reason: m.reason || "time", leader: m.winner,
      current_cents: m.amount_cents ?? st.auction.current_cents,
    });
    if (m.reason === "reserve_not_met") st.reserveHidden.add(m.auction);
    render();
  });
  socket.on("outbid", (m) => {
    if (m.session !== sessionId) return;
    say("warn", `You were outbid — the price is now ${money(m.amount_cents, st.currency)}`);
  });
  socket.on("second_chance", (m) => {
    if (m.session !== sessionId) return;
    st.chance = { ...m };
    renderPrompt();
  });
  socket.on("ack", onAck);
  socket.on("order", onOrder);

  window.setInterval(() => {
    const a = st.auction;
    if (a) {
      const t = auctionClock(a, st.offsetMs);
      const el = box.querySelector(".auction-clock");
      if (el && el.dataset.phase === t.phase) el.textContent = t.text;
      else if (t.phase !== "ended") renderCard(a); // it opened or reached its end
    }
    const c = st.chance;
    if (c && !c.taken) {
      const el = prompt.querySelector(".chance-clock");
      const left = (toMs(c.expires_at) || 0) - Date.now();
      if (el && left > 0) el.textContent = `expires in ${span(left)}`;
      else if (left <= 0 && el) renderPrompt();
    }
  }, 1000);

  pendingChances();
  return {
    onError,
    /** The viewer's clock offset in ms (video delay), for the countdown. */
    setOffset(ms) {
      st.offsetMs = Math.max(0, Number(ms) || 0);
      render();
    },
  };
}
