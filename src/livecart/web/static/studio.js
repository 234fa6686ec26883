// Studio: products, sessions, the control room (go live, showcase, pin, flash offers,
// giveaways, end), the live panel with its chart, and the creator's transparent score.

import { Auth, LiveSocket, hasRoute, makeApi, money } from "./client.js";
import {
  $, chatColor, connectionBanner, countdown, everySecond, explain, fill, h, header, initials,
  lookup, toast,
} from "./app.js";
import { lineChart, sparkline } from "./chart.js";
import { mountStudioAuction } from "./studio-auction.js";
import { studioGiveaway } from "./giveaway.js";

const auth = new Auth("studio");
const api = makeApi(auth);
const me = auth.user ? auth.user.sub : null;
const canCreate = auth.signedIn && ["creator", "admin"].includes(auth.role);
const products = lookup(api, (id) => `/api/products/${encodeURIComponent(id)}`);
const socket = new LiveSocket(auth.token);
connectionBanner(socket);

const state = {
  sessions: [],
  productIds: [],
  current: null, // session object
  offers: new Map(), // open offers of the current session
  prices: new Map(), // offer id -> {price_cents, currency} (ended ones too, for revenue)
  viewers: 0,
  likes: 0,
  chatTimes: [],
  chatTotal: 0,
  orders: 0,
  units: 0,
  revenue: new Map(), // currency -> cents
  stats: null,
  samples: [],
};

const auctions = mountStudioAuction({
  socket, products, getSession: () => state.current, toMinor, call,
});

function renderHeader() {
  header({
    auth, page: "studio", session: state.current ? state.current.id : null, needs: ["creator", "admin"],
  });
}

// ------------------------------------------------------------------ helpers

/** "24.5" in `currency` → 2450 minor units, without floating-point rounding. */
function toMinor(text, currency) {
  const digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
    .maximumFractionDigits;
  const s = String(text).trim();
  if (!/^\d+(\.\d*)?$/.test(s)) return null;
  const [whole, frac = ""] = s.split(".");
  if (frac.length > digits && /[1-9]/.test(frac.slice(digits))) return null;
  return Number(whole) * 10 ** digits + Number((frac + "0".repeat(digits)).slice(0, digits) || 0);
}

function fromMinor(cents, currency) {
  const digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
    .maximumFractionDigits;
  return (cents / 10 ** digits).toFixed(digits);
}

function tags(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean).slice(0, 20);
}

function productsKey() {
  return `livecart.studio.products.${me}`;
}

function rememberProduct(id) {
  if (!state.productIds.includes(id)) state.productIds.unshift(id);
  try {
    window.localStorage.setItem(productsKey(), JSON.stringify(state.productIds.slice(0, 200)));
  } catch { /* storage disabled */ }
}

async function call(method, path, body, done) {
  try {
    const res = await api(method, path, body);
    if (done) toast(done, "ok", 2500);
    return res;
  } catch (exc) {
    toast(explain(exc), "warn", 6000);
    return null;
  }
}

// ------------------------------------------------------------------ sessions and products

async function loadSessions() {
  let all;
  try {
    all = await api("GET", "/api/sessions?limit=500");
  } catch (exc) {
    toast(`Sessions: ${explain(exc)}`, "warn");
    return;
  }
  state.sessions = (Array.isArray(all) ? all : []).filter((s) => s.creator === me);
  for (const s of state.sessions) for (const id of s.showcase || []) {
    if (!state.productIds.includes(id)) state.productIds.push(id);
  }
  renderSessions();
  renderProducts();
}

function renderSessions() {
  const ul = $("#sessions");
  if (!state.sessions.length) {
    fill(ul, h("li", { class: "empty muted" }, "No sessions yet — create one below."));
    return;
  }
  const order = { live: 0, scheduled: 1, ended: 2 };
  const sorted = [...state.sessions].sort((a, b) => order[a.status] - order[b.status]);
  fill(ul, sorted.slice(0, 30).map((s) => h("li", {},
    h("button", {
      type: "button",
      class: `pick${state.current && state.current.id === s.id ? " selected" : ""}`,
      "aria-pressed": state.current && state.current.id === s.id ? "true" : "false",
      "aria-label": `Open session ${s.title} (${s.status})`,
      onclick: () => select(s.id),
    },
    h("span", { class: `badge ${s.status}` }, s.status === "live" ? "LIVE" : s.status === "ended" ? "ENDED" : "SOON"),
    h("span", { class: "pick-title" }, s.title)))));
}

