// 接入达标看板 (coverage dashboard, zh-CN): counts per district and for the city, the table of every
// kindergarten the user may see (sortable, filterable, with the reasons), CSV/XLSX downloads of the
// filtered table, and the last 90 days' rate per district as a plain SVG chart. It reads only
// /api/coverage/* of this service; the whole list is fetched once (all=true) and sorted and
// filtered here, so 2,314 kindergartens render in well under a second. No external URLs.
// window.kgwCoverage exposes state for tests and bench/coverage_page.py (renderedAt: ms since
// navigation when the table was first drawn).

import { getJson } from "./api.js";
import { requireUser } from "./auth.js";
import { $, el } from "./dom.js";

const STATUS_ORDER = { missing: 0, partial: 1, complete: 2 };
const REFRESH_MS = 60000;
const state = { rows: [], sort: "status", desc: false, renderedAt: null, ready: false, shown: 0 };
window.kgwCoverage = state;

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function pct(rate) { return `${(100 * rate).toFixed(1)}%`; }
function day(epoch) {
  if (epoch == null) return "—";
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

// --- summary --------------------------------------------------------------------------------

function renderSummary(summary) {
  const body = $("summary-body");
  const frag = document.createDocumentFragment();
  for (const d of [...summary.districts, summary.city]) {
    const tr = el("tr");
    if (!d.district_code) tr.className = "city";
    tr.dataset.district = d.district_code || "city";
    for (const [text, num] of [[d.district_name, false], [d.total, true], [d.complete, true], [d.partial, true],
      [d.missing, true], [pct(d.rate), true]]) {
      const td = el("td", num ? "num" : "", String(text));
      if (!d.district_code) td.style.fontWeight = "bold";
      tr.append(td);
    }
    frag.append(tr);
  }
  body.replaceChildren(frag);
  $("evaluated").textContent = ` 统计时间 ${new Date(summary.evaluated_at * 1000).toLocaleString("zh-CN")}`;
  const district = $("f-district");
  if (district.options.length === 1) {
    for (const d of summary.districts) district.append(new Option(d.district_name, d.district_code));
    for (const s of summary.statuses) $("f-status").append(new Option(s.label, s.code));
    for (const r of summary.reasons) $("f-reason").append(new Option(r.label, r.code));
  }
}

// --- table ----------------------------------------------------------------------------------

const SORTS = {
  status: (r) => [STATUS_ORDER[r.status], -r.reasons.length, r.district_code, r.id],
  name: (r) => [r.name, r.id],
  district: (r) => [r.district_code, r.id],
  reasons: (r) => [-r.reasons.length, r.id],
  devices_online: (r) => [r.devices_online, r.id],
  last_drill: (r) => [r.last_drill || 0, r.id],
  flaps: (r) => [r.flaps_24h, r.id],
};

function compare(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] < b[i]) return -1;
    if (a[i] > b[i]) return 1;
  }
  return 0;
}

function filters() {
  return {
    district: $("f-district").value, status: $("f-status").value, reason: $("f-reason").value,
    q: $("f-text").value.trim(),
  };
}

function visibleRows() {
  const f = filters();
  const rows = state.rows.filter((r) => (!f.district || r.district_code === f.district)
    && (!f.status || r.status === f.status)
    && (!f.reason || r.reasons.some((x) => x.code === f.reason))
    && (!f.q || r.name.includes(f.q) || r.id.includes(f.q)));
  const key = SORTS[state.sort];
  const keyed = rows.map((r) => [key(r), r]);
  keyed.sort((a, b) => compare(a[0], b[0]) * (state.desc ? -1 : 1));
  return keyed.map((k) => k[1]);
}

function cell(tr, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  tr.append(td);
  return td;
}

function row(r) {
  const tr = document.createElement("tr");
  tr.dataset.id = r.id;
  tr.dataset.status = r.status;
  cell(tr, r.name).title = r.id;
  cell(tr, r.district_name);
  const st = document.createElement("span");
  st.className = `st ${r.status}`;
  st.textContent = r.status_label;
  const td = document.createElement("td");
  td.append(st);
  tr.append(td);
  cell(tr, r.reasons.map((x) => x.text).join("；"), "reasons");
  cell(tr, `${r.devices_online}/${r.devices}`, "num");
  cell(tr, `${r.channels_online}/${r.channels}`, "num");
  cell(tr, r.entrance ? `${r.entrance_online ? "在线" : "离线"}${r.entrance_confirmed ? "·已确认" : "·未确认"}` : "无");
  cell(tr, `${r.perimeter_online}/${r.perimeter}`, "num");
  cell(tr, r.alarms ? (r.alarms_online ? "在线" : "离线") : "无");
  cell(tr, day(r.last_drill));
  cell(tr, r.recording == null ? "未知" : (r.recording ? "可用" : "不可用"));
  cell(tr, r.uplink_loss_percent == null ? "—" : `${r.uplink_loss_percent.toFixed(1)}%`, "num");
  cell(tr, String(r.flaps_24h), "num");
  return tr;
}

