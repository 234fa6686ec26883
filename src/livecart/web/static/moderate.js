// Moderation console: live chat with one-click actions, the review queue, room controls,
// blocked terms and the audit log.

import { Auth, LiveSocket, makeApi, replay } from "./client.js";
import {
  $, chatColor, clock, connectionBanner, explain, fill, h, header, initials, toast, toMs,
} from "./app.js";

const sessionId = decodeURIComponent(window.location.pathname.split("/").filter(Boolean).pop());
const auth = new Auth("moderate");
const api = makeApi(auth);
const { openSignIn } = header({
  auth, page: "moderate", session: sessionId, needs: ["moderator", "creator", "admin"],
});
const socket = new LiveSocket(auth.token);
connectionBanner(socket);

const state = { session: null, creator: null, shield: false, slow: 0, busy: new Set() };
const list = $("#chat-list");

// ------------------------------------------------------------------ actions

async function moderate(body, done) {
  if (!auth.signedIn) {
    toast("Sign in with a moderator or creator token.", "warn");
    openSignIn();
    return null;
  }
  try {
    const res = await api("POST", `/api/sessions/${encodeURIComponent(sessionId)}/moderation`, body);
    if (done) toast(done, "ok", 2500);
    window.setTimeout(loadAudit, 300);
    return res || {};
  } catch (exc) {
    toast(`${body.action} failed — ${explain(exc)}`, "warn", 6000);
    return null;
  }
}

function timeoutSeconds() {
  return Number($("#timeout-len").value) || 600;
}

// ------------------------------------------------------------------ chat

function chatItem(m) {
  const who = m.name || m.user;
  const li = h("li", { class: "msg", dataset: { offset: String(m.offset), user: m.user } },
    h("span", { class: "msg-avatar", style: { background: chatColor(m.user) }, "aria-hidden": "true" },
      initials(who)),
    h("div", { class: "msg-body" },
      h("div", { class: "msg-meta" },
        h("span", { class: "msg-name" }, who),
        h("span", { class: "muted small" }, `@${m.user}`),
        h("time", { class: "msg-time" }, clock(m.at || Date.now()))),
      h("p", { class: "msg-text" }, m.text)),
    h("div", { class: "msg-actions" },
      h("button", {
        type: "button", class: "icon-btn act-delete", "aria-label": `Delete message from ${who}`,
        title: "Delete message",
        onclick: () => moderate({ action: "delete", offset: m.offset, reason: "deleted from console" }, "Message deleted"),
      }, "Delete"),
      h("button", {
        type: "button", class: "icon-btn act-timeout", "aria-label": `Time out ${who}`,
        title: "Time out the author",
        onclick: () => {
          const seconds = timeoutSeconds();
          moderate({ action: "timeout", user_id: m.user, seconds, reason: "timed out from console" },
            `${who} timed out for ${Math.round(seconds / 60)} min`);
        },
      }, "Timeout"),
      h("button", {
        type: "button", class: "icon-btn danger act-ban", "aria-label": `Ban ${who}`,
        title: "Ban the author from this creator's sessions",
        onclick: () => moderate({ action: "ban", user_id: m.user, reason: "banned from console" }, `${who} banned`),
      }, "Ban")));
  return li;
}

function addChat(m) {
  if (m.removed || typeof m.text !== "string") return;
  if (list.querySelector(`li[data-offset="${m.offset}"]`)) return;
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const el = chatItem(m);
  const after = [...list.children].find((li) => Number(li.dataset.offset) > m.offset);
  if (after) list.insertBefore(el, after);
  else list.append(el);
  while (list.children.length > 400) list.firstElementChild.remove();
  if (stick) list.scrollTop = list.scrollHeight;
}

function removeChat(target) {
  const li = list.querySelector(`li[data-offset="${target}"]`);
  if (!li) return;
  li.classList.add("removing");
  window.setTimeout(() => li.remove(), 250);
}

// ------------------------------------------------------------------ queue

let queueTimer = null;

