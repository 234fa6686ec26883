// Watch page: video, live chat, the pinned product with Buy, flash offers, giveaways, likes,
// discovery.

import { Auth, LiveSocket, hasRoute, makeApi, money, newRef, replay } from "./client.js";
import {
  $, chatColor, clock, connectionBanner, countdown, everySecond, explain, fill, h, header,
  initials, lookup, toast, toMs, whyText,
} from "./app.js";
import { mountWatchAuction } from "./auction.js";
import { watchGiveaway } from "./giveaway.js";

const sessionId = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop());

// Video time (SPEC §12): how far this viewer's picture is behind the studio, in ms. A player
// that knows it (from its program-date-time) passes `?delay=ms` or `#delay=ms` (the demo
// does); the server then sends room events that late and judges buys and bids at the
// picture's time, and countdowns here run on the picture's time too.
const videoDelayMs = (() => {
  const raw = new URLSearchParams(window.location.search).get("delay")
    ?? new URLSearchParams(window.location.hash.slice(1)).get("delay");
  const ms = Math.round(Number(raw));
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
})();
/** Time left until `t` in this viewer's picture. */
const videoCountdown = (t) => countdown(toMs(t) === null ? t : toMs(t) + videoDelayMs);
const auth = new Auth("watch");
const api = makeApi(auth);
const { openSignIn } = header({ auth, page: "watch", session: sessionId });
const socket = new LiveSocket(auth.token);
connectionBanner(socket);

const products = lookup(api, (id) => `/api/products/${encodeURIComponent(id)}`);
const sessions = lookup(api, (id) => `/api/sessions/${encodeURIComponent(id)}`);

const auction = mountWatchAuction({
  socket, auth, sessionId, box: $("#auction"), prompt: $("#second-chance"), products,
  signIn: () => openSignIn(), api,
});
auction.setOffset(videoDelayMs); // its countdown runs on the picture's time too

const state = {
  session: null,
  status: "",
  pinned: null, // product object
  offers: new Map(), // id -> offer
  likes: 0,
  pendingLikes: 0,
  viewers: 0,
  slow: 0,
  me: auth.user ? auth.user.sub : null,
  mutedUntil: null, // ms, or Infinity for a ban
  buys: new Map(), // ref -> {offer, qty, tries}
  offerStatus: new Map(), // offer id -> {kind, text}
  orders: new Map(), // id -> order
  chats: new Map(), // ref -> pending own message <li>
  claims: new Map(), // chat ref -> offer id, for chat messages that are a claim word
  waits: new Map(), // waitlist ref -> offer id
  bundle: null, // this session's bundle of my orders
};

const BUY_ERRORS = {
  sold_out: "Sold out",
  limit_reached: "You have reached this offer's per-person limit",
  offer_closed: "This offer has ended",
  not_live: "The session is not live",
  unauthorized: "Sign in to buy",
  forbidden: "This account cannot buy",
  not_found: "This offer no longer exists",
  duplicate: "That purchase was already made",
  rate_limited: "Too many attempts; wait a moment",
};
const CHAT_ERRORS = {
  rate_limited: "You are sending messages too fast",
  slow_mode: "Slow mode is on",
  duplicate: "You already sent that",
  muted: "You are timed out",
  banned: "You are banned from this chat",
  blocked: "This message contains a blocked term",
  not_live: "Chat opens when the session is live",
  unauthorized: "Sign in to chat",
  forbidden: "You cannot chat here",
  bad_frame: "Messages are 1–500 characters",
  too_large: "That message is too long",
};

// ------------------------------------------------------------------ session and video

async function loadSession() {
  try {
    const s = await api("GET", `/api/sessions/${encodeURIComponent(sessionId)}`);
    state.session = s;
    sessions.put(s);
    document.title = `${s.title} · livecart`;
    $("#session-title").textContent = s.title;
    $("#session-host").textContent = `hosted by @${s.creator}${s.category ? ` · ${s.category}` : ""}`;
    setStatus(s.status);
    renderVideo(s);
    if (!state.pinned && s.pinned_product) {
      const p = await products(s.pinned_product);
      if (p && !state.pinned) setPinned(p);
    }
  } catch (exc) {
    $("#session-title").textContent = "Session not found";
    $("#session-host").textContent = explain(exc);
    fill($("#video"), h("div", { class: "video-placeholder" },
      h("p", { class: "placeholder-title" }, "This session does not exist."),
      h("a", { href: "/studio", class: "btn" }, "Go to the studio")));
  }
}

