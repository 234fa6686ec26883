// Giveaways on the pages (SPEC §13): the watch page's panel (enter, commitment, the draw and
// an in-browser check of it) and the studio's panel (start one, follow it).

import { newRef } from "./client.js";
import { $, countdown, everySecond, fill, h } from "./app.js";

// ------------------------------------------------------------------ the check

async function sha256hex(text) {
  const digest = await window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Checks a finished giveaway as `GET /api/giveaways/{id}` returns it, the way anyone can:
 * SHA-256(seed) must equal the commitment, and the winners must be the `winners` entrants
 * with the smallest hex(SHA-256(seed + ":" + user)). Resolves to a list of problems (empty: OK).
 */
export async function verifyDraw(g, seenCommitment) {
  if (!window.crypto || !window.crypto.subtle) {
    return ["this browser has no crypto.subtle here (it needs https or localhost)"];
  }
  if (!g || g.status !== "ended" || typeof g.seed !== "string" || !Array.isArray(g.entrants)) {
    return ["the giveaway has not been drawn yet"];
  }
  const problems = [];
  if ((await sha256hex(g.seed)) !== g.commitment) problems.push("SHA-256(seed) ≠ commitment");
  if (seenCommitment && seenCommitment !== g.commitment) {
    problems.push("the commitment differs from the one shown at the start");
  }
  const keyed = await Promise.all([...new Set(g.entrants)].map(async (u) => [await sha256hex(`${g.seed}:${u}`), u]));
  keyed.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1));
  const expected = keyed.slice(0, g.winners).map(([, u]) => u);
  if (JSON.stringify(expected) !== JSON.stringify(g.drawn || [])) {
    problems.push(`the winners should be ${expected.join(", ") || "nobody"}`);
  }
  return problems;
}

// ------------------------------------------------------------------ watch page

const ENTER_ERRORS = {
  unauthorized: "Sign in to enter.",
  forbidden: "You cannot enter this giveaway.",
  offer_closed: "This giveaway has ended.",
  not_live: "The session is not live.",
  not_found: "This giveaway no longer exists.",
};

/**
 * The watch page's giveaway card (`#giveaway-box`). Returns `{owns(ref)}` so the page's own
 * error handler leaves this panel's answers alone.
 */
export function watchGiveaway({ socket, sessionId, auth, api, products, openSignIn }) {
  const box = $("#giveaway-box");
  const me = auth.user ? auth.user.sub : null;
  const refs = new Map(); // ref -> giveaway id, while unanswered
  const answered = new Set(); // refs this panel has answered (the page's handlers skip them)
  const st = { open: null, ended: null, entered: new Set(), note: null, check: null, seen: new Map() };

  function enter() {
    const g = st.open;
    if (!g) return;
    if (!auth.signedIn) {
      st.note = { kind: "error", text: "Sign in to enter." };
      render();
      openSignIn();
      return;
    }
    const ref = newRef("enter");
    refs.set(ref, g.id);
    // Entering is idempotent per (user, giveaway): safe to resend after a reconnect.
    const sent = socket.sendRetryable({ type: "enter", session: sessionId, giveaway: g.id, ref });
    st.note = { kind: "pending", text: sent ? "Entering…" : "Offline — you enter when back online." };
    render();
  }

  async function check() {
    const g = st.ended;
    if (!g) return;
    st.check = { kind: "pending", text: "Checking…" };
    render();
    try {
      const full = await api("GET", `/api/giveaways/${encodeURIComponent(g.giveaway)}`);
      const problems = await verifyDraw(full, st.seen.get(g.giveaway));
      st.check = problems.length
        ? { kind: "error", text: `✗ ${problems.join("; ")}` }
        : { kind: "ok", text: `✓ Verified: SHA-256(seed) matches the commitment, and the ${full.drawn.length} winner(s) of ${full.entrants.length} entrant(s) follow from the seed.` };
    } catch (exc) {
      st.check = { kind: "error", text: `Could not check: ${exc.message || exc}` };
    }
    render();
  }

  function line(note) {
    return note ? h("p", { class: `giveaway-note ${note.kind}`, role: "status" }, note.text) : null;
  }

  function render() {
    if (!box) return;
    const g = st.open;
    const e = st.ended;
    box.hidden = !g && !e;
    if (g) {
      const entered = st.entered.has(g.id);
      const title = h("span", { class: "giveaway-title" }, `${g.winners} × …`);
      products(g.product).then((p) => { if (p) title.textContent = `${g.winners} × ${p.title}`; });
      fill(box,
        h("div", { class: "card-head" },
          h("h2", { id: "giveaway-heading" }, "🎁 Giveaway"),
          h("span", { class: "pill warn countdown-gw", dataset: { ends: g.ends_at } }, `ends in ${countdown(g.ends_at)}`)),
        h("p", {}, title, h("span", { class: "muted small" },
          g.eligibility === "buyers" ? " · for buyers in this show" : " · for everyone watching")),
        h("button", {
          type: "button", id: "giveaway-enter", class: "btn primary", disabled: entered,
          onclick: enter,
        }, entered ? "Entered ✓" : "Enter"),
        line(st.note),
        h("p", { class: "muted small commitment" }, "Commitment (SHA-256 of the secret seed): ",
          h("code", { id: "giveaway-commitment" }, g.commitment)));
      return;
    }
    if (e) {
      const won = me && e.winners.includes(me);
      const url = `/api/giveaways/${encodeURIComponent(e.giveaway)}`;
      fill(box,
        h("div", { class: "card-head" },
          h("h2", { id: "giveaway-heading" }, "🎁 Giveaway drawn"),
          h("button", { type: "button", class: "btn small", "aria-label": "Close", onclick: () => { st.ended = null; render(); } }, "×")),
        won ? h("p", { class: "giveaway-note ok" }, "🎉 You won! A free order is reserved for you.") : null,
        h("p", { id: "giveaway-winners" }, e.winners.length
          ? `Winners: ${e.winners.join(", ")} (of ${e.entrants} entrant${e.entrants === 1 ? "" : "s"})`
          : "Nobody entered."),
        h("p", { class: "muted small commitment" }, "Seed: ", h("code", { id: "giveaway-seed" }, e.seed)),
        h("p", { class: "small" },
          h("button", { type: "button", id: "giveaway-verify", class: "btn small", onclick: check }, "Verify the draw"),
          " ", h("a", { href: url, target: "_blank", rel: "noopener" }, "seed and entrants (JSON)")),
        line(st.check),
        h("p", { class: "muted small" },
          "Anyone can check: SHA-256(seed) equals the commitment shown at the start, and the winners are the ",
          `${e.winners.length || "given number of"} entrants with the smallest SHA-256(seed + ":" + user id). `,
          "Or run ", h("code", {}, `python scripts/verify_giveaway.py ${window.location.origin} ${e.giveaway}`), "."));
    }
  }

  function show(g) {
    if (!g || g.session !== undefined && g.session !== sessionId) return;
    st.open = g;
    st.seen.set(g.id, g.commitment);
    st.note = null;
    render();
  }

  socket.on("joined", (m) => {
    if (m.session !== sessionId) return;
    const g = m.state && m.state.giveaway;
    if (g) show(g);
    else if (st.open) { st.open = null; render(); }
  });
  socket.on("giveaway", (m) => { if (m.session === sessionId) show(m); });
  socket.on("giveaway_ended", (m) => {
    if (m.session !== sessionId) return;
    if (st.open && st.open.id === m.giveaway) st.open = null;
    st.ended = m;
    st.check = null;
    render();
  });
  socket.on("ack", (m) => {
    const id = refs.get(m.ref);
    if (!id) return;
    refs.delete(m.ref);
    st.entered.add(id);
    st.note = { kind: "ok", text: "You're in! Good luck." };
    render();
  });
  socket.on("error", (m) => {
    if (!m.ref || !refs.has(m.ref)) return;
    answered.add(m.ref);
    if (m.code === "unavailable") return; // resent with the same ref on reconnect
    refs.delete(m.ref);
    socket.retryable.delete(m.ref);
    st.note = { kind: "error", text: ENTER_ERRORS[m.code] && m.code !== "forbidden" ? ENTER_ERRORS[m.code] : (m.message || ENTER_ERRORS[m.code] || m.code) };
    if (m.code === "unauthorized") openSignIn();
    render();
  });
  everySecond(() => {
    for (const el of document.querySelectorAll(".countdown-gw[data-ends]")) {
      el.textContent = `ends in ${countdown(el.dataset.ends)}`;
    }
  });
  return { owns: (ref) => refs.has(ref) || answered.has(ref) };
}