async function renderProducts() {
  const ul = $("#products");
  if (!state.productIds.length) {
    fill(ul, h("li", { class: "empty muted" }, "No products yet — create one below."));
    return;
  }
  const items = (await Promise.all(state.productIds.map((id) => products(id)))).filter(Boolean);
  const showcase = new Set((state.current && state.current.showcase) || []);
  fill(ul, items.map((p) => h("li", { class: "product-row" },
    h("span", { class: "thumb small", style: { background: chatColor(p.id) }, "aria-hidden": "true" }, initials(p.title)),
    h("div", { class: "product-text" },
      h("strong", {}, p.title),
      h("span", { class: "muted small" }, `${money(p.price_cents, p.currency)} · ${p.stock} in stock`)),
    state.current && state.current.status !== "ended" && !showcase.has(p.id)
      ? h("button", {
        type: "button", class: "btn small", "aria-label": `Add ${p.title} to the showcase`,
        onclick: () => addToShowcase(p.id),
      }, "Showcase")
      : null)));
  renderShowcaseSelect(items);
}

$("#product-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const currency = $("#product-currency").value;
  const price = toMinor($("#product-price").value, currency);
  if (price === null) {
    toast("Enter a price like 24.00", "warn");
    return;
  }
  const p = await call("POST", "/api/products", {
    title: $("#product-title").value.trim(),
    price_cents: price,
    currency,
    stock: Number($("#product-stock").value) || 0,
    category: $("#product-category").value.trim(),
    tags: tags($("#product-tags").value),
  }, "Product created");
  if (!p) return;
  products.put(p);
  rememberProduct(p.id);
  ev.target.reset();
  $("#product-stock").value = "50";
  renderProducts();
});

$("#session-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {
    title: $("#session-title-input").value.trim(),
    category: $("#session-category").value.trim(),
    tags: tags($("#session-tags").value),
  };
  const url = $("#session-playback").value.trim();
  if (url) body.playback_url = url;
  const s = await call("POST", "/api/sessions", body, "Session created");
  if (!s) return;
  state.sessions.unshift(s);
  ev.target.reset();
  $("#session-create").open = false;
  select(s.id);
});

// ------------------------------------------------------------------ control room

async function select(id) {
  const prev = state.current;
  if (prev && prev.id !== id) socket.leave(prev.id);
  let s;
  try {
    s = await api("GET", `/api/sessions/${encodeURIComponent(id)}`);
  } catch (exc) {
    toast(`Session: ${explain(exc)}`, "warn");
    return;
  }
  state.current = s;
  replaceSession(s);
  try { window.localStorage.setItem(`livecart.studio.session.${me}`, s.id); } catch { /* ignore */ }
  if (!prev || prev.id !== s.id) {
    resetLive();
    socket.join(s.id);
  }
  renderHeader();
  renderSessions();
  renderControl();
  renderProducts();
  loadStats();
}

function replaceSession(s) {
  const i = state.sessions.findIndex((x) => x.id === s.id);
  if (i >= 0) state.sessions[i] = s;
  else state.sessions.unshift(s);
}

async function refreshSession() {
  if (!state.current) return;
  try {
    const s = await api("GET", `/api/sessions/${encodeURIComponent(state.current.id)}`);
    state.current = s;
    replaceSession(s);
    renderSessions();
    renderControl();
    renderProducts();
  } catch { /* keep what we have */ }
}

let endArmed = null;

