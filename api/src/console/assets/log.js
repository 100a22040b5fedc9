// Hodei's log viewer: a virtualised view of a job's log of any size.
//
// Only the rows on screen exist in the page. Lines come from the server in pages
// (`/api/v1/jobs/{id}/log/lines`, which keeps a line index), at most MAX_PAGES of them are
// kept, the farthest dropped first. Search runs on the server over the whole log. Follow mode
// tails the API's log WebSocket from the byte length the last page was counted in. Log text
// only ever goes into text nodes: a line `<script>` is shown, never run.
"use strict";

(function () {
  const view = document.getElementById("log");
  if (!view) return;
  const job = view.dataset.job;
  const ROW = 18;               // px per line, as in the stylesheet
  const PAGE = 500;             // lines per request
  const MAX_PAGES = 60;         // pages kept in memory
  const MAX_HEIGHT = 8000000;   // px: beyond, the scroll position maps to lines by proportion
  const api = "/api/v1/jobs/" + job + "/log";

  let total = 0;                // lines in the log, as far as known
  let length = 0;               // bytes those lines were counted in (follow resumes there)
  let open = false;             // whether the last line may still grow
  let finished = view.dataset.finished === "true";
  const pages = new Map();      // page number -> array of lines
  const loading = new Set();
  let following = false;
  let socket = null;
  let target = -1;              // the line of a deep link, highlighted
  let hits = [];                // search results, line numbers from 1
  let hitSet = new Set();
  let hit = -1;
  let programmatic = false;

  const spacer = document.createElement("div");
  spacer.className = "spacer";
  const rowsEl = document.createElement("div");
  rowsEl.className = "rows";
  view.replaceChildren(spacer, rowsEl);
  const rows = [];

  const $ = (id) => document.getElementById(id);
  const status = $("log-status");
  const followButton = $("log-follow");

  const render = window.hodeiRenderLine;

  // ---- Pages of lines from the server ----
  function remember(page, lines) {
    pages.set(page, lines);
    if (pages.size > MAX_PAGES) {
      const here = Math.floor(firstLine() / PAGE);
      const far = [...pages.keys()].sort((a, b) => Math.abs(b - here) - Math.abs(a - here));
      for (const p of far.slice(0, pages.size - MAX_PAGES)) pages.delete(p);
    }
  }

  function learn(answer) {
    if (answer.total > total || (answer.total === total && answer.length >= length)) {
      total = answer.total;
      length = answer.length;
      open = answer.open;
    }
  }

  async function fetchPage(page) {
    if (loading.has(page)) return;
    loading.add(page);
    try {
      const res = await fetch(api + "/lines?from=" + (page * PAGE + 1) + "&count=" + PAGE,
        { credentials: "same-origin" });
      if (!res.ok) { say("Cannot read the log: " + res.status); return; }
      const answer = await res.json();
      learn(answer);
      remember(page, answer.lines);
      layout();
    } finally {
      loading.delete(page);
    }
  }

  function lineText(n) {
    const lines = pages.get(Math.floor(n / PAGE));
    return lines ? lines[n % PAGE] : undefined;
  }

  function setLine(n, text) {
    const page = Math.floor(n / PAGE);
    let lines = pages.get(page);
    if (!lines) {
      if (n % PAGE !== 0) return; // not held: read from the server when shown
      lines = [];
      remember(page, lines);
    }
    lines[n % PAGE] = text;
  }

  // ---- Scrolling and drawing ----
  function height() { return Math.min(total * ROW, MAX_HEIGHT); }
  function visible() { return Math.ceil(view.clientHeight / ROW) + 1; }
  function scaled() { return total * ROW > MAX_HEIGHT; }
  function maxTop() { return Math.max(0, height() - view.clientHeight); }

  function firstLine() {
    if (!scaled()) return Math.floor(view.scrollTop / ROW);
    const top = maxTop();
    const span = Math.max(0, total - visible() + 1);
    return top <= 0 ? 0 : Math.min(span, Math.round((view.scrollTop / top) * span));
  }

  function topFor(line) {
    if (!scaled()) return line * ROW;
    const span = Math.max(1, total - visible() + 1);
    return (Math.min(line, span) / span) * maxTop();
  }

  let drawing = false;
  function layout() {
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    drawing = false;
    spacer.style.height = height() + "px";
    if (following) scrollTo(maxTop());
    const first = firstLine();
    const count = visible();
    while (rows.length < count) {
      const row = document.createElement("div");
      row.className = "row";
      const ln = document.createElement("a");
      ln.className = "ln";
      const txt = document.createElement("span");
      txt.className = "txt";
      row.append(ln, txt);
      row.line = -1;
      row.text = undefined;
      rowsEl.appendChild(row);
      rows.push(row);
    }
    rowsEl.style.transform = "translateY(" + (scaled() ? view.scrollTop : first * ROW) + "px)";
    const missing = new Set();
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i];
      const n = first + i;
      if (i >= count || n >= total) { row.hidden = true; row.line = -1; continue; }
      row.hidden = false;
      const text = lineText(n);
      if (text === undefined) missing.add(Math.floor(n / PAGE));
      if (row.line !== n) {
        row.line = n;
        row.firstChild.textContent = String(n + 1);
        row.firstChild.href = "#L" + (n + 1);
      }
      if (row.text !== text || row.line !== n) {
        row.text = text;
        row.classList.toggle("pending", text === undefined);
        render(row.lastChild, text === undefined ? "" : text);
      }
      row.classList.toggle("target", n === target);
      row.classList.toggle("hit", hitSet.has(n + 1));
    }
    for (const page of missing) fetchPage(page);
    if (total > 0) {
      const last = Math.min(total, first + count - 1);
      let text = "Lines " + (first + 1).toLocaleString() + "–" + last.toLocaleString() +
        " of " + total.toLocaleString();
      if (following) text += " · following";
      if (hits.length) text += " · match " + (hit + 1) + " of " + hits.length.toLocaleString() +
        (truncated ? "+" : "");
      say(text);
    } else {
      say(following ? "Waiting for output…" : "The log is empty.");
    }
  }

  /** Scrolls the view itself: the scroll event this causes is not the reader's. */
  function scrollTo(top) {
    if (Math.abs(view.scrollTop - top) < 1) return;
    programmatic = true;
    view.scrollTop = top;
  }

  function say(text) { if (status && status.textContent !== text) status.textContent = text; }

  view.addEventListener("scroll", () => {
    if (programmatic) { programmatic = false; }
    else if (following && view.scrollTop < maxTop() - ROW) setFollow(false);
    layout();
  }, { passive: true });
  window.addEventListener("resize", layout);

  /** Shows line `n` (from 0) in the middle of the view and loads only its page. */
  async function goTo(n, mark) {
    setFollow(false);
    n = Math.max(0, Math.min(n, Math.max(0, total - 1)));
    if (mark) target = n;
    const page = Math.floor(n / PAGE);
    if (!pages.has(page)) await fetchPage(page);
    spacer.style.height = height() + "px";
    // The line in the middle: by pixels, or by lines when positions are proportional.
    const top = scaled()
      ? topFor(Math.max(0, n - Math.floor(visible() / 2)))
      : topFor(n) - view.clientHeight / 2 + ROW / 2;
    scrollTo(Math.max(0, Math.min(top, maxTop())));
    layout();
  }
  window.hodeiGoTo = (line) => goTo(line - 1, true);

  function fromHash() {
    const m = /^#L(\d+)$/.exec(location.hash);
    return m ? Number(m[1]) : 0;
  }

  window.addEventListener("hashchange", () => {
    const line = fromHash();
    if (line > 0) goTo(line - 1, true);
  });

  // ---- Follow mode over the log WebSocket ----
  function append(text) {
    const parts = text.split("\n");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (i === 0 && open && total > 0) {
        const before = lineText(total - 1);
        if (before !== undefined) setLine(total - 1, before + part);
      } else if (i === parts.length - 1) {
        if (part !== "") { setLine(total, part); total++; }
      } else {
        setLine(total, part);
        total++;
      }
    }
    open = !text.endsWith("\n") && (open || parts[parts.length - 1] !== "");
  }

  function connect() {
    if (socket) socket.close();
    const ws = new WebSocket(window.hodeiWsUrl(api + "/stream?from=" + length));
    socket = ws;
    ws.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "log") {
        if (frame.offset !== length) { if (frame.offset > length) connect(); return; }
        append(frame.data);
        length += frame.bytes;
        layout();
      } else if (frame.type === "lagged") {
        length = frame.resume_from;
        connect();
      } else if (frame.type === "end") {
        finished = true;
        ws.onclose = null;
        ws.close();
        socket = null;
        setFollow(false);
        if (followButton) followButton.disabled = true;
        layout();
      }
    };
    ws.onclose = () => {
      if (socket === ws) { socket = null; if (following) setTimeout(connect, 1000); }
    };
  }

  async function setFollow(on) {
    if (on === following) return;
    following = on;
    if (followButton) followButton.setAttribute("aria-pressed", String(on));
    if (!on) {
      if (socket) { const ws = socket; socket = null; ws.onclose = null; ws.close(); }
      layout();
      return;
    }
    target = -1;
    // The last page first: the stream starts at the byte length it was counted in.
    await fetchPage(Math.floor(Math.max(0, total - 1) / PAGE));
    const last = Math.floor(Math.max(0, total - 1) / PAGE);
    if (!pages.has(last)) await fetchPage(last);
    if (following) connect();
    layout();
  }

  // ---- Search on the server ----
  let truncated = false;
  async function search(text, limit) {
    const res = await fetch(api + "/search?q=" + encodeURIComponent(text) + "&limit=" + limit,
      { credentials: "same-origin" });
    if (!res.ok) {
      const problem = await res.json().catch(() => ({}));
      say("Search failed: " + (problem.detail || res.status));
      return null;
    }
    return res.json();
  }

  function showHit(i) {
    if (!hits.length) return;
    hit = (i + hits.length) % hits.length;
    goTo(hits[hit] - 1, true);
  }

  const form = $("log-search");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const q = $("log-q").value;
      if (!q) return;
      say("Searching…");
      const found = await search(q, 10000);
      if (!found) return;
      hits = found.lines;
      hitSet = new Set(hits);
      truncated = found.truncated;
      $("log-prev").disabled = $("log-next").disabled = hits.length === 0;
      if (!hits.length) { hit = -1; say("No line contains “" + q + "”."); layout(); return; }
      const here = firstLine() + 1;
      const next = hits.findIndex((n) => n >= here);
      showHit(next < 0 ? 0 : next);
    });
    $("log-prev").addEventListener("click", () => showHit(hit - 1));
    $("log-next").addEventListener("click", () => showHit(hit + 1));
  }

  async function firstError() {
    const found = await search("error", 1);
    if (!found) return;
    if (found.lines.length) goTo(found.lines[0] - 1, true);
    else say("No line contains “error”.");
  }

  const on = (id, f) => { const el = $(id); if (el) el.addEventListener("click", f); };
  on("log-follow", () => setFollow(!following));
  on("log-top", () => goTo(0, false));
  on("log-bottom", () => goTo(total - 1, false));
  on("log-error", firstError);

  view.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = {
      g: () => goTo(0, false), G: () => goTo(total - 1, false), f: () => setFollow(!following),
      e: firstError, n: () => showHit(hit + 1), N: () => showHit(hit - 1),
      j: () => { view.scrollTop += ROW; }, k: () => { view.scrollTop -= ROW; },
    };
    const action = keys[event.key];
    if (action) { event.preventDefault(); action(); }
  });

  // A running job's log grows: without follow, its length is looked at now and then.
  setInterval(() => {
    if (!following && !finished && total >= 0) fetchPage(Math.floor(Math.max(0, total - 1) / PAGE));
  }, 3000);

  // ---- Start: a deep link loads only its part; a running job is followed ----
  (async function start() {
    const line = fromHash();
    if (line > 0) {
      await fetchPage(Math.floor((line - 1) / PAGE));
      await goTo(line - 1, true);
    } else if (!finished) {
      await fetchPage(0);
      await setFollow(true);
    } else {
      await fetchPage(0);
    }
    layout();
  })();
})();