// ------------------------------------------------------------------ studio

/** The studio's giveaway form (`#giveaway-form`) and status line (`#giveaway-status`). */
export function studioGiveaway({ socket, call, current, products }) {
  const st = { open: null, ended: null };

  function render() {
    const out = $("#giveaway-status");
    if (!out) return;
    const s = current();
    const g = st.open && s && st.open.session === s.id ? st.open : null;
    const e = st.ended && s && st.ended.session === s.id ? st.ended : null;
    if (g) {
      fill(out, h("span", { class: "pill warn" }, "running"), " ",
        `${g.winners} to win · `, h("span", { class: "countdown", dataset: { ends: g.ends_at } }, `ends in ${countdown(g.ends_at)}`),
        h("br"), h("span", { class: "muted small" }, "commitment ", h("code", {}, g.commitment.slice(0, 16) + "…")));
    } else if (e) {
      fill(out, h("span", { class: "pill ok" }, "drawn"), " ",
        e.winners.length ? `Winners: ${e.winners.join(", ")} of ${e.entrants}` : "Nobody entered; the units are back in stock.");
    } else {
      fill(out, h("span", { class: "muted small" }, "No giveaway running."));
    }
  }

  $("#giveaway-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const s = current();
    const productId = $("#giveaway-product").value;
    if (!s || !productId) return;
    const g = await call("POST", `/api/sessions/${encodeURIComponent(s.id)}/giveaways`, {
      product_id: productId,
      winners: Number($("#giveaway-winners").value),
      duration_s: Number($("#giveaway-duration").value),
      eligibility: $("#giveaway-eligibility").value,
    }, "Giveaway started");
    if (!g) return;
    st.open = g;
    products.forget(productId); // its stock moved into the giveaway
    render();
  });
  socket.on("joined", (m) => {
    const g = m.state && m.state.giveaway;
    if (g) st.open = { ...g, session: m.session };
    render();
  });
  socket.on("giveaway", (m) => { st.open = m; render(); });
  socket.on("giveaway_ended", (m) => {
    if (st.open && st.open.id === m.giveaway) st.open = null;
    st.ended = m;
    render();
  });
  return {
    /** Fill the product choice with the showcased products (like the offer form's). */
    products(items) {
      const sel = $("#giveaway-product");
      const before = sel.value;
      fill(sel, items.length
        ? items.map((p) => h("option", { value: p.id }, `${p.title} — ${p.stock} in stock`))
        : h("option", { value: "" }, "Showcase a product first"));
      if (items.some((p) => p.id === before)) sel.value = before;
    },
    render,
  };
}