function renderControl() {
  const s = state.current;
  const grid = $("#control-grid");
  if (!s) {
    grid.hidden = true;
    $("#live-panel").hidden = true;
    return;
  }
  $("#control-heading").textContent = s.title;
  fill($("#control-meta"),
    h("span", { class: `badge ${s.status}` }, s.status === "live" ? "LIVE" : s.status === "ended" ? "ENDED" : "SCHEDULED"),
    " ",
    h("a", { href: `/watch/${encodeURIComponent(s.id)}`, target: "_blank", rel: "noopener" }, "Watch page"),
    " · ",
    h("a", {
      href: `/moderate/${encodeURIComponent(s.id)}#token=${encodeURIComponent(auth.token)}`,
      target: "_blank", rel: "noopener",
    }, "Moderation console"));
  const actions = [];
  if (s.status === "scheduled") {
    actions.push(h("button", {
      type: "button", class: "btn live", id: "go-live",
      onclick: async () => {
        const r = await call("POST", `/api/sessions/${encodeURIComponent(s.id)}/start`, undefined, "You are live!");
        if (r) { state.current = r; refreshSession(); }
      },
    }, "Go live"));
  }
  if (s.status !== "ended") {
    actions.push(h("button", {
      type: "button", class: "btn danger-outline", id: "end-session",
      onclick: async (ev) => {
        if (!endArmed) {
          ev.currentTarget.textContent = "Click again to end";
          endArmed = window.setTimeout(() => { endArmed = null; renderControl(); }, 4000);
          return;
        }
        window.clearTimeout(endArmed);
        endArmed = null;
        const r = await call("POST", `/api/sessions/${encodeURIComponent(s.id)}/end`, undefined, "Session ended");
        if (r) refreshSession();
      },
    }, "End session"));
  }
  fill($("#control-actions"), actions);
  grid.hidden = s.status === "ended";
  $("#live-panel").hidden = s.status === "scheduled";
  renderShowcase();
  renderOffers();
  renderTiles();
}

async function renderShowcase() {
  const s = state.current;
  const ul = $("#showcase");
  const ids = (s && s.showcase) || [];
  if (!ids.length) {
    fill(ul, h("li", { class: "empty muted" }, "Add products to show them to viewers."));
    renderOfferSelect([]);
    return;
  }
  const items = (await Promise.all(ids.map((id) => products(id)))).filter(Boolean);
  if (state.current !== s) return;
  fill(ul, items.map((p) => {
    const pinned = s.pinned_product === p.id;
    return h("li", { class: `showcase-item${pinned ? " pinned" : ""}` },
      h("span", { class: "thumb small", style: { background: chatColor(p.id) }, "aria-hidden": "true" }, initials(p.title)),
      h("div", { class: "product-text" },
        h("strong", {}, p.title),
        h("span", { class: "muted small" }, `${money(p.price_cents, p.currency)} · ${p.stock} in stock`)),
      pinned ? h("span", { class: "pill ok" }, "Pinned") : null,
      h("button", {
        type: "button", class: "btn small", "aria-label": pinned ? `Unpin ${p.title}` : `Pin ${p.title}`,
        onclick: () => pin(pinned ? null : p.id),
      }, pinned ? "Unpin" : "Pin"));
  }));
  renderOfferSelect(items);
}

function renderShowcaseSelect(items) {
  const s = state.current;
  const sel = $("#showcase-product");
  const inShowcase = new Set((s && s.showcase) || []);
  const options = items.filter((p) => !inShowcase.has(p.id));
  fill(sel, options.length
    ? options.map((p) => h("option", { value: p.id }, `${p.title} (${money(p.price_cents, p.currency)})`))
    : h("option", { value: "" }, "All your products are showcased"));
  sel.disabled = !options.length;
}

function renderOfferSelect(items) {
  auctions.setProducts(items);
  giveaways.products(items);
  const sel = $("#offer-product");
  const before = sel.value;
  fill(sel, items.length
    ? items.map((p) => h("option", { value: p.id }, `${p.title} — ${p.stock} in stock`))
    : h("option", { value: "" }, "Showcase a product first"));
  if (items.some((p) => p.id === before)) sel.value = before;
  else if (state.current && state.current.pinned_product && items.some((p) => p.id === state.current.pinned_product)) {
    sel.value = state.current.pinned_product;
  }
  // Suggest a price only for a newly selected product: a re-render (the show going live,
  // stock moving) must not overwrite what the creator has typed.
  if (sel.value !== before || !$("#offer-price").value) prefillOffer();
}

async function prefillOffer() {
  const p = await products($("#offer-product").value);
  if (!p) return;
  // Suggest 20% off the list price.
  $("#offer-price").value = fromMinor(Math.round(p.price_cents * 0.8), p.currency);
  $("#offer-qty").value = String(Math.max(1, Math.min(Number($("#offer-qty").value) || 10, p.stock || 1)));
}