function renderVideo(s) {
  const box = $("#video");
  const placeholder = (title, detail, link) => fill(box, h("div", { class: "video-placeholder" },
    h("span", { class: "live-orb", "aria-hidden": "true" }, initials(s.creator)),
    h("p", { class: "placeholder-title" }, title),
    h("p", { class: "placeholder-detail" }, detail),
    link ? h("a", { href: link, class: "btn small", target: "_blank", rel: "noopener" }, "Open the stream") : null));
  if (!s.playback_url) {
    placeholder(s.title, "No video stream is attached to this session — chat and shopping are live.");
    return;
  }
  const video = h("video", {
    controls: true, autoplay: true, playsInline: true, "aria-label": `Live video: ${s.title}`,
  });
  video.muted = true;
  const isHls = /\.m3u8(\?|$)/i.test(s.playback_url);
  if (isHls && !video.canPlayType("application/vnd.apple.mpegurl")) {
    placeholder(s.title, "This browser cannot play HLS streams natively.", s.playback_url);
    return;
  }
  video.addEventListener("error", () => {
    placeholder(s.title, "The video stream could not be played right now.", s.playback_url);
  });
  video.src = s.playback_url;
  fill(box, video);
}

function setStatus(status) {
  state.status = status;
  const badge = $("#status-badge");
  badge.textContent = status === "live" ? "LIVE" : status === "ended" ? "ENDED" : status ? "SOON" : "…";
  badge.className = `badge ${status}`;
  const input = $("#chat-input");
  if (status === "ended") input.placeholder = "This session has ended";
  else if (!auth.signedIn) input.placeholder = "Sign in to chat";
  else input.placeholder = "Say something…";
  renderPinned();
  renderOffers();
}

// ------------------------------------------------------------------ chat

const list = $("#chat-list");

function nearBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function chatItem(m) {
  const mine = state.me && m.user === state.me;
  return h("li", {
    class: `msg${mine ? " mine" : ""}`,
    dataset: { offset: String(m.offset), user: m.user },
  },
  h("span", { class: "msg-avatar", style: { background: chatColor(m.user) }, "aria-hidden": "true" },
    initials(m.name || m.user)),
  h("div", { class: "msg-body" },
    h("div", { class: "msg-meta" },
      h("span", { class: "msg-name" }, m.name || m.user),
      h("time", { class: "msg-time", datetime: new Date(m.at || Date.now()).toISOString() }, clock(m.at || Date.now())),
      mine ? h("span", { class: "msg-state", "aria-label": "delivered" }, "✓") : null,
      !mine && auth.signedIn ? h("button", {
        type: "button", class: "icon-btn report", "aria-label": `Report message from ${m.name || m.user}`,
        onclick: () => report(m),
      }, "Report") : null),
    h("p", { class: "msg-text" }, m.text)));
}

const reports = new Map(); // ref -> message

function report(m) {
  const reason = window.prompt(`Report ${m.name || m.user}'s message? Tell the moderators why:`, "spam");
  if (reason === null || !reason.trim()) return;
  const ref = newRef("report");
  reports.set(ref, m);
  if (!socket.send({ type: "report", session: sessionId, offset: m.offset, reason: reason.trim().slice(0, 200), ref })) {
    toast("You are offline; try again in a moment.", "warn");
  }
}

function addChat(m, { scroll = true } = {}) {
  if (m.removed || typeof m.text !== "string") return;
  if (list.querySelector(`li[data-offset="${m.offset}"]`)) return;
  const stick = nearBottom();
  // One of my pending messages? Then this is its delivery: keep the element, mark it.
  if (state.me && m.user === state.me) {
    for (const [ref, li] of state.chats) {
      if (li.dataset.text === m.text && (!li.dataset.offset || li.dataset.offset === String(m.offset))) {
        state.chats.delete(ref);
        li.replaceWith(chatItem(m));
        if (scroll && stick) list.scrollTop = list.scrollHeight;
        return;
      }
    }
  }
  // Keep offset order even when a recovered event lands behind a pending message.
  const el = chatItem(m);
  const after = [...list.querySelectorAll("li[data-offset]")].find(
    (li) => li.dataset.offset && Number(li.dataset.offset) > m.offset,
  );
  if (after) list.insertBefore(el, after);
  else {
    const firstPending = list.querySelector("li.pending");
    if (firstPending) list.insertBefore(el, firstPending);
    else list.append(el);
  }
  while (list.children.length > 300) list.firstElementChild.remove();
  if (scroll && stick) list.scrollTop = list.scrollHeight;
}

function removeChat(target) {
  const li = list.querySelector(`li[data-offset="${target}"]`);
  if (!li) return;
  li.classList.add("removing");
  li.setAttribute("aria-hidden", "true");
  window.setTimeout(() => li.remove(), 250);
}

function resetChat(messages) {
  const pending = [...list.querySelectorAll("li.pending")];
  list.replaceChildren();
  for (const m of messages) addChat(m, { scroll: false });
  for (const li of pending) list.append(li);
  list.scrollTop = list.scrollHeight;
}