async function loadQueue() {
  window.clearTimeout(queueTimer);
  queueTimer = window.setTimeout(loadQueue, 2000);
  if (!auth.signedIn || document.hidden) return;
  let data;
  try {
    data = await api("GET", `/api/sessions/${encodeURIComponent(sessionId)}/moderation/queue`);
  } catch (exc) {
    if (exc.status === 401 || exc.status === 403) {
      window.clearTimeout(queueTimer);
      fill($("#queue"), h("li", { class: "empty muted" }, `The queue needs a moderator token (${explain(exc)}).`));
    }
    return;
  }
  renderQueue(Array.isArray(data) ? data : (data && data.items) || []);
}

function renderQueue(items) {
  $("#queue-count").textContent = String(items.length);
  const ul = $("#queue");
  if (!items.length) {
    fill(ul, h("li", { class: "empty muted" }, "Nothing to review."));
    return;
  }
  // Keep the elements of items that did not change (no flicker, focus survives polling).
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    seen.add(item.id);
    const key = JSON.stringify([item.status, item.claimed_by, item.reports, item.reasons, item.kind]);
    let li = ul.querySelector(`li[data-item="${CSS.escape(item.id)}"]`);
    if (!li || li.dataset.key !== key) {
      const fresh = queueItem(item);
      fresh.dataset.key = key;
      if (li) li.replaceWith(fresh);
      li = fresh;
    }
    if (prev ? prev.nextElementSibling !== li : ul.firstElementChild !== li) {
      if (prev) prev.after(li);
      else ul.prepend(li);
    }
    prev = li;
  }
  for (const li of [...ul.children]) {
    if (!li.dataset.item || !seen.has(li.dataset.item)) li.remove();
  }
}

function queueItem(item) {
  const reasons = Array.isArray(item.reasons) ? item.reasons : item.reasons ? [item.reasons] : [];
  const held = item.kind !== "report" && item.kind !== "reported";
  const who = item.name || item.author_name || item.author || "someone";
  const claimedByMe = auth.user && item.claimed_by === auth.user.sub;
  const act = (action, label) => h("button", {
    type: "button",
    class: `btn small act-${action}${action === "approve" ? " ok" : action === "reject" ? " danger" : ""}`,
    "aria-label": `${label} ${held ? "held message" : "reported message"} from ${who}`,
    onclick: async (ev) => {
      ev.currentTarget.disabled = true;
      const res = await moderate({ action, item: item.id, reason: `${action} from console` }, null);
      if (res) {
        const past = { claim: "Claimed", approve: "Approved", reject: "Rejected" }[action];
        toast(`${past}${res.message ? ` — ${res.message}` : ""}`, "ok", 2500);
      }
      loadQueue();
    },
  }, label);
  return h("li", { class: `queue-item ${held ? "held" : "report"}`, dataset: { item: item.id } },
    h("div", { class: "queue-head" },
      h("span", { class: `pill ${held ? "warn" : "danger"}` }, held ? "Held" : "Reported"),
      h("strong", {}, who),
      item.reports ? h("span", { class: "muted small" }, `${item.reports} report${item.reports === 1 ? "" : "s"}`) : null,
      item.claimed_by ? h("span", { class: "pill" }, claimedByMe ? "claimed by you" : `claimed by ${item.claimed_by}`) : null,
      item.at || item.created_at ? h("time", { class: "muted small" }, clock(item.at || item.created_at)) : null),
    h("p", { class: "queue-text" }, item.text || ""),
    reasons.length ? h("ul", { class: "reasons", "aria-label": "Reasons" }, reasons.map((r) => h("li", {}, r))) : null,
    h("div", { class: "queue-actions" },
      claimedByMe ? null : act("claim", "Claim"),
      act("approve", "Approve"),
      act("reject", "Reject")));
}

// ------------------------------------------------------------------ controls

function setSlow(seconds) {
  state.slow = seconds || 0;
  const pill = $("#slow-pill");
  pill.hidden = !state.slow;
  pill.textContent = `Slow mode · ${state.slow}s`;
  const select = $("#slow-seconds");
  if (![...select.options].some((o) => Number(o.value) === state.slow)) {
    select.append(h("option", { value: String(state.slow) }, `${state.slow} s`));
  }
  select.value = String(state.slow);
}