$("#offer-product").addEventListener("change", prefillOffer);

const giveaways = studioGiveaway({ socket, call, current: () => state.current, products });

async function addToShowcase(productId) {
  if (!state.current) {
    toast("Pick a session first.", "warn");
    return;
  }
  const r = await call("POST", `/api/sessions/${encodeURIComponent(state.current.id)}/products`,
    { product_id: productId }, "Added to the showcase");
  if (r) {
    state.current = r;
    replaceSession(r);
    renderControl();
    renderProducts();
  }
}

$("#showcase-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("#showcase-product").value;
  if (id) addToShowcase(id);
});

async function pin(productId) {
  const r = await call("POST", `/api/sessions/${encodeURIComponent(state.current.id)}/pin`,
    { product_id: productId }, productId ? "Pinned" : "Unpinned");
  if (r) {
    state.current = r;
    replaceSession(r);
    renderShowcase();
  }
}

$("#offer-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const s = state.current;
  const p = await products($("#offer-product").value);
  if (!s || !p) {
    toast("Showcase a product first.", "warn");
    return;
  }
  const price = toMinor($("#offer-price").value, p.currency);
  if (price === null) {
    toast("Enter a price like 19.99", "warn");
    return;
  }
  const claimWord = $("#offer-claim").value.trim();
  const o = await call("POST", `/api/sessions/${encodeURIComponent(s.id)}/offers`, {
    product_id: p.id,
    price_cents: price,
    quantity: Number($("#offer-qty").value),
    per_user_limit: Number($("#offer-limit").value),
    duration_s: Number($("#offer-duration").value),
    ...(claimWord ? { claim_word: claimWord } : {}),
  }, "Flash offer is open");
  if (!o) return;
  $("#offer-claim").value = "";
  upsertOffer(o);
  products.forget(p.id); // its stock moved into the offer
  renderShowcase();
  renderProducts();
});

function upsertOffer(o) {
  if (!o || !o.id) return;
  state.prices.set(o.id, { price_cents: o.price_cents, currency: o.currency || "USD" });
  if (o.status && o.status !== "open") state.offers.delete(o.id);
  else state.offers.set(o.id, { ...(state.offers.get(o.id) || {}), ...o });
  renderOffers();
}

function renderOffers() {
  const ul = $("#offers");
  const offers = [...state.offers.values()];
  if (!offers.length) {
    fill(ul, h("li", { class: "empty muted" }, "No open offers."));
    return;
  }
  fill(ul, offers.map((o) => {
    const li = h("li", { class: `offer${o.remaining <= 0 ? " soldout" : ""}`, dataset: { offer: o.id } },
      h("div", { class: "offer-head" },
        h("span", { class: "offer-title" }, "…"),
        h("strong", { class: "deal" }, money(o.price_cents, o.currency))),
      h("div", { class: "offer-line muted small" },
        h("span", {}, `${o.remaining} / ${o.quantity} left · max ${o.per_user_limit} each`),
        o.claim_word ? h("span", { class: "claim-word" }, ` · claim word “${o.claim_word}”`) : null,
        h("span", { class: "countdown", dataset: { ends: o.ends_at } }, `ends in ${countdown(o.ends_at)}`)),
      h("button", {
        type: "button", class: "btn small danger-outline", "aria-label": "End this offer",
        onclick: async () => {
          const r = await call("POST", `/api/offers/${encodeURIComponent(o.id)}/end`, undefined, "Offer ended");
          if (r) {
            state.offers.delete(o.id);
            renderOffers();
            products.forget(o.product);
            renderShowcase();
          }
        },
      }, "End offer"));
    products(o.product).then((p) => { if (p) li.querySelector(".offer-title").textContent = p.title; });
    return li;
  }));
}

everySecond(() => {
  for (const el of document.querySelectorAll(".countdown[data-ends]")) {
    el.textContent = `ends in ${countdown(el.dataset.ends)}`;
  }
});

// ------------------------------------------------------------------ live panel