function notice(text, kind = "info", ms = 6000) {
  const el = $("#chat-notice");
  el.textContent = text;
  el.className = `notice ${kind}`;
  el.hidden = !text;
  window.clearTimeout(notice.timer);
  if (ms) notice.timer = window.setTimeout(() => { el.hidden = true; }, ms);
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!text) return;
  if (!auth.signedIn) {
    notice("Sign in to chat.", "warn");
    openSignIn();
    return;
  }
  if (state.mutedUntil && state.mutedUntil > Date.now()) {
    notice(mutedText(), "warn");
    return;
  }
  const ref = newRef("chat");
  const claimed = claimedOffer(text);
  if (claimed) state.claims.set(ref, claimed.id);
  if (!socket.send({ type: "chat", session: sessionId, text, ref })) {
    notice("You are offline; the message was not sent.", "warn");
    return;
  }
  const li = h("li", { class: "msg mine pending", dataset: { ref, text, user: state.me } },
    h("span", { class: "msg-avatar", style: { background: chatColor(state.me) }, "aria-hidden": "true" },
      initials(auth.user.name || state.me)),
    h("div", { class: "msg-body" },
      h("div", { class: "msg-meta" },
        h("span", { class: "msg-name" }, auth.user.name || state.me),
        h("span", { class: "msg-state" }, "sending…")),
      h("p", { class: "msg-text" }, text)));
  state.chats.set(ref, li);
  list.append(li);
  list.scrollTop = list.scrollHeight;
  input.value = "";
}

function onAck(msg) {
  if (state.waits.has(msg.ref)) {
    const offer = state.waits.get(msg.ref);
    state.offerStatus.set(offer, { kind: "ok", text: `You are #${msg.position} on the waitlist` });
    renderPinned();
    renderOffers();
    return;
  }
  if (reports.delete(msg.ref)) {
    toast("Thanks — the moderators will take a look.", "ok");
    return;
  }
  const li = state.chats.get(msg.ref);
  if (!li) return;
  if (msg.offset !== undefined) {
    const delivered = list.querySelector(`li[data-offset="${msg.offset}"]:not(.pending)`);
    if (delivered && delivered !== li) {
      state.chats.delete(msg.ref);
      li.remove();
      return;
    }
    li.dataset.offset = String(msg.offset);
  }
  const st = li.querySelector(".msg-state");
  st.textContent = "✓";
  st.setAttribute("aria-label", "delivered");
  li.classList.remove("pending");
  li.classList.add("acked");
  state.chats.delete(msg.ref);
  // The log event normally arrives too; when it already did, nothing else to do.
}

function onHeld(msg) {
  const li = state.chats.get(msg.ref);
  if (!li) return;
  li.classList.add("held");
  li.querySelector(".msg-state").textContent = "held for review";
  li.title = msg.reason ? `Held: ${msg.reason}` : "Held for review";
  li.append(h("p", { class: "msg-note" },
    "Only you can see this until a moderator approves it", msg.reason ? ` (${msg.reason})` : "", "."));
  notice("Your message is waiting for a moderator.", "info");
}

function chatFailed(msg) {
  const li = state.chats.get(msg.ref);
  state.chats.delete(msg.ref);
  let text = CHAT_ERRORS[msg.code] || msg.message || msg.code;
  if (li && li.classList.contains("held")) text = "A moderator did not approve this message";
  if (msg.retry_after_ms) text += ` — try again in ${Math.ceil(msg.retry_after_ms / 1000)}s`;
  if (li) {
    li.classList.remove("pending");
    li.classList.add("failed");
    li.querySelector(".msg-state").textContent = "not sent";
    li.append(h("p", { class: "msg-note" }, text));
    window.setTimeout(() => li.remove(), 8000);
  }
  notice(text, "warn");
}

function mutedText() {
  if (state.mutedUntil === Infinity) return "You are banned from this chat.";
  return `You are timed out until ${clock(state.mutedUntil)}.`;
}

function setSlow(seconds) {
  state.slow = seconds || 0;
  const pill = $("#slow-pill");
  pill.hidden = !state.slow;
  pill.textContent = state.slow ? `Slow mode · ${state.slow}s` : "";
}

// ------------------------------------------------------------------ likes

let likeTimer = null;

function like() {
  if (!auth.signedIn) {
    toast("Sign in to like.", "warn");
    openSignIn();
    return;
  }
  state.pendingLikes += 1;
  renderLikes();
  const btn = $("#like-btn");
  btn.classList.remove("pop");
  void btn.offsetWidth; // restart the animation
  btn.classList.add("pop");
  const heart = h("span", { class: "float-heart", "aria-hidden": "true" }, "♥");
  heart.style.left = `${20 + Math.random() * 60}%`;
  btn.append(heart);
  window.setTimeout(() => heart.remove(), 900);
  if (!likeTimer) likeTimer = window.setTimeout(flushLikes, 300);
}