function exportQuery() {
  const f = filters();
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v) params.set(k, v);
  params.set("sort", state.sort);
  params.set("order", state.desc ? "desc" : "asc");
  return params.toString();
}

function renderTable() {
  const rows = visibleRows();
  const frag = document.createDocumentFragment();
  for (const r of rows) frag.append(row(r));
  $("coverage-body").replaceChildren(frag);
  state.shown = rows.length;
  $("count").textContent = `共 ${rows.length} 所`;
  for (const th of document.querySelectorAll("#coverage-table th[data-sort]")) {
    if (th.dataset.sort === state.sort) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
  const query = exportQuery();
  $("export-csv").href = `/api/coverage/export.csv?${query}`;
  $("export-xlsx").href = `/api/coverage/export.xlsx?${query}`;
}

function setupTable() {
  for (const th of document.querySelectorAll("#coverage-table th[data-sort]")) {
    th.addEventListener("click", () => {
      if (state.sort === th.dataset.sort) state.desc = !state.desc;
      else { state.sort = th.dataset.sort; state.desc = false; }
      renderTable();
    });
  }
  for (const id of ["f-district", "f-status", "f-reason"]) $(id).addEventListener("change", renderTable);
  $("f-text").addEventListener("input", renderTable);
}

// --- 90-day chart (plain SVG) -----------------------------------------------------------------

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function renderChart(history) {
  const days = history.days;
  const chart = $("chart");
  const legend = $("chart-legend");
  chart.replaceChildren();
  legend.replaceChildren();
  if (!days.length) {
    chart.append(el("p", "summary", "暂无历史数据"));
    return;
  }
  const W = 900, H = 260, L = 40, R = 10, T = 10, B = 30;
  const x = (i) => L + (days.length === 1 ? 0 : (i * (W - L - R)) / (days.length - 1));
  const y = (rate) => T + (1 - rate) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "近90天各区接入率" });
  for (const rate of [0, 0.25, 0.5, 0.75, 1]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(rate), y2: y(rate), stroke: "#e4e8ec" }));
    const label = svg("text", { x: L - 4, y: y(rate) + 4, "text-anchor": "end", "font-size": 11, fill: "#666" });
    label.textContent = `${rate * 100}%`;
    root.append(label);
  }
  for (const i of [0, Math.floor((days.length - 1) / 2), days.length - 1]) {
    const label = svg("text", { x: x(i), y: H - 8, "text-anchor": "middle", "font-size": 11, fill: "#666" });
    label.textContent = days[i].slice(5);
    root.append(label);
  }
  const index = new Map(days.map((d, i) => [d, i]));
  const series = history.districts.map((d, n) => ({ name: d.district_name, points: d.points, colour: COLOURS[n % COLOURS.length], width: 1.5 }));
  if (history.districts.length > 1) series.push({ name: "全市", points: history.city, colour: "#000", width: 3 });
  for (const s of series) {
    const path = s.points.map((p, k) => `${k ? "L" : "M"}${x(index.get(p.day)).toFixed(1)},${y(p.rate).toFixed(1)}`).join(" ");
    const line = svg("path", { d: path, fill: "none", stroke: s.colour, "stroke-width": s.width });
    const title = svg("title", {});
    const last = s.points[s.points.length - 1];
    title.textContent = `${s.name} ${last ? pct(last.rate) : ""}`;
    line.append(title);
    root.append(line);
    const item = el("span", "", s.name);
    item.style.setProperty("--c", s.colour);
    legend.append(item);
  }
  chart.append(root);
}

// --- start ----------------------------------------------------------------------------------

async function load() {
  const [summary, list] = await Promise.all([getJson("/api/coverage/summary"), getJson("/api/coverage/kindergartens?all=true")]);
  renderSummary(summary);
  state.rows = list.items;
  renderTable();
  if (state.renderedAt === null) state.renderedAt = performance.now();
  state.ready = true;
  showError("");
}

async function loadHistory() {
  try {
    renderChart(await getJson("/api/coverage/history"));
    state.chart = true;
  } catch (err) {
    showError(`历史数据读取失败：${err.message || err}`);
  }
}

async function start() {
  const user = await requireUser(() => {
    $("status").textContent = "服务不可用";
  });
  if (!user) return;
  setupTable();
  try {
    await load();
  } catch (err) {
    showError(`读取失败：${err.message || err}`);
  }
  loadHistory();
  setInterval(() => load().catch((err) => showError(`读取失败：${err.message || err}`)), REFRESH_MS);
}

start();