function resetLive() {
  state.offers.clear();
  state.viewers = 0;
  state.likes = 0;
  state.chatTimes = [];
  state.chatTotal = 0;
  state.orders = 0;
  state.units = 0;
  state.revenue = new Map();
  state.stats = null;
  state.samples = [];
}

function chatPerMin() {
  const cutoff = Date.now() - 60000;
  while (state.chatTimes.length && state.chatTimes[0] < cutoff) state.chatTimes.shift();
  return state.chatTimes.length;
}

function firstNumber(obj, keys) {
  if (!obj) return null;
  for (const k of keys) if (typeof obj[k] === "number") return obj[k];
  return null;
}

function metrics() {
  const st = state.stats;
  const orders = Math.max(state.orders, firstNumber(st, ["orders", "orders_count", "order_count"]) ?? 0);
  let revenue = 0;
  let currency = "USD";
  for (const [cur, cents] of state.revenue) { if (cents >= revenue) { revenue = cents; currency = cur; } }
  const statRevenue = firstNumber(st, ["revenue_cents", "gmv_cents", "revenue"]);
  if (statRevenue !== null && statRevenue >= revenue) {
    revenue = statRevenue;
    if (st.currency) currency = st.currency;
  }
  return {
    viewers: state.viewers,
    likes: Math.max(state.likes, firstNumber(st, ["likes", "like_total"]) ?? 0),
    chat: chatPerMin(),
    orders,
    revenue,
    currency,
  };
}

function renderTiles() {
  const m = metrics();
  const tiles = [
    ["viewers", "Viewers", String(m.viewers), "viewers"],
    ["likes", "Likes", compact(m.likes), "likes"],
    ["chat", "Chat / min", String(m.chat), "chat"],
    ["orders", "Orders", String(m.orders), "orders"],
    ["revenue", "Revenue", money(m.revenue, m.currency), "revenue"],
  ];
  fill($("#tiles"), tiles.map(([key, label, value, series]) => h("div", { class: `tile tile-${key}`, dataset: { metric: key } },
    h("span", { class: "tile-label" }, label),
    h("strong", { class: "tile-value" }, value),
    sparkline(state.samples.slice(-60).map((s) => s[series])))));
  // The window grows with the data, from two minutes up to ten.
  const first = state.samples.length ? state.samples[0].t : Date.now();
  const windowMs = Math.min(600000, Math.max(120000, Math.ceil((Date.now() - first + 15000) / 60000) * 60000));
  // Drawn at the element's own width, so axis labels keep their size on a phone.
  const chart = $("#chart");
  const width = Math.max(300, Math.round(chart.clientWidth || 640));
  fill(chart, lineChart(state.samples, { windowMs, width, height: width < 500 ? 180 : 220 }));
  $("#chart-caption").textContent = `Last ${windowMs / 60000} minutes, sampled every 2 seconds.`;
}

