// Shared page furniture: DOM helpers, the sign-in bar, the offline banner, toasts, time.

import { ApiError } from "./client.js";

/** `h("button", {class: "x", onclick: fn, "aria-label": "…"}, "text", child…)` */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

// ------------------------------------------------------------------ header and sign-in

/**
 * The top bar: brand, page links, who is signed in, and a token paste box.
 * `needs` lists the roles the page is meant for; others see a hint.
 */
export function header({ auth, page, session, needs }) {
  const bar = $("#topbar");
  const links = [
    ["studio", "/studio", "Studio"],
    ...(session ? [
      ["watch", `/watch/${encodeURIComponent(session)}`, "Watch"],
      ["moderate", `/moderate/${encodeURIComponent(session)}`, "Moderate"],
    ] : []),
  ];
  const nav = h("nav", { class: "nav", "aria-label": "Pages" },
    links.map(([key, href, label]) => h("a", {
      href, class: key === page ? "active" : "", "aria-current": key === page ? "page" : null,
    }, label)));

  const previous = $("#signin-form");
  if (previous) previous.remove();
  const form = h("form", { class: "signin-form", hidden: true, id: "signin-form" });
  const input = h("input", {
    id: "token-input", type: "password", autocomplete: "off", spellcheck: "false",
    placeholder: "Paste a token (livecart token --sub you --role viewer)",
  });
  fill(form,
    h("label", { for: "token-input" }, "Access token"),
    input,
    h("button", { type: "submit", class: "btn primary" }, "Sign in"),
    h("button", { type: "button", class: "btn ghost", onclick: () => { form.hidden = true; } }, "Cancel"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    auth.set(input.value);
    window.location.reload();
  });

  let who;
  if (auth.signedIn) {
    who = h("div", { class: "who" },
      h("span", { class: "avatar", "aria-hidden": "true" }, initials(auth.user.name || auth.user.sub)),
      h("span", { class: "who-name" },
        h("strong", {}, auth.user.name || auth.user.sub),
        h("span", { class: "role" }, auth.role)),
      h("button", {
        type: "button", class: "btn ghost small", "aria-label": "Sign out",
        onclick: () => { auth.clear(); window.location.reload(); },
      }, "Sign out"));
  } else {
    who = h("div", { class: "who" },
      h("span", { class: "muted" }, auth.expired ? "Token expired" : "Guest"),
      h("button", {
        type: "button", class: "btn small", "aria-controls": "signin-form",
        onclick: () => { form.hidden = !form.hidden; if (!form.hidden) input.focus(); },
      }, "Sign in"));
  }
  fill(bar,
    h("a", { class: "brand", href: "/studio", "aria-label": "livecart home" },
      h("span", { class: "brand-dot", "aria-hidden": "true" }), "livecart"),
    nav, who);
  bar.after(form);
  if (needs && auth.signedIn && !needs.includes(auth.role) && !header.warned) {
    header.warned = true;
    toast(`This page is for ${needs.join(" or ")}; you are signed in as ${auth.role}.`, "warn", 8000);
  }
  return { openSignIn: () => { form.hidden = false; input.focus(); } };
}

export function initials(name) {
  const parts = String(name).replace(/[-_]/g, " ").trim().split(/\s+/);
  return ((parts[0] || "?")[0] + (parts[1] ? parts[1][0] : "")).toUpperCase();
}

// ------------------------------------------------------------------ banner and toasts

/** The offline banner, driven by a LiveSocket's lifecycle events. */
export function connectionBanner(socket) {
  const el = $("#banner");
  let countdown = null;
  let wasOffline = false;
  socket.on("offline", ({ retryInMs }) => {
    wasOffline = true;
    window.clearInterval(countdown);
    const until = Date.now() + retryInMs;
    const render = () => {
      const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      el.className = "banner offline";
      el.textContent = s > 0 ? `Offline — reconnecting in ${s}s…` : "Offline — reconnecting…";
    };
    render();
    el.hidden = false;
    countdown = window.setInterval(render, 500);
  });
  socket.on("open", () => {
    window.clearInterval(countdown);
    if (!wasOffline) { el.hidden = true; return; }
    wasOffline = false;
    el.className = "banner online";
    el.textContent = "Back online — resuming where you left off";
    el.hidden = false;
    window.setTimeout(() => { if (el.classList.contains("online")) el.hidden = true; }, 2500);
  });
  socket.on("unauthorized", () => {
    window.clearInterval(countdown);
    el.className = "banner offline";
    el.textContent = "Your token was refused — sign in again.";
    el.hidden = false;
  });
}

export function toast(message, kind = "info", ms = 4000) {
  const box = $("#toasts");
  if (!box) return;
  const el = h("div", { class: `toast ${kind}` }, message);
  box.append(el);
  window.setTimeout(() => el.remove(), ms);
}

/** A readable message for an ApiError or any exception. */
export function explain(exc) {
  if (exc instanceof ApiError) {
    if (exc.status === 404 && exc.code === "http_404") return "not available on this server yet";
    return `${exc.code.replace(/_/g, " ")}: ${exc.message}`;
  }
  return String((exc && exc.message) || exc);
}

// ------------------------------------------------------------------ time

export function toMs(t) {
  if (t === null || t === undefined) return null;
  if (typeof t === "number") return t < 1e12 ? t * 1000 : t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

export function clock(t) {
  const ms = toMs(t);
  if (ms === null) return "";
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "4:05" until `t`, "0:00" after it. */
export function countdown(t) {
  const ms = toMs(t);
  if (ms === null) return "";
  const left = Math.max(0, Math.round((ms - Date.now()) / 1000));
  const hrs = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = String(left % 60).padStart(2, "0");
  return hrs ? `${hrs}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

const tickers = new Set();
window.setInterval(() => { for (const fn of tickers) fn(); }, 1000);

/** Runs `fn` every second (countdowns); returns an unsubscribe function. */
export function everySecond(fn) {
  tickers.add(fn);
  return () => tickers.delete(fn);
}

/** Memoised GET by id with in-flight sharing (products and sessions named in events). */
export function lookup(api, path) {
  const cache = new Map();
  const get = (id) => {
    if (!id) return Promise.resolve(null);
    if (!cache.has(id)) {
      cache.set(id, api("GET", path(id)).catch(() => {
        window.setTimeout(() => cache.delete(id), 10000);
        return null;
      }));
    }
    return cache.get(id);
  };
  get.put = (obj) => { if (obj && obj.id) cache.set(obj.id, Promise.resolve(obj)); };
  get.forget = (id) => cache.delete(id);
  return get;
}

/** A `why` (string or {trend, affinity, explore}) as one line for a title attribute. */
export function whyText(why) {
  if (!why) return "";
  if (typeof why === "string") return why;
  if (typeof why === "object") {
    const parts = [];
    for (const [k, v] of Object.entries(why)) {
      if (typeof v === "number") { if (v !== 0) parts.push(`${k} ${v.toFixed(3)}`); }
      else if (v !== null && v !== undefined && v !== "") parts.push(`${k}: ${v}`);
    }
    return parts.length ? `why: ${parts.join(" · ")}` : "why: baseline";
  }
  return String(why);
}

/** A stable, pleasant colour for a user or product id (avatars, thumbnails). */
export function chatColor(id) {
  let hash = 0x811c9dc5; // FNV-1a, then a multiplicative mix so near ids get far hues
  for (const ch of String(id || "")) hash = Math.imul(hash ^ ch.codePointAt(0), 0x01000193) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d) >>> 0;
  return `hsl(${hash % 360} 58% 45%)`;
}