function flushLikes() {
  likeTimer = null;
  if (!state.pendingLikes) return;
  const count = Math.min(50, state.pendingLikes);
  if (socket.send({ type: "like", session: sessionId, count })) {
    state.pendingLikes -= count;
    state.likes += count; // shown until the coalesced total catches up
  }
  if (state.pendingLikes) likeTimer = window.setTimeout(flushLikes, 300);
}

function renderLikes() {
  $("#likes").textContent = compact(state.likes + state.pendingLikes);
}

function compact(n) {
  return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

// ------------------------------------------------------------------ shop

function setPinned(product) {
  state.pinned = product || null;
  if (product) products.put(product);
  renderPinned();
}

function offerFor(productId) {
  let best = null;
  for (const o of state.offers.values()) {
    if (o.product !== productId) continue;
    if (!best || (best.remaining === 0 && o.remaining > 0)) best = o;
  }
  return best;
}

// ------------------------------------------------------------------ claims and waitlists (SPEC §13)

/** The open offer whose claim word `text` is: the server decides (its normaliser is stricter
 * about look-alikes); this only tells the page which offer a reply is about. */
function claimedOffer(text) {
  const t = text.trim().toLowerCase();
  for (const o of state.offers.values()) {
    if (o.claim_word && o.claim_word.trim().toLowerCase() === t) return o;
  }
  return null;
}

function claimHint(offer) {
  if (!offer.claim_word || offer.remaining <= 0) return null;
  return h("p", { class: "claim-hint", dataset: { claim: offer.claim_word } },
    "Type ", h("strong", { class: "claim-word" }, offer.claim_word), " in chat to claim one");
}

function joinWaitlist(offer) {
  if (!auth.signedIn) {
    openSignIn();
    return;
  }
  const ref = newRef("wait");
  state.waits.set(ref, offer.id);
  const sent = socket.send({ type: "waitlist", session: sessionId, offer: offer.id, ref });
  state.offerStatus.set(offer.id, { kind: "pending", text: sent ? "Joining the waitlist…" : "You are offline." });
  renderPinned();
  renderOffers();
}

/** The viewer's place on a waitlist, pushed whenever it moves (SPEC §13): its position while
 * waiting; a served place says nothing here (its `order` shows the reservation). */
function onWaitlistPlace(msg) {
  if (msg.session !== sessionId || msg.status === "served") return;
  state.offerStatus.set(msg.offer, msg.status === "waiting"
    ? { kind: "ok", text: `You are #${msg.position} on the waitlist` }
    : { kind: "error", text: "You left the waitlist: no unit came back in time" });
  renderPinned();
  renderOffers();
}

/** A refusal for a waitlist ref, or for a claim (a chat ref whose message was a claim word). */
function onSellingError(msg) {
  let offer = state.waits.get(msg.ref);
  const waiting = Boolean(offer);
  if (offer) state.waits.delete(msg.ref);
  else if (state.claims.has(msg.ref) && (CLAIM_ONLY.has(msg.code) || !state.chats.has(msg.ref))) {
    offer = state.claims.get(msg.ref);
    state.claims.delete(msg.ref);
  }
  if (!offer) return false;
  const text = waiting && msg.code === "bad_frame" ? "Units are left — buy instead"
    : BUY_ERRORS[msg.code] || msg.message || msg.code;
  state.offerStatus.set(offer, { kind: "error", text });
  renderPinned();
  renderOffers();
  return true;
}
const CLAIM_ONLY = new Set(["sold_out", "limit_reached", "offer_closed"]);

async function loadBundle() {
  if (!auth.signedIn || !(await hasRoute("GET", "/api/me/bundles"))) return;
  try {
    const all = await api("GET", "/api/me/bundles");
    state.bundle = (Array.isArray(all) ? all : []).find((b) => b.session === sessionId) || null;
  } catch { return; }
  const el = $("#bundle");
  const b = state.bundle;
  el.hidden = !b;
  if (!b) return;
  const currency = b.currency || (b.orders[0] && b.orders[0].currency) || "USD";
  el.textContent = `Your bundle: ${b.orders.length} order${b.orders.length === 1 ? "" : "s"} · ` +
    `${money(b.total_cents, currency)} · ${b.status === "closed" ? "closed — ships together" : "open until the show ends"}`;
  $("#orders-box").hidden = false;
}

function buyControls(offer, label) {
  const soldOut = offer.remaining <= 0;
  const closed = state.status && state.status !== "live";
  const st = state.offerStatus.get(offer.id);
  const limit = Math.max(1, Math.min(offer.per_user_limit || 1, Math.max(offer.remaining, 1), 10));
  const qtyId = `qty-${label}-${offer.id}`;
  const qty = h("select", { id: qtyId, class: "qty", disabled: soldOut || closed },
    Array.from({ length: limit }, (_, i) => h("option", { value: String(i + 1) }, String(i + 1))));
  const busy = st && st.kind === "pending";
  return h("div", { class: "buy-row" },
    h("label", { for: qtyId, class: "sr-only" }, "Quantity"),
    limit > 1 ? qty : null,
    h("button", {
      type: "button",
      class: `btn buy${soldOut ? " soldout" : ""}`,
      disabled: soldOut || closed || busy,
      "aria-label": soldOut ? "Sold out" : `Buy for ${money(offer.price_cents, offer.currency)}`,
      onclick: () => buy(offer, limit > 1 ? Number(qty.value) : 1),
    }, soldOut ? "Sold out" : busy ? "Reserving…" : "Buy now"),
    soldOut && !closed ? h("button", {
      type: "button", class: "btn small waitlist", disabled: busy,
      onclick: () => joinWaitlist(offer),
    }, "Join waitlist") : null,
    claimHint(offer),
    st ? h("p", { class: `order-status ${st.kind}`, role: "status" }, st.text) : null);
}

function stockLine(offer) {
  const pct = offer.quantity ? Math.round((offer.remaining / offer.quantity) * 100) : 0;
  return h("div", { class: "stock" },
    h("div", { class: "stock-text" },
      h("span", { class: "stock-left" }, offer.remaining > 0 ? `${offer.remaining} left` : "Sold out"),
      h("span", { class: "muted" }, ` of ${offer.quantity}`),
      h("span", { class: "countdown", dataset: { ends: offer.ends_at } }, `ends in ${videoCountdown(offer.ends_at)}`)),
    h("div", {
      class: "meter", role: "meter", "aria-label": "Stock left", "aria-valuemin": "0",
      "aria-valuemax": String(offer.quantity), "aria-valuenow": String(offer.remaining),
    }, h("span", { style: { width: `${pct}%` } })));
}

function renderPinned() {
  const card = $("#pinned");
  const p = state.pinned;
  if (!p) {
    fill(card, h("p", { class: "muted" }, "Nothing pinned yet — the host will pin a product soon."));
    card.classList.remove("has-offer");
    return;
  }
  const offer = offerFor(p.id);
  card.classList.toggle("has-offer", Boolean(offer));
  card.classList.toggle("soldout", Boolean(offer && offer.remaining <= 0));
  fill(card,
    h("div", { class: "pinned-head" },
      h("div", { class: "thumb", "aria-hidden": "true", style: { background: chatColor(p.id) } }, initials(p.title)),
      h("div", { class: "pinned-info" },
        h("span", { class: "eyebrow" }, "Pinned by the host"),
        h("h2", { class: "product-title" },
          h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); signal("product_click", p.id); } }, p.title)),
        h("p", { class: "price" },
          offer ? h("strong", { class: "deal" }, money(offer.price_cents, offer.currency || p.currency)) : h("strong", {}, money(p.price_cents, p.currency)),
          offer && offer.price_cents !== p.price_cents ? h("s", { class: "muted" }, money(p.price_cents, p.currency)) : null,
          p.category ? h("span", { class: "tag" }, p.category) : null))),
    offer ? stockLine(offer) : h("p", { class: "muted small" },
      p.stock > 0 ? `${p.stock} in stock · no offer open yet` : "Out of stock"),
    offer ? buyControls(offer, "pinned") : h("div", { class: "buy-row" },
      h("button", { type: "button", class: "btn buy", disabled: true, "aria-label": "Buy (no offer open)" }, "No offer open")));
}