function setShield(on) {
  state.shield = on;
  const btn = $("#shield-btn");
  btn.setAttribute("aria-pressed", on ? "true" : "false");
  $("#shield-state").textContent = on ? "On" : "Off";
  $("#shield-pill").hidden = !on;
}

$("#slow-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const seconds = Number($("#slow-seconds").value);
  const res = await moderate({ action: "slow", seconds }, seconds ? `Slow mode: ${seconds}s` : "Slow mode off");
  if (res) setSlow(seconds);
});

$("#shield-btn").addEventListener("click", async () => {
  const on = !state.shield;
  const res = await moderate({ action: on ? "shield_on" : "shield_off" }, on ? "Shield mode on" : "Shield mode off");
  if (res) {
    state.shieldKnown = true;
    setShield(on);
  }
});

$("#unban-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("#unban-user").value.trim();
  if (!user) return;
  const res = await moderate({ action: "unban", user_id: user }, `${user} can chat again`);
  if (res) $("#unban-user").value = "";
});

$("#queue-refresh").addEventListener("click", loadQueue);

// ------------------------------------------------------------------ blocked terms

function termsPath() {
  return `/api/creators/${encodeURIComponent(state.creator)}/blocked-terms`;
}

async function loadTerms() {
  if (!auth.signedIn || !state.creator) return;
  let data;
  try {
    data = await api("GET", termsPath());
  } catch (exc) {
    fill($("#terms"), h("li", { class: "empty muted" }, explain(exc)));
    return;
  }
  const terms = Array.isArray(data) ? data : (data && (data.terms || data.items)) || [];
  if (!terms.length) {
    fill($("#terms"), h("li", { class: "empty muted" }, "No terms for this creator."));
    return;
  }
  fill($("#terms"), terms.map((t) => {
    const term = typeof t === "string" ? t : t.term;
    const action = typeof t === "string" ? "" : t.action;
    return h("li", { class: "term" },
      h("code", {}, term),
      action ? h("span", { class: `pill ${action === "block" ? "danger" : "warn"}` }, action) : null,
      h("button", {
        type: "button", class: "icon-btn", "aria-label": `Remove blocked term ${term}`,
        onclick: async () => {
          try {
            await api("DELETE", termsPath(), { term });
            toast(`Removed "${term}"`, "ok", 2000);
          } catch (exc) {
            toast(explain(exc), "warn");
          }
          loadTerms();
        },
      }, "Remove"));
  }));
}

$("#term-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const term = $("#term-input").value.trim();
  if (!term || !state.creator) return;
  try {
    await api("POST", termsPath(), { term, action: $("#term-action").value });
    $("#term-input").value = "";
    toast(`Added "${term}"`, "ok", 2000);
  } catch (exc) {
    toast(explain(exc), "warn");
  }
  loadTerms();
});

// ------------------------------------------------------------------ audit

let auditTimer = null;

/** The audit log is the creator's (and admins'); platform moderators see the queue and chat. */
function mayReadAudit() {
  return auth.signedIn && (auth.role === "admin" || auth.user.sub === state.creator);
}

