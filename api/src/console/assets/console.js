// Hodei console: live refresh of a page's live part, running durations, keyboard shortcuts.
// Hand-written, no dependencies. The server renders every page; this script only asks it
// again for the live part (header `Hodei-Fragment`) when the API's event stream says
// something changed, and swaps it in.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="hodei-csrf"]');
  /** The session's CSRF token, for the API calls a script makes (`X-Hodei-CSRF`). */
  window.hodeiCsrf = csrf ? csrf.content : "";

  /** A duration in milliseconds, short, as the server writes it. */
  function duration(ms) {
    ms = Math.max(0, ms);
    const s = Math.floor(ms / 1000);
    const pad = (n) => String(n).padStart(2, "0");
    if (ms < 1000) return ms + "ms";
    if (s < 60) return (ms / 1000).toFixed(1) + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }
  window.hodeiDuration = duration;

  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration(now - Number(el.dataset.since));
    }
  }
  setInterval(tick, 1000);

  /** The WebSocket URL of an API path on this server. */
  function wsUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + path;
  }
  window.hodeiWsUrl = wsUrl;

  const live = document.getElementById("live");
  if (live && live.dataset.live) {
    const source = live.dataset.live;
    const path = source.startsWith("run:")
      ? "/api/v1/runs/" + source.slice(4) + "/events/stream"
      : "/api/v1/events/stream";
    const gap = source.startsWith("run:") ? 400 : 800;
    let timer = null;
    let busy = false;
    let again = false;
    let last = 0;

    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      last = Date.now();
      try {
        const res = await fetch(location.href, {
          headers: { "Hodei-Fragment": "1" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (res.redirected || res.status === 401) { location.reload(); return; }
        if (res.ok) {
          const focused = document.activeElement && document.activeElement.id;
          const template = document.createElement("template");
          template.innerHTML = await res.text();
          live.replaceChildren(template.content);
          tick();
          if (focused) {
            const element = document.getElementById(focused);
            if (element) element.focus({ preventScroll: true });
          }
          document.dispatchEvent(new CustomEvent("hodei:refreshed"));
        }
      } catch (_) {
        // The server is away; the next event or poll tries again.
      } finally {
        busy = false;
        if (again) { again = false; schedule(); }
      }
    }

    function schedule() {
      if (timer) return;
      const wait = Math.max(0, gap - (Date.now() - last));
      timer = setTimeout(() => { timer = null; refresh(); }, wait);
    }

    let backoff = 500;
    function connect() {
      const socket = new WebSocket(wsUrl(path));
      socket.onopen = () => { backoff = 500; schedule(); };
      socket.onmessage = schedule;
      socket.onclose = () => {
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 10000);
      };
    }
    connect();
    // Also every few seconds: the queue's reasons change without an event.
    setInterval(schedule, 5000);
  }

  // Keyboard: `/` goes to the page's search or filter field.
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target && (target.tagName === "INPUT" || target.tagName === "SELECT" ||
      target.tagName === "TEXTAREA" || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "/") {
      const field = document.getElementById("log-q") || document.getElementById("f-pipeline");
      if (field) { event.preventDefault(); field.focus(); field.select(); }
    }
  });
})();