function renderOffers() {
  const ul = $("#offers");
  // The offer shown on the pinned card is not repeated here.
  const featured = state.pinned ? offerFor(state.pinned.id) : null;
  const offers = [...state.offers.values()].filter((o) => o !== featured)
    .sort((a, b) => String(a.ends_at).localeCompare(String(b.ends_at)));
  $("#offers-box").hidden = !offers.length;
  if (!offers.length) {
    fill(ul);
    return;
  }
  fill(ul, offers.map((o) => {
    const li = h("li", { class: `offer${o.remaining <= 0 ? " soldout" : ""}`, dataset: { offer: o.id } },
      h("div", { class: "offer-head" },
        h("span", { class: "offer-title" }, "…"),
        h("strong", { class: "deal" }, money(o.price_cents, o.currency))),
      stockLine(o),
      buyControls(o, "list"));
    products(o.product).then((p) => {
      if (p) li.querySelector(".offer-title").textContent = p.title;
    });
    return li;
  }));
}

function upsertOffer(o) {
  if (!o || !o.id) return;
  if (o.status && o.status !== "open") {
    state.offers.delete(o.id);
  } else {
    const old = state.offers.get(o.id) || {};
    state.offers.set(o.id, { ...old, ...o });
  }
  renderPinned();
  renderOffers();
}

