// A day's timeline of one camera's recordings: a 24-hour bar with hour marks, the recorded
// segments (GET /api/channels/{id}/records: 定时 blue, 报警 red, 手动 green, with a legend), the
// playhead at the recorded time shown, and a selected range for download. Click or drag on the
// bar to seek (the playhead follows the pointer, the seek happens on release); in range mode a
// drag selects the download range instead. Times are Unix epoch seconds; the day is local.

import { el } from "./dom.js";

export const DAY = 86400;
export const TYPE_NAMES = { time: "定时录像", alarm: "报警录像", manual: "手动录像" };

// Local midnight of the day holding `epoch`.
export function dayStartOf(epoch) {
  const d = new Date(epoch * 1000);
  return Math.floor(new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime() / 1000);
}

const pad = (n) => String(n).padStart(2, "0");

export function formatClock(epoch) {
  const d = new Date(epoch * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatDateTime(epoch) {
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(epoch)}`;
}

export function legend() {
  const box = el("div", "tl-legend");
  for (const [type, name] of Object.entries(TYPE_NAMES)) {
    const item = el("span", "tl-legend-item");
    item.append(el("span", `tl-swatch tl-${type}`), name);
    box.append(item);
  }
  return box;
}

export class Timeline {
  // onSeek(epoch) when the user clicks or drags on the bar; onRange(start, end) for a range.
  constructor({ onSeek, onRange }) {
    this.onSeek = onSeek;
    this.onRange = onRange;
    this.day = dayStartOf(Date.now() / 1000);
    this.items = [];
    this.cursor = null;
    this.range = null;
    this.rangeMode = false;
    this.drag = null;
    this.el = el("div", "timeline");
    this.bar = el("div", "tl-bar");
    this.bar.setAttribute("role", "slider");
    this.bar.setAttribute("aria-label", "录像时间轴");
    this.bar.tabIndex = 0;
    this.segs = el("div", "tl-segs");
    this.sel = el("div", "tl-range");
    this.sel.hidden = true;
    this.head = el("div", "tl-cursor");
    this.head.hidden = true;
    this.hover = el("div", "tl-hover");
    this.hover.hidden = true;
    this.bar.append(this.segs, this.sel, this.head, this.hover);
    const ticks = el("div", "tl-ticks");
    for (let h = 0; h <= 24; h += 2) {
      const tick = el("span", "tl-tick", `${pad(h)}:00`);
      tick.style.left = `${(h / 24) * 100}%`;
      ticks.append(tick);
    }
    this.el.append(this.bar, ticks);
    this.bar.addEventListener("pointerdown", (ev) => this.down(ev));
    this.bar.addEventListener("pointermove", (ev) => this.move(ev));
    this.bar.addEventListener("pointerup", (ev) => this.up(ev));
    this.bar.addEventListener("pointercancel", () => { this.drag = null; });
    this.bar.addEventListener("pointerleave", () => { this.hover.hidden = true; });
    this.bar.addEventListener("keydown", (ev) => this.key(ev));
  }

  // Epoch of a pointer's x on the bar (clamped to the day).
  timeAt(clientX) {
    const r = this.bar.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (clientX - r.left) / (r.width || 1)));
    return this.day + Math.round(f * DAY);
  }

  pct(epoch) { return `${Math.min(100, Math.max(0, ((epoch - this.day) / DAY) * 100))}%`; }

  setDay(day) {
    this.day = day;
    this.items = [];
    this.range = null;
    this.draw();
  }

  setSegments(items) {
    this.items = items;
    this.draw();
  }

  setCursor(epoch) {
    this.cursor = epoch;
    const inDay = epoch !== null && epoch >= this.day && epoch <= this.day + DAY;
    this.head.hidden = !inDay;
    if (inDay) this.head.style.left = this.pct(epoch);
    this.bar.setAttribute("aria-valuetext", epoch === null ? "" : formatDateTime(epoch));
  }

  setRange(range) {
    this.range = range;
    this.sel.hidden = !range;
    if (range) {
      this.sel.style.left = this.pct(range[0]);
      this.sel.style.width = `calc(${this.pct(range[1])} - ${this.pct(range[0])})`;
    }
  }

  draw() {
    const end = this.day + DAY;
    this.segs.replaceChildren(...this.items.filter((it) => it.end > this.day && it.start < end).map((it) => {
      const type = TYPE_NAMES[it.type] ? it.type : "time";
      const seg = el("div", `tl-seg tl-${type}`);
      const start = Math.max(it.start, this.day);
      seg.style.left = this.pct(start);
      seg.style.width = `max(1px, calc(${this.pct(Math.min(it.end, end))} - ${this.pct(start)}))`;
      seg.dataset.start = String(it.start);
      seg.dataset.end = String(it.end);
      seg.dataset.type = it.type;
      seg.title = `${TYPE_NAMES[type]} ${formatClock(it.start)}–${formatClock(it.end)}${it.name ? ` · ${it.name}` : ""}`;
      return seg;
    }));
    this.setRange(this.range);
    this.setCursor(this.cursor);
  }

  down(ev) {
    if (ev.button !== 0) return;
    this.bar.setPointerCapture?.(ev.pointerId);
    this.drag = { x: ev.clientX, t: this.timeAt(ev.clientX), moved: false };
  }

  move(ev) {
    const t = this.timeAt(ev.clientX);
    this.hover.hidden = false;
    this.hover.style.left = this.pct(t);
    this.hover.textContent = formatClock(t);
    if (!this.drag) return;
    if (Math.abs(ev.clientX - this.drag.x) > 3) this.drag.moved = true;
    if (this.rangeMode && this.drag.moved) this.setRange([Math.min(this.drag.t, t), Math.max(this.drag.t, t)]);
    else if (!this.rangeMode) this.setCursor(t);  // scrub: the playhead follows, the seek comes on release
  }

  up(ev) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    const t = this.timeAt(ev.clientX);
    if (this.rangeMode) {
      if (drag.moved && t !== drag.t) {
        this.setRange([Math.min(drag.t, t), Math.max(drag.t, t)]);
        this.onRange(this.range[0], this.range[1]);
      }
      return;
    }
    this.setCursor(t);
    this.onSeek(t);
  }

  key(ev) {
    const step = ev.shiftKey ? 600 : 10;
    if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
    ev.preventDefault();
    const base = this.cursor ?? this.day;
    const t = Math.min(this.day + DAY, Math.max(this.day, base + (ev.key === "ArrowRight" ? step : -step)));
    this.setCursor(t);
    this.onSeek(t);
  }
}