async function loadAudit() {
  window.clearTimeout(auditTimer);
  if (!state.creator) return;
  if (!mayReadAudit()) {
    fill($("#audit"), h("li", { class: "empty muted" },
      "The audit log is shown to the session's creator and to admins."));
    return;
  }
  auditTimer = window.setTimeout(loadAudit, 5000);
  if (document.hidden) return;
  let data;
  try {
    data = await api("GET", `/api/creators/${encodeURIComponent(state.creator)}/audit?limit=50`);
  } catch (exc) {
    if (exc.status === 401 || exc.status === 403 || exc.status === 404) window.clearTimeout(auditTimer);
    fill($("#audit"), h("li", { class: "empty muted" }, explain(exc)));
    return;
  }
  const entries = Array.isArray(data) ? data : (data && (data.items || data.entries || data.actions)) || [];
  if (!entries.length) {
    fill($("#audit"), h("li", { class: "empty muted" }, "No actions yet."));
    return;
  }
  const sorted = [...entries].sort((a, b) => (toMs(b.at || b.created_at) || 0) - (toMs(a.at || a.created_at) || 0));
  const shield = sorted.find((e) => e.action === "shield_on" || e.action === "shield_off");
  if (shield && !state.shieldKnown) setShield(shield.action === "shield_on");
  fill($("#audit"), sorted.slice(0, 50).map((e) => {
    const target = e.target || e.user_id || e.target_user || (e.offset ? `#${e.offset}` : "");
    const text = e.original_text || e.text;
    const detail = [e.seconds ? `${e.seconds}s` : "", e.reason || "", text ? `“${text}”` : ""]
      .filter(Boolean).join(" · ");
    return h("li", { class: "audit-item" },
      h("time", { class: "muted small" }, clock(e.at || e.created_at)),
      h("span", {}, h("strong", {}, e.actor || "system"), " ",
        h("span", { class: "pill" }, e.action || e.kind || "action"),
        target ? ` ${target}` : ""),
      detail ? h("span", { class: "muted small audit-detail" }, detail) : null);
  }));
}

// ------------------------------------------------------------------ session and socket

async function loadSession() {
  try {
    const s = await api("GET", `/api/sessions/${encodeURIComponent(sessionId)}`);
    state.session = s;
    state.creator = s.creator;
    document.title = `Moderate: ${s.title} · livecart`;
    $("#session-title").textContent = s.title;
    $("#session-meta").textContent = `@${s.creator} · session ${s.id}`;
    setStatus(s.status);
    if (typeof s.shield === "boolean") setShield(s.shield);
    loadTerms();
    loadAudit();
  } catch (exc) {
    $("#session-title").textContent = "Session not found";
    $("#session-meta").textContent = explain(exc);
  }
}

function setStatus(status) {
  const badge = $("#status-badge");
  badge.textContent = status === "live" ? "LIVE" : status === "ended" ? "ENDED" : "SOON";
  badge.className = `badge ${status}`;
}

socket.on("joined", (m) => {
  if (m.session !== sessionId) return;
  const s = m.state || {};
  if (s.status) setStatus(s.status);
  $("#viewers").textContent = String(s.viewers || 0);
  setSlow(s.slow);
  if (typeof s.shield === "boolean") setShield(s.shield);
  if (!m.recovered) {
    const shown = [...list.children].map((li) => Number(li.dataset.offset)).filter((o) => o > 0);
    for (const c of s.chat || []) addChat(c);
    // Catch up from the archive: after a reconnect that could not resume, or when the
    // snapshot has no recent chat (a restarted node).
    const since = shown.length ? Math.min(...shown) - 1 : (s.chat || []).length ? null : Math.max(0, m.offset - 100);
    if (since !== null && m.offset > 0) {
      replay(api, sessionId, since, m.offset, (e) => {
        if (e.type !== "chat") return;
        if (e.removed) removeChat(e.offset);
        else addChat(e);
      }).catch(() => { /* live chat still flows */ });
    }
    list.scrollTop = list.scrollHeight;
  }
});
socket.on("chat", (m) => { if (m.session === sessionId) addChat(m); });
socket.on("chat_removed", (m) => { if (m.session === sessionId) removeChat(m.target); });
socket.on("status", (m) => { if (m.session === sessionId) setStatus(m.status); });
socket.on("slow", (m) => {
  if (m.session !== sessionId) return;
  setSlow(m.seconds);
  if (typeof m.shield === "boolean") {
    state.shieldKnown = true;
    setShield(m.shield);
  }
});
socket.on("viewers", (m) => { if (m.session === sessionId) $("#viewers").textContent = String(m.count); });
socket.on("error", (m) => {
  if (m.code === "not_found" && m.session === sessionId) toast("This session does not exist.", "warn", 8000);
});

document.addEventListener("visibilitychange", () => { if (!document.hidden) loadQueue(); });

socket.join(sessionId);
socket.connect();
loadSession();
loadQueue();
