// 轮巡 (patrol): the grid cycles through the online cameras of a group — a district, the
// kindergartens ticked in the tree, or every entrance camera (大门口: area "entrance", confirmed
// or from the name) — one page of cells per dwell time.
//
// Each switch shows pictures at once because the next page is pre-opened: its cells play in a
// hidden strip (#patrol-standby, rendered but invisible, so the browser decodes them) and are
// swapped into the grid whole — the same <video> elements, already showing frames. Pre-opening
// needs two WebRTC sessions per cell, so a page has at most half the server's per-user cap
// (webrtc_per_user from /api/console/limits; an operator raises it for big patrol pages).
// The old page's sessions are closed at the switch; a pre-open the server still refuses (429:
// their slots are not given back yet) is retried.
//
// Patrol pauses while an alarm popup is open (alarm-popup.js sends kgw-alarm-popup), while the
// playback panel is open (its pre-opened page is closed then, to free the sessions) and when the
// user presses 暂停; it resumes with the time the page had left.

import { getAll } from "./api.js";
import { isCamera } from "./codes.js";
import { $, el } from "./dom.js";
import { cellStream, cells, layout, selectCell } from "./grid.js";
import { limits } from "./limits.js";
import { closeCell, makeCell, playInCell } from "./player.js";
import { tree } from "./tree-model.js";
import { renderTree } from "./tree-view.js";

const TICK_MS = 250;
const GRACE_MS = 5000;       // after the dwell, wait this long at most for the next page's pictures
const RETRY_MS = 1000;       // a pre-open refused by the peer cap (429) is tried again after this
const MAX_RETRIES = 30;
const PAUSE_TEXT = { alarm: "报警弹窗中", playback: "回放中", user: "已暂停" };

export const patrol = {
  running: false,
  label: "",
  channels: [],      // [{id, name}] of the group, in patrol order
  pageSize: 0,
  pages: 0,
  page: 0,           // shown page, 0-based
  dwellMs: 10000,
  pauses: new Set(), // why it holds still: "alarm", "playback", "user"
  switchAt: 0,       // performance.now() of the next switch
  remaining: 0,      // ms the page had left when paused
  standby: [],       // pre-opened cells (not in the grid)
  standbyPage: -1,
  retries: new Map(),  // standby cell -> 429 retries so far
  switches: [],      // [{page, at, ready: [readyState ≥ 2 of each new cell at the switch]}] (tests, diagnostics)
  timer: null,
};

function pageChannels(page) {
  return patrol.channels.slice(page * patrol.pageSize, (page + 1) * patrol.pageSize);
}

// --- the setup panel: group, dwell time -------------------------------------------------------

function setupPanel() {
  let panel = $("patrol-setup");
  if (panel) return panel;
  panel = el("section", "patrol-setup");
  panel.id = "patrol-setup";
  panel.setAttribute("aria-label", "轮巡设置");
  panel.hidden = true;
  const kinds = el("fieldset", "patrol-kinds");
  kinds.append(el("legend", "", "轮巡分组"));
  const option = (value, text, extra) => {
    const label = el("label", "patrol-kind");
    const radio = el("input");
    radio.type = "radio";
    radio.name = "patrol-kind";
    radio.value = value;
    label.append(radio, ` ${text}`);
    if (extra) label.append(" ", extra);
    kinds.append(label);
    return radio;
  };
  const district = el("select");
  district.id = "patrol-district";
  const picked = el("span", "patrol-picked");
  picked.id = "patrol-picked";
  option("district", "行政区", district).checked = true;
  option("kgs", "所选幼儿园", picked);
  option("entrance", "全部大门口摄像机");
  const dwell = el("label", "patrol-dwell", "每页停留 ");
  const seconds = el("input");
  seconds.id = "patrol-dwell";
  seconds.type = "number";
  seconds.min = "3";
  seconds.max = "600";
  seconds.value = localStorage.getItem("kgw-patrol-dwell") || "10";
  dwell.append(seconds, " 秒");
  const size = el("p", "hint");
  size.id = "patrol-size";
  const error = el("p", "error");
  error.id = "patrol-error";
  error.hidden = true;
  const start = el("button", "", "开始轮巡");
  start.type = "button";
  start.id = "patrol-start";
  const cancel = el("button", "", "取消");
  cancel.type = "button";
  const actions = el("div", "actions");
  actions.append(start, cancel);
  panel.append(el("h3", "", "轮巡"), kinds, dwell, size, error, actions);
  $("grid-wrap").before(panel);

  kinds.addEventListener("change", () => showPicking(kind() === "kgs"));
  start.addEventListener("click", () => startFromPanel());
  cancel.addEventListener("click", () => closeSetup());
  document.addEventListener("kgw-tree-picked", updatePicked);
  return panel;
}