function buy(offer, qty) {
  if (!auth.signedIn) {
    state.offerStatus.set(offer.id, { kind: "error", text: "Sign in to buy." });
    renderPinned();
    renderOffers();
    openSignIn();
    return;
  }
  signal("add_to_cart", offer.product);
  const ref = newRef("buy");
  state.buys.set(ref, { offer: offer.id, qty, tries: 0 });
  const sent = socket.sendRetryable({ type: "buy", session: sessionId, offer: offer.id, qty, ref });
  state.offerStatus.set(offer.id, {
    kind: "pending", text: sent ? "Reserving…" : "Offline — your order is sent when you are back online.",
  });
  renderPinned();
  renderOffers();
}

function onOrder(msg) {
  const pending = state.buys.get(msg.ref);
  state.buys.delete(msg.ref);
  state.claims.delete(msg.ref);
  state.waits.delete(msg.ref);
  window.setTimeout(loadBundle, 300);
  const o = msg.order;
  if (!o) return;
  state.orders.set(o.id, o);
  renderOrders();
  const offerId = (pending && pending.offer) || o.offer;
  state.offerStatus.set(offerId, {
    kind: "ok",
    text: `✓ ${orderWord(o.status)} ${o.qty} × ${money(o.unit_cents, o.currency)} — order ${o.id}` +
      (o.status === "reserved" && o.expires_at ? ` · pay by ${clock(o.expires_at)}` : ""),
  });
  renderPinned();
  renderOffers();
}

function orderWord(status) {
  return { reserved: "Reserved", paid: "Paid", cancelled: "Cancelled", expired: "Expired" }[status] || status;
}

function onBuyError(msg) {
  const pending = state.buys.get(msg.ref);
  if (!pending) return false;
  if (msg.code === "unavailable" && pending.tries < 5) {
    // Safe to repeat: the same ref yields at most one order.
    pending.tries += 1;
    state.offerStatus.set(pending.offer, { kind: "pending", text: "The shop is busy — retrying…" });
    window.setTimeout(() => socket.sendRetryable({
      type: "buy", session: sessionId, offer: pending.offer, qty: pending.qty, ref: msg.ref,
    }), msg.retry_after_ms || 1000 * pending.tries);
  } else {
    state.buys.delete(msg.ref);
    socket.retryable.delete(msg.ref);
    state.offerStatus.set(pending.offer, { kind: "error", text: BUY_ERRORS[msg.code] || msg.message || msg.code });
    if (msg.code === "unauthorized") openSignIn();
  }
  renderPinned();
  renderOffers();
  return true;
}

function renderOrders() {
  const orders = [...state.orders.values()].filter((o) => o.session === undefined || o.session === sessionId)
    .sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")));
  $("#orders-box").hidden = !orders.length;
  fill($("#orders"), orders.slice(0, 10).map((o) => {
    const li = h("li", { class: "order", dataset: { order: o.id } },
      h("span", { class: `pill ${o.status}` }, orderWord(o.status)),
      h("span", { class: "order-title" }, `${o.qty} ×`),
      h("strong", {}, money(o.total_cents, o.currency)),
      h("span", { class: "muted small" }, o.id));
    products(o.product).then((p) => {
      if (p) li.querySelector(".order-title").textContent = `${o.qty} × ${p.title}`;
    });
    return li;
  }));
}

async function loadOrders() {
  if (!auth.signedIn) return;
  try {
    const data = await api("GET", "/api/me/orders");
    const items = Array.isArray(data) ? data : (data && (data.orders || data.items)) || [];
    for (const o of items) if (!state.orders.has(o.id)) state.orders.set(o.id, o);
    renderOrders();
  } catch { /* the list is a convenience; live orders still show */ }
}

function signal(name, product) {
  if (!auth.signedIn) return;
  socket.send({ type: "signal", session: sessionId, name, product: product || undefined });
}

everySecond(() => {
  for (const el of document.querySelectorAll(".countdown[data-ends]")) {
    el.textContent = `ends in ${videoCountdown(el.dataset.ends)}`;
  }
});

// ------------------------------------------------------------------ discovery

function normItems(list) {
  if (!list) return [];
  if (!Array.isArray(list)) list = list.items || list.products || list.hosts || [];
  return list.map((it) => {
    if (typeof it === "string") return { id: it };
    if (Array.isArray(it)) return { id: it[0], score: it[1] };
    return it;
  }).filter((it) => it && it.id);
}

