// The studio's auction panel (SPEC §11): create an auction with every option (start, the
// default increment table, a fixed step or a table of its own, duration, mode, buy-now,
// hidden reserve, opening later for pre-bids) and follow the running one.

import { money } from "./client.js";
import { $, fill, h } from "./app.js";
import { END_REASONS, auctionClock, minimumBid } from "./auction.js";

/**
 * `getSession()` is the session in the control room; `toMinor(text, currency)` parses an
 * amount; `call(method, path, body, done)` is the studio's REST call (toasts on failure).
 * Returns `{setProducts(items)}`, fed with the showcase.
 */
export function mountStudioAuction({ socket, products, getSession, toMinor, call }) {
  const form = $("#auction-form");
  const live = $("#auction-live");
  const st = { auction: null, currency: "USD", title: "" };

  function showSteps() {
    const kind = $("#auction-steps").value;
    $("#auction-step-field").hidden = kind !== "fixed";
    $("#auction-table-field").hidden = kind !== "table";
  }
  $("#auction-steps").addEventListener("change", showSteps);
  showSteps();

  /** "10:0.50\n50:1\n*:5" → [[1000, 50], [5000, 100], [null, 500]], or null. */
  function parseTable(text, currency) {
    const rows = [];
    for (const line of text.split(/[\n,;]+/).map((l) => l.trim()).filter(Boolean)) {
      const [upTo, step] = line.split(":").map((x) => (x || "").trim());
      const stepCents = toMinor(step, currency);
      const upToCents = upTo === "*" || upTo === "" ? null : toMinor(upTo, currency);
      if (!stepCents || (upToCents === null && upTo !== "*" && upTo !== "")) return null;
      rows.push([upToCents, stepCents]);
    }
    return rows.length ? rows : null;
  }

  function setProducts(items) {
    const sel = $("#auction-product");
    const before = sel.value;
    fill(sel, items.length
      ? items.map((p) => h("option", { value: p.id }, `${p.title} — ${p.stock} in stock`))
      : h("option", { value: "" }, "Showcase a product first"));
    if (items.some((p) => p.id === before)) sel.value = before;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const s = getSession();
    const p = await products($("#auction-product").value);
    const note = $("#auction-form-note");
    if (!s || !p) {
      note.hidden = false;
      note.textContent = "Showcase a product first.";
      return;
    }
    const cur = p.currency || "USD";
    const body = {
      product_id: p.id,
      start_cents: toMinor($("#auction-start").value, cur),
      duration_s: Number($("#auction-duration").value),
      mode: $("#auction-mode").value,
      starts_in_s: Math.max(0, Math.round(Number($("#auction-starts-in").value) || 0)),
    };
    const problems = [];
    if (body.start_cents === null) problems.push("a starting bid like 10.00");
    const steps = $("#auction-steps").value;
    if (steps === "fixed") {
      body.min_increment_cents = toMinor($("#auction-step").value, cur);
      if (!body.min_increment_cents) problems.push("a bid step like 0.50");
    } else if (steps === "table") {
      body.increments = parseTable($("#auction-table").value, cur);
      if (!body.increments) problems.push("a step table like 10:0.50, *:1");
    }
    for (const [id, key] of [["#auction-buy-now", "buy_now_cents"], ["#auction-reserve", "reserve_cents"]]) {
      const text = $(id).value.trim();
      if (!text) continue;
      body[key] = toMinor(text, cur);
      if (body[key] === null) problems.push(`an amount like 50.00 for ${key === "buy_now_cents" ? "buy-now" : "the reserve"}`);
    }
    if (problems.length) {
      note.hidden = false;
      note.textContent = `Enter ${problems.join(", ")}.`;
      return;
    }
    note.hidden = true;
    const made = await call("POST", `/api/sessions/${encodeURIComponent(s.id)}/auctions`, body,
      body.starts_in_s ? "Auction scheduled" : "Auction is open");
    if (!made) return;
    products.forget(p.id); // one unit went into the lot
    set(made);
  });

  function set(a) {
    if (!a || !a.id) return;
    st.auction = { ...(st.auction && st.auction.id === a.id ? st.auction : {}), ...a };
    products(a.product).then((p) => {
      if (p && st.auction && st.auction.product === p.id) {
        st.currency = p.currency || "USD";
        st.title = p.title;
        render();
      }
    });
    render();
  }

  function render() {
    const a = st.auction;
    if (!a) {
      fill(live, h("p", { class: "muted small" }, "No auction running."));
      return;
    }
    const t = auctionClock(a);
    const cur = st.currency;
    const status = t.phase === "ended" ? `Ended — ${END_REASONS[a.reason] || a.reason || "closed"}`
      : t.phase === "scheduled" ? "Scheduled" : t.phase === "closing" ? "Closing" : "Open";
    fill(live, h("div", { class: "offer auction-row", dataset: { auction: a.id } },
      h("div", { class: "offer-head" },
        h("span", { class: "offer-title" }, st.title || "…"),
        h("span", { class: `pill auction-status ${t.phase}` }, status),
        h("strong", { class: "deal" }, money(a.current_cents ?? a.start_cents, cur))),
      h("div", { class: "offer-line muted small" },
        h("span", {}, a.current_cents === null || a.current_cents === undefined
          ? `starting bid · next ${money(minimumBid(a), cur)}`
          : `${a.bids} bid${a.bids === 1 ? "" : "s"} · @${a.leader} leads · next ${money(minimumBid(a), cur)}`),
        a.reserve_met === false ? h("span", { class: "pill warn" }, "Reserve not met") : null,
        a.buy_now_cents ? h("span", {}, `buy-now ${money(a.buy_now_cents, cur)}`) : null,
        t.phase === "ended" ? null : h("span", { class: "auction-clock" }, t.text))));
  }

  const mine = (m) => {
    const s = getSession();
    return s && m.session === s.id;
  };
  socket.on("joined", (m) => {
    if (!mine(m)) return;
    const a = (m.state || {}).auction;
    if (a) set(a);
    else if (!st.auction || st.auction.session !== m.session) { st.auction = null; render(); }
  });
  socket.on("auction", (m) => { if (mine(m)) set(m); });
  socket.on("bid", (m) => {
    if (!mine(m) || !st.auction || st.auction.id !== m.auction) return;
    Object.assign(st.auction, {
      current_cents: m.amount_cents, leader: m.user, bids: m.seq ?? st.auction.bids,
      ends_at: m.ends_at || st.auction.ends_at,
    });
    if (typeof m.reserve_met === "boolean") st.auction.reserve_met = m.reserve_met;
    render();
  });
  socket.on("auction_ended", (m) => {
    if (!mine(m) || !st.auction || st.auction.id !== m.auction) return;
    Object.assign(st.auction, {
      status: "ended", reason: m.reason || "time", leader: m.winner,
      current_cents: m.amount_cents ?? st.auction.current_cents,
    });
    render();
  });
  window.setInterval(() => { if (st.auction && st.auction.status !== "ended") render(); }, 1000);
  render();
  return { setProducts };
}