function kind() {
  const checked = document.querySelector('input[name="patrol-kind"]:checked');
  return checked ? checked.value : "district";
}

function showPicking(on) {
  if (on && !tree.picked) tree.picked = new Set();
  if (!on) tree.picked = null;
  renderTree();
  updatePicked();
}

function updatePicked() {
  const box = $("patrol-picked");
  if (box) box.textContent = tree.picked ? `（在左侧勾选幼儿园，已选 ${tree.picked.size} 所）` : "";
}

async function openSetup() {
  const panel = setupPanel();
  const select = $("patrol-district");
  select.replaceChildren(...tree.order.map((code) => {
    const o = el("option", "", tree.districts.get(code)?.name || code);
    o.value = code;
    return o;
  }));
  $("patrol-error").hidden = true;
  panel.hidden = false;
  showPicking(kind() === "kgs");
  const cap = (await limits()).webrtc_per_user || 4;
  $("patrol-size").textContent =
    `每页 ${pageSizeFor(cap)} 路（当前布局 ${layout} 路；服务器每用户 WebRTC 上限 ${cap} 路，预加载下一页需双倍）`;
}

function closeSetup() {
  const panel = $("patrol-setup");
  if (panel) panel.hidden = true;
  if (tree.picked) showPicking(false);
}

function pageSizeFor(cap) {
  return Math.max(1, Math.min(layout, Math.floor(cap / 2)));
}

// The group's online cameras, in a stable order (kindergarten, then channel id).
async function groupChannels(which) {
  let items = [];
  if (which.kind === "district") {
    items = await getAll(`/api/channels?district=${encodeURIComponent(which.code)}&online=true`);
  } else if (which.kind === "kgs") {
    for (const id of which.ids) items.push(...await getAll(`/api/channels?kindergarten=${encodeURIComponent(id)}&online=true`, 5));
  } else {
    items = await getAll("/api/channels?area=entrance&online=true");
  }
  const order = which.kind === "kgs" ? new Map(which.ids.map((id, i) => [id, i])) : null;
  const rank = (ch) => (order ? order.get(ch.kindergarten_id) ?? 1e9 : 0);
  return items
    .filter((ch) => isCamera(ch.id))
    .sort((a, b) => rank(a) - rank(b) || String(a.kindergarten_id).localeCompare(String(b.kindergarten_id)) || a.id.localeCompare(b.id))
    .map((ch) => ({ id: ch.id, name: ch.name || ch.id }));
}

async function startFromPanel() {
  const which = { kind: kind() };
  let label = "";
  if (which.kind === "district") {
    which.code = $("patrol-district").value;
    label = tree.districts.get(which.code)?.name || which.code;
  } else if (which.kind === "kgs") {
    which.ids = tree.picked ? [...tree.picked] : [];
    label = `${which.ids.length} 所幼儿园`;
  } else {
    label = "全部大门口摄像机";
  }
  const dwell = Math.max(3, Math.min(600, Number($("patrol-dwell").value) || 10));
  localStorage.setItem("kgw-patrol-dwell", String(dwell));
  const error = $("patrol-error");
  try {
    if (which.kind === "district" && !which.code) throw new Error("请选择行政区");
    if (which.kind === "kgs" && !which.ids.length) throw new Error("请在左侧目录中勾选幼儿园");
    await startPatrol(which, dwell, label);
    closeSetup();
  } catch (err) {
    error.textContent = err.message || String(err);
    error.hidden = false;
  }
}

// --- running -----------------------------------------------------------------------------------