function compact(n) {
  return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

function sample() {
  if (!state.current || state.current.status === "scheduled") return;
  const m = metrics();
  state.samples.push({ t: Date.now(), ...m });
  const cutoff = Date.now() - 600000;
  while (state.samples.length && state.samples[0].t < cutoff) state.samples.shift();
  renderTiles();
}
window.setInterval(sample, 2000);

let statsTimer = null;
async function loadStats() {
  window.clearTimeout(statsTimer);
  statsTimer = window.setTimeout(loadStats, 5000);
  const s = state.current;
  if (!s || document.hidden) return;
  if (!(await hasRoute("GET", "/api/sessions/{id}/stats"))) {
    window.clearTimeout(statsTimer); // the panel counts from the timeline and live events
    return;
  }
  try {
    const data = await api("GET", `/api/sessions/${encodeURIComponent(s.id)}/stats`);
    if (state.current === s) state.stats = data;
  } catch (exc) {
    if (exc.status === 404 || exc.status === 403) window.clearTimeout(statsTimer);
  }
}

/**
 * History from before the page was opened, read from the replay timeline up to the joined
 * position (live events after it are counted as they arrive): orders and revenue from `sold`
 * and `offer` events, and the chat rate of the last ten minutes for the chart.
 */
async function backfill(session, upTo) {
  const id = encodeURIComponent(session.id);
  const chatTimes = [];
  const prices = new Map();
  const sold = [];
  let since = 0;
  try {
    for (let page = 0; page < 30 && since < upTo; page += 1) {
      const data = await api("GET", `/api/sessions/${id}/timeline?since=${since}&limit=1000`);
      const events = (data && data.events) || [];
      if (!events.length) break;
      for (const e of events) {
        if (e.offset > upTo) break;
        if (e.type === "chat" && !e.removed && typeof e.at === "number") chatTimes.push(e.at);
        else if (e.type === "offer" && e.id) prices.set(e.id, { price_cents: e.price_cents, currency: e.currency || "USD" });
        else if (e.type === "sold") sold.push(e);
      }
      if (events[events.length - 1].offset >= upTo || data.next_since <= since) break;
      since = data.next_since;
    }
  } catch {
    return; // the live panel still counts from now on
  }
  if (state.current !== session) return;
  for (const [k, v] of prices) if (!state.prices.has(k)) state.prices.set(k, v);
  for (const e of sold) {
    state.orders += 1;
    state.units += e.qty || 1;
    const price = state.prices.get(e.offer);
    if (price) state.revenue.set(price.currency, (state.revenue.get(price.currency) || 0) + price.price_cents * (e.qty || 1));
  }
  const now = Date.now();
  const recent = chatTimes.filter((t) => t >= now - 600000 && t <= now);
  state.chatTimes = [...recent.filter((t) => t >= now - 60000), ...state.chatTimes].sort((a, b) => a - b);
  if (recent.length) {
    // Chat-rate points every 10 s from the first recent message (viewers are unknown there).
    const past = [];
    let j = 0;
    let k = 0;
    const start = Math.max(recent[0], now - 600000);
    const firstLive = state.samples.length ? state.samples[0].t : now;
    for (let t = start; t < firstLive - 5000; t += 10000) {
      while (j < recent.length && recent[j] <= t) j += 1;
      while (k < recent.length && recent[k] <= t - 60000) k += 1;
      past.push({ t, viewers: null, chat: j - k, orders: null, likes: null, revenue: null });
    }
    state.samples = [...past, ...state.samples];
  }
  renderTiles();
}

socket.on("joined", (m) => {
  if (!state.current || m.session !== state.current.id) return;
  if (!m.recovered) backfill(state.current, m.offset);
  const s = m.state || {};
  state.viewers = s.viewers || 0;
  state.likes = Math.max(state.likes, s.likes || 0);
  state.offers.clear();
  for (const o of s.offers || []) upsertOffer(o);
  if (s.status && s.status !== state.current.status) refreshSession();
  renderOffers();
  renderTiles();
});
socket.on("viewers", (m) => { if (state.current && m.session === state.current.id) state.viewers = m.count; });
socket.on("likes", (m) => { if (state.current && m.session === state.current.id) state.likes = m.total; });
socket.on("chat", (m) => {
  if (!state.current || m.session !== state.current.id || m.removed) return;
  state.chatTimes.push(Date.now());
  state.chatTotal += 1;
});
socket.on("offer", (m) => { if (state.current && m.session === state.current.id) upsertOffer(m); });
socket.on("offer_ended", (m) => {
  if (!state.current || m.session !== state.current.id) return;
  const id = typeof m.offer === "object" && m.offer ? m.offer.id : m.offer;
  const o = state.offers.get(id);
  state.offers.delete(id);
  renderOffers();
  if (o) { products.forget(o.product); renderShowcase(); renderProducts(); }
});
socket.on("stock", (m) => {
  const o = state.offers.get(m.offer);
  if (o) { o.remaining = m.remaining; renderOffers(); }
});
socket.on("sold", (m) => {
  if (!state.current || m.session !== state.current.id) return;
  state.orders += 1;
  state.units += m.qty || 1;
  const price = state.prices.get(m.offer);
  if (price) {
    state.revenue.set(price.currency, (state.revenue.get(price.currency) || 0) + price.price_cents * (m.qty || 1));
  }
});
socket.on("status", (m) => { if (state.current && m.session === state.current.id) refreshSession(); });
socket.on("pinned", (m) => {
  if (!state.current || m.session !== state.current.id) return;
  state.current.pinned_product = m.product ? m.product.id : null;
  renderShowcase();
});

// ------------------------------------------------------------------ score

async function loadScore() {
  const box = $("#score-body");
  if (!(await hasRoute("GET", "/api/creators/{id}/score"))) {
    fill(box, h("p", { class: "muted" }, "This server does not compute creator scores."));
    return;
  }
  let sc;
  try {
    sc = await api("GET", `/api/creators/${encodeURIComponent(me)}/score`);
  } catch (exc) {
    fill(box, h("p", { class: "muted" }, `Score unavailable — ${explain(exc)}`));
    return;
  }
  const total = typeof sc.total === "number" ? sc.total : 0;
  const pct = Math.round(total * 100);
  const chip = $("#score-chip");
  chip.hidden = false;
  fill(chip, h("span", { class: "muted small" }, "Creator score"), h("strong", {}, String(pct)));
  const comps = Array.isArray(sc.components) ? sc.components : [];
  fill(box,
    h("div", { class: "score-total" },
      ring(total),
      h("div", {},
        h("p", { class: "big" }, `${pct}`, h("span", { class: "muted" }, " / 100")),
        h("p", { class: "muted small" }, sc.formula || "The weighted sum of the components below."))),
    h("div", { class: "table-wrap" },
      h("table", { class: "score-table" },
        h("caption", { class: "sr-only" }, "Score components"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Component"), h("th", { scope: "col" }, "Value"),
          h("th", { scope: "col" }, "Weight"), h("th", { scope: "col" }, "Points"))),
        h("tbody", {}, comps.map((c) => h("tr", { title: describe(c) },
          h("th", { scope: "row" }, cap(c.name)),
          h("td", {}, h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: { width: `${Math.round((c.value || 0) * 100)}%` } })),
            h("span", { class: "small" }, ` ${Math.round((c.value || 0) * 100)}%`)),
          h("td", {}, `${Math.round((c.weight || 0) * 100)}%`),
          h("td", {}, ((c.contribution || 0) * 100).toFixed(1))))))),
    h("p", { class: "muted small" }, "Hover a row for its formula, inputs and prior. There is no hidden component."));
}