function renderTrending(msg) {
  const prods = normItems(msg.products).slice(0, 6);
  const hosts = normItems(msg.hosts).slice(0, 4);
  const ul = $("#trending");
  if (!prods.length && !hosts.length) {
    fill(ul, h("li", { class: "empty muted" }, "Nothing trending yet."));
    return;
  }
  fill(ul,
    prods.map((it, i) => railItem({ kind: "product", ...it }, i + 1)),
    hosts.map((it) => railItem({ kind: "host", ...it })));
}

function renderFeed(msg) {
  const items = normItems(msg.items).slice(0, 8);
  const ul = $("#feed");
  if (!items.length) {
    fill(ul, h("li", { class: "empty muted" }, "Your feed is warming up."));
    return;
  }
  fill(ul, items.map((it) => railItem(it)));
}

function railItem(it, rank) {
  const why = whyText(it.why) || (typeof it.score === "number" ? `score ${it.score.toFixed(3)}` : "");
  const label = h("span", { class: "rail-title" }, it.title || it.name || it.id);
  const sub = h("span", { class: "rail-sub muted small" }, it.kind === "host" ? "host" : it.kind || "");
  const li = h("li", { class: `rail-item ${it.kind || ""}`, title: why || null },
    rank ? h("span", { class: "rank", "aria-hidden": "true" }, String(rank)) : null,
    h("div", { class: "rail-text" }, label, sub));
  if (it.kind === "session") {
    sessions(it.id).then((s) => {
      if (!s) return;
      label.replaceWith(h("a", { class: "rail-title", href: `/watch/${encodeURIComponent(s.id)}`, title: why || null }, s.title));
      sub.textContent = `@${s.creator}${s.status === "live" ? " · live" : ""}`;
    });
  } else if (it.kind === "product") {
    products(it.id).then((p) => {
      if (!p) return;
      label.textContent = p.title;
      sub.textContent = money(p.price_cents, p.currency);
    });
  } else if (it.kind === "host" || it.kind === "creator") {
    label.textContent = `@${it.id}`;
    liveSessionOf(it.id).then((s) => {
      if (!s) return;
      label.replaceWith(h("a", { class: "rail-title", href: `/watch/${encodeURIComponent(s.id)}` }, `@${it.id}`));
      sub.textContent = `live: ${s.title}`;
    });
  }
  return li;
}

let liveSessions = null; // {at, byCreator} — one list call serves every host in the rail

async function liveSessionOf(creator) {
  if (!liveSessions || Date.now() - liveSessions.at > 30000) {
    const pending = api("GET", "/api/sessions?status=live&limit=200")
      .then((list) => new Map((Array.isArray(list) ? list : []).map((s) => [s.creator, s])))
      .catch(() => new Map());
    liveSessions = { at: Date.now(), byCreator: pending };
  }
  return (await liveSessions.byCreator).get(creator) || null;
}

async function loadDiscovery() {
  if (!(await hasRoute("GET", "/api/trending"))) {
    socket.feedOn = false; // no ranking on this server: keep the rails' empty states
    return;
  }
  try {
    const [products_, hosts] = await Promise.all([
      api("GET", "/api/trending?kind=products"),
      api("GET", "/api/trending?kind=hosts"),
    ]);
    renderTrending({ products: products_, hosts });
  } catch { /* the live `trending` message fills it */ }
  if (!(await hasRoute("GET", "/api/feed"))) return;
  try {
    renderFeed(await api("GET", "/api/feed"));
  } catch { /* the live `feed` message fills it */ }
}

// ------------------------------------------------------------------ socket wiring

socket.on("joined", (msg) => {
  if (msg.session !== sessionId) return;
  if (videoDelayMs) {
    // After every (re)join: the delay is kept per connection and climbs from 0 at 1 s per s.
    const most = (socket.hello && socket.hello.limits && socket.hello.limits.max_viewer_delay_ms) || 15000;
    socket.reportDelay(sessionId, Math.min(videoDelayMs, most));
  }
  const s = msg.state || {};
  if (s.status) setStatus(s.status);
  state.viewers = s.viewers || 0;
  $("#viewers").textContent = compact(state.viewers);
  if (typeof s.likes === "number") state.likes = Math.max(s.likes, msg.recovered ? state.likes : 0);
  renderLikes();
  setSlow(s.slow);
  state.offers.clear();
  for (const o of s.offers || []) state.offers.set(o.id, o);
  if ("pinned" in s) state.pinned = s.pinned;
  renderPinned();
  renderOffers();
  if (!msg.recovered) {
    const shown = [...list.querySelectorAll("li[data-offset]")].map((li) => Number(li.dataset.offset));
    if (shown.length) {
      // A rejoin that could not resume: keep what is shown and catch up from the archive
      // (missed messages appear, messages removed meanwhile go).
      for (const m of s.chat || []) addChat(m);
      catchUp(Math.min(...shown) - 1, msg.offset);
    } else {
      resetChat(s.chat || []);
      // The snapshot's recent chat can be empty after a restart; the archive still has it.
      if (!(s.chat || []).length && msg.offset > 0) catchUp(Math.max(0, msg.offset - 100), msg.offset);
    }
  }
});