// Start patrolling `which` ({kind: "district", code} | {kind: "kgs", ids} | {kind: "entrance"}),
// `dwell` seconds per page. Returns the number of cameras.
export async function startPatrol(which, dwell, label) {
  const channels = await groupChannels(which);
  if (!channels.length) throw new Error("该分组没有在线的摄像机");
  stopPatrol();
  const cap = (await limits()).webrtc_per_user || 4;
  Object.assign(patrol, {
    running: true, label: label || "", channels, pageSize: pageSizeFor(cap), page: 0, dwellMs: dwell * 1000,
    switches: [], standbyPage: -1,
  });
  patrol.pages = Math.ceil(channels.length / patrol.pageSize);
  patrol.pauses = new Set();
  if ($("playback") && !$("playback").hidden) patrol.pauses.add("playback");
  if (document.querySelector("#alarm-popup:not([hidden])")) patrol.pauses.add("alarm");
  for (const cell of cells) if (cell.channelId) closeCell(cell);
  showPage(0);
  patrol.switchAt = performance.now() + patrol.dwellMs;
  patrol.remaining = patrol.dwellMs;
  preopen();
  patrol.timer = setInterval(tick, TICK_MS);
  render();
  return channels.length;
}

export function stopPatrol() {
  if (!patrol.running) return;
  patrol.running = false;
  clearInterval(patrol.timer);
  patrol.timer = null;
  dropStandby();
  render();
}

// Page `page` straight into the grid (the first page, or when nothing was pre-opened).
function showPage(page) {
  const list = pageChannels(page);
  for (let i = 0; i < layout; i++) {
    if (i < list.length) playInCell(cells[i], list[i].id, list[i].name, { stream: cellStream() });
    else if (cells[i].channelId) closeCell(cells[i]);
  }
  patrol.page = page;
  selectCell(0);
}

function standbyBox() {
  let box = $("patrol-standby");
  if (!box) {
    box = el("div", "patrol-standby");
    box.id = "patrol-standby";
    box.setAttribute("aria-hidden", "true");
    document.body.append(box);
  }
  return box;
}

// Open the next page in hidden cells, so its pictures are there before the switch.
function preopen() {
  if (patrol.pages < 2 || patrol.pauses.has("playback")) return;
  const next = (patrol.page + 1) % patrol.pages;
  if (patrol.standbyPage === next) return;
  dropStandby();
  const box = standbyBox();
  patrol.standbyPage = next;
  patrol.standby = pageChannels(next).map((ch, i) => {
    const cell = makeCell(100 + i, selectCell);  // its index becomes the grid's at the swap
    cell.el.id = `patrol-standby-${i}`;
    box.append(cell.el);
    playInCell(cell, ch.id, ch.name, { stream: cellStream() });  // the grid's rule: sub in 4 or more cells
    return cell;
  });
  patrol.retries = new Map();
}

function dropStandby() {
  for (const cell of patrol.standby) {
    closeCell(cell);
    cell.el.remove();
  }
  patrol.standby = [];
  patrol.standbyPage = -1;
}

function standbyReady() {
  return patrol.standby.length > 0 && patrol.standby.every((c) => c.video.readyState >= 2 && c.video.videoWidth > 0);
}

// Pre-opens the server refused for the peer cap: the old page's slots come back shortly.
function retryRefused(now) {
  for (const cell of patrol.standby) {
    if (cell.el.dataset.state !== "failed" || cell.httpStatus !== 429) continue;
    const entry = patrol.retries.get(cell) || { count: 0, at: now + RETRY_MS };
    patrol.retries.set(cell, entry);
    if (now >= entry.at && entry.count < MAX_RETRIES) {
      entry.count += 1;
      entry.at = now + RETRY_MS;
      playInCell(cell, cell.channelId, cell.name, { stream: cell.stream, offerUrl: cell.offerUrl });
    }
  }
}

