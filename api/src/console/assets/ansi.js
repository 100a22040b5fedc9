// Hodei's log viewer, its colours: ANSI SGR codes (16 colours, 256 colours, true colour, bold,
// dim, italic, underline) drawn as spans; other escape sequences left out; a line redrawn with
// `\r` shown in its last state. Text only ever goes into text nodes (`textContent`).
"use strict";

(function () {
  // ---- ANSI colours, into spans with text nodes ----
  const BG16 = ["#3b3b3b", "#c62828", "#2e7d32", "#9a6700", "#1565c0", "#8e24aa", "#00838f", "#8a8a8a",
    "#6b6b6b", "#e53935", "#43a047", "#b58900", "#1e88e5", "#ab47bc", "#00acc1", "#bdbdbd"];
  const ESCAPE = /\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;

  function color256(n) {
    if (n < 16) return n;
    if (n >= 232) { const v = 8 + (n - 232) * 10; return "rgb(" + v + "," + v + "," + v + ")"; }
    n -= 16;
    const c = (x) => (x === 0 ? 0 : 55 + x * 40);
    return "rgb(" + c(Math.floor(n / 36)) + "," + c(Math.floor(n / 6) % 6) + "," + c(n % 6) + ")";
  }

  function sgr(style, params) {
    const codes = params === "" ? [0] : params.split(";").map((x) => Number(x) || 0);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) { style.fg = null; style.bg = null; style.b = style.d = style.i = style.u = false; }
      else if (c === 1) style.b = true;
      else if (c === 2) style.d = true;
      else if (c === 3) style.i = true;
      else if (c === 4) style.u = true;
      else if (c === 22) style.b = style.d = false;
      else if (c === 23) style.i = false;
      else if (c === 24) style.u = false;
      else if (c >= 30 && c <= 37) style.fg = c - 30;
      else if (c >= 90 && c <= 97) style.fg = c - 82;
      else if (c === 39) style.fg = null;
      else if (c >= 40 && c <= 47) style.bg = c - 40;
      else if (c >= 100 && c <= 107) style.bg = c - 92;
      else if (c === 49) style.bg = null;
      else if (c === 38 || c === 48) {
        let value = null;
        if (codes[i + 1] === 5) { value = color256(codes[i + 2] || 0); i += 2; }
        else if (codes[i + 1] === 2) {
          value = "rgb(" + (codes[i + 2] || 0) + "," + (codes[i + 3] || 0) + "," + (codes[i + 4] || 0) + ")";
          i += 4;
        }
        if (c === 38) style.fg = value; else style.bg = value;
      }
    }
  }

  function piece(container, text, style) {
    if (!text) return;
    if (style.fg === null && style.bg === null && !style.b && !style.d && !style.i && !style.u) {
      container.appendChild(document.createTextNode(text));
      return;
    }
    const span = document.createElement("span");
    let cls = "";
    if (typeof style.fg === "number") cls += " f" + style.fg;
    else if (style.fg) span.style.color = style.fg;
    if (typeof style.bg === "number") span.style.backgroundColor = BG16[style.bg];
    else if (style.bg) span.style.backgroundColor = style.bg;
    if (style.b) cls += " a-b";
    if (style.d) cls += " a-d";
    if (style.i) cls += " a-i";
    if (style.u) cls += " a-u";
    span.className = cls.trim();
    span.textContent = text;
    container.appendChild(span);
  }

  /** Puts a log line into `container` as text nodes and styled spans. */
  function render(container, line) {
    const cr = line.lastIndexOf("\r");
    if (cr >= 0 && cr < line.length - 1) line = line.slice(cr + 1);
    if (line.indexOf("\x1b") < 0) { container.textContent = line; return; }
    container.textContent = "";
    const style = { fg: null, bg: null, b: false, d: false, i: false, u: false };
    let last = 0;
    ESCAPE.lastIndex = 0;
    let m;
    while ((m = ESCAPE.exec(line)) !== null) {
      piece(container, line.slice(last, m.index), style);
      if (m[1] !== undefined) sgr(style, m[1]);
      last = ESCAPE.lastIndex;
      if (m[0].length === 0) ESCAPE.lastIndex++;
    }
    piece(container, line.slice(last), style);
  }

  window.hodeiRenderLine = render;
})();