function catchUp(since, upTo) {
  replay(api, sessionId, since, upTo, (e) => {
    if (e.type !== "chat") return;
    if (e.removed) removeChat(e.offset);
    else addChat(e);
  }).catch(() => { /* the live log still flows */ });
}
socket.on("chat", (m) => { if (m.session === sessionId) addChat(m); });
socket.on("chat_removed", (m) => { if (m.session === sessionId) removeChat(m.target); });
socket.on("pinned", (m) => { if (m.session === sessionId) setPinned(m.product); });
socket.on("offer", (m) => { if (m.session === sessionId) upsertOffer(m); });
socket.on("offer_ended", (m) => {
  if (m.session !== sessionId) return;
  const id = typeof m.offer === "object" && m.offer ? m.offer.id : m.offer;
  state.offers.delete(id);
  renderPinned();
  renderOffers();
});
socket.on("sold", (m) => {
  if (m.session !== sessionId) return;
  const li = document.querySelector(`li.offer[data-offer="${m.offer}"]`);
  if (li) {
    li.classList.remove("flash");
    void li.offsetWidth;
    li.classList.add("flash");
  }
});
socket.on("stock", (m) => {
  if (m.session !== sessionId) return;
  const o = state.offers.get(m.offer);
  if (!o) return;
  o.remaining = m.remaining;
  renderPinned();
  renderOffers();
});
socket.on("viewers", (m) => {
  if (m.session !== sessionId) return;
  state.viewers = m.count;
  $("#viewers").textContent = compact(m.count);
});
socket.on("likes", (m) => {
  if (m.session !== sessionId) return;
  state.likes = m.total;
  renderLikes();
});
socket.on("status", (m) => {
  if (m.session !== sessionId) return;
  setStatus(m.status);
  if (m.status === "ended") {
    notice("The host ended this session. Thanks for watching!", "info", 0);
    window.setTimeout(loadBundle, 2000); // the bundle closes once the session ended
  }
});
socket.on("slow", (m) => {
  if (m.session !== sessionId) return;
  if (m.seconds === state.slow) return; // a shield toggle that left slow mode as it was
  setSlow(m.seconds);
  notice(m.seconds ? `Slow mode: one message every ${m.seconds}s.` : "Slow mode is off.", "info");
});
const giveaway = watchGiveaway({ socket, sessionId, auth, api, products, openSignIn });
socket.on("ack", onAck);
socket.on("held", onHeld);
socket.on("order", onOrder);
socket.on("waitlist_place", onWaitlistPlace);
socket.on("muted", (m) => {
  if (m.session && m.session !== sessionId) return;
  state.mutedUntil = m.until ? (m.until < 1e12 ? m.until * 1000 : m.until) : Infinity;
  notice(mutedText(), "warn", 0);
});
socket.on("error", (m) => {
  if (m.ref && giveaway.owns(m.ref)) return; // the giveaway panel shows it
  if (m.ref && onBuyError(m)) return;
  if (m.ref && onSellingError(m)) return;
  if (m.ref && auction.onError(m)) return;
  if (m.ref && reports.delete(m.ref)) {
    toast(`The report was not sent: ${m.message || m.code}`, "warn");
    return;
  }
  if (m.ref && state.chats.has(m.ref)) {
    if (m.code === "held") {
      onHeld(m);
      return;
    }
    if (m.code === "banned") state.mutedUntil = Infinity;
    chatFailed(m);
    return;
  }
  if (m.code === "not_found" && m.session === sessionId) {
    notice("This session does not exist.", "warn", 0);
  } else if (m.code === "unauthorized" && !auth.signedIn) {
    // A guest's like or chat; the UI already asks to sign in.
  } else if (m.code !== "unavailable" || m.ref) {
    toast(CHAT_ERRORS[m.code] || m.message || m.code, "warn");
  }
});
socket.on("feed", renderFeed);
socket.on("trending", renderTrending);
socket.on("offline", () => {
  // Pending chat whose fate is unknown: the resumed log tells (it matches by text), else it
  // was not sent.
  for (const [ref, li] of state.chats) {
    window.setTimeout(() => {
      if (state.chats.get(ref) === li && !li.dataset.offset) {
        chatFailed({ ref, code: "unavailable", message: "Not sent — the connection dropped" });
      }
    }, 8000);
  }
});

$("#chat-form").addEventListener("submit", sendChat);
$("#like-btn").addEventListener("click", like);

socket.join(sessionId);
socket.feedOn = true; // `feed {on: true}` after every connect: personal feed and trending
socket.connect();
loadSession();
loadOrders();
loadBundle();
loadDiscovery();