// Put the pre-opened page into the grid: the same cells (and <video> elements), already playing.
function swapIn() {
  const incoming = patrol.standby;
  const ready = incoming.map((c) => c.video.readyState >= 2 && c.video.videoWidth > 0);
  const outgoing = [];
  for (let i = 0; i < layout; i++) {
    const old = cells[i];
    const fresh = incoming[i];
    if (!fresh) {
      if (old.channelId) closeCell(old);
      continue;
    }
    fresh.index = i;
    fresh.el.id = `cell-${i}`;
    fresh.el.dataset.index = String(i);
    fresh.video.id = `video-${i}`;
    fresh.el.querySelector(".cell-number").textContent = String(i + 1);
    old.el.replaceWith(fresh.el);  // one task: the moved <video> never pauses
    cells[i] = fresh;
    outgoing.push(old);
  }
  for (const old of outgoing) closeCell(old);  // their WebRTC sessions end now
  patrol.standby = [];
  patrol.page = patrol.standbyPage;
  patrol.standbyPage = -1;
  selectCell(0);
  patrol.switches.push({ page: patrol.page, at: Date.now(), ready });
  if (patrol.switches.length > 50) patrol.switches.shift();
}

function tick() {
  if (!patrol.running) return;
  const now = performance.now();
  retryRefused(now);
  if (patrol.pauses.size) {
    render();
    return;
  }
  if (patrol.pages > 1 && now >= patrol.switchAt) {
    if (!patrol.standby.length) preopen();
    if (standbyReady() || now >= patrol.switchAt + GRACE_MS) {
      if (patrol.standby.length) swapIn();
      else showPage((patrol.page + 1) % patrol.pages);
      patrol.switchAt = now + patrol.dwellMs;
      preopen();
    }
  }
  render();
}

function pause(reason) {
  if (!patrol.running || patrol.pauses.has(reason)) return;
  if (!patrol.pauses.size) patrol.remaining = Math.max(0, patrol.switchAt - performance.now());
  patrol.pauses.add(reason);
  if (reason === "playback") dropStandby();  // the playback session needs a WebRTC slot
  render();
}

function resume(reason) {
  if (!patrol.running || !patrol.pauses.delete(reason)) return;
  if (!patrol.pauses.size) {
    patrol.switchAt = performance.now() + patrol.remaining;
    preopen();
  }
  render();
}

// --- the bar: 第 n/m 页, 暂停/继续, 停止 ----------------------------------------------------------

function render() {
  const bar = $("patrol-bar");
  if (!bar) return;
  bar.hidden = !patrol.running;
  $("patrol-open").setAttribute("aria-pressed", String(patrol.running));
  if (!patrol.running) return;
  $("patrol-label").textContent = `轮巡：${patrol.label} · 共 ${patrol.channels.length} 路 · 每页 ${patrol.pageSize} 路`;
  $("patrol-page").textContent = `第 ${patrol.page + 1}/${patrol.pages} 页`;
  const reasons = [...patrol.pauses].map((r) => PAUSE_TEXT[r] || r);
  const left = Math.max(0, Math.ceil(((patrol.pauses.size ? patrol.remaining : patrol.switchAt - performance.now())) / 1000));
  const state = $("patrol-state");
  state.textContent = reasons.length ? `暂停（${reasons.join("、")}）` : patrol.pages > 1 ? `${left} 秒后翻页` : "仅一页";
  state.dataset.paused = String(reasons.length > 0);
  $("patrol-toggle").textContent = patrol.pauses.has("user") ? "继续" : "暂停";
}

export function setupPatrol() {
  $("patrol-open").addEventListener("click", () => {
    if (patrol.running) return;
    const panel = $("patrol-setup");
    if (panel && !panel.hidden) closeSetup();
    else openSetup();
  });
  $("patrol-toggle").addEventListener("click", () => (patrol.pauses.has("user") ? resume("user") : pause("user")));
  $("patrol-stop").addEventListener("click", () => stopPatrol());
  // The grid changes under it: a new layout or 全部关闭 ends the patrol.
  $("layouts").addEventListener("click", (ev) => {  // capture: before grid.js changes the layout
    const b = ev.target.closest("button[data-layout]");
    if (b && patrol.running && Number(b.dataset.layout) !== layout) stopPatrol();
  }, true);
  $("close-all").addEventListener("click", () => stopPatrol());
  document.addEventListener("kgw-alarm-popup", (ev) => (ev.detail && ev.detail.open ? pause("alarm") : resume("alarm")));
  document.addEventListener("kgw-playback", (ev) => {
    if (ev.detail && ev.detail.open) {
      closeSetup();
      pause("playback");
    } else {
      resume("playback");
    }
  });
  window.addEventListener("pagehide", () => dropStandby());
}