function describe(c) {
  const kv = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(4) : v}`).join(", ");
  return [c.formula, c.inputs ? `inputs: ${kv(c.inputs)}` : "", c.prior ? `prior: ${kv(c.prior)}` : ""]
    .filter(Boolean).join("\n");
}

function cap(s) {
  return String(s || "").replace(/^./, (c) => c.toUpperCase());
}

function ring(value) {
  const r = 26;
  const len = 2 * Math.PI * r;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 64 64");
  svg.setAttribute("class", "ring");
  svg.setAttribute("aria-hidden", "true");
  const mk = (cls, dash) => {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", "32"); c.setAttribute("cy", "32"); c.setAttribute("r", String(r));
    c.setAttribute("class", cls);
    if (dash !== undefined) c.setAttribute("stroke-dasharray", `${dash} ${len}`);
    return c;
  };
  svg.append(mk("ring-bg"), mk("ring-fg", Math.max(0, Math.min(1, value)) * len));
  return svg;
}

// ------------------------------------------------------------------ start

async function start() {
  if (!canCreate) {
    $("#signin-needed").hidden = false;
    if (auth.signedIn) {
      $("#signin-needed").querySelector("h2").textContent = `Signed in as ${auth.role} — the studio needs a creator`;
    }
    for (const f of document.querySelectorAll(".studio-side form, #control form")) {
      for (const el of f.elements) el.disabled = true;
    }
    return;
  }
  $("#studio-title").textContent = `${auth.user.name || me}'s studio`;
  $("#studio-sub").textContent = `@${me} · create products and sessions, go live, sell.`;
  try {
    state.productIds = JSON.parse(window.localStorage.getItem(productsKey()) || "[]");
  } catch { state.productIds = []; }
  socket.connect();
  await loadSessions();
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  let pick = params.get("session");
  if (!pick) {
    try { pick = window.localStorage.getItem(`livecart.studio.session.${me}`); } catch { pick = null; }
  }
  if (!pick || !state.sessions.some((s) => s.id === pick)) {
    const live = state.sessions.find((s) => s.status === "live") || state.sessions[0];
    pick = live ? live.id : null;
  }
  if (pick) await select(pick);
  loadScore();
  window.setInterval(loadScore, 30000);
}

renderHeader();
start();
