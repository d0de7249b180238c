// 幼儿园视频监控 console (zh-CN), served by every kgw service (gateway, district,
// municipal or police platform) from its own API only, so each shows what it received.
//
//   left:   a lazily loaded tree 行政区划 → 幼儿园 → 通道 (GET /api/districts,
//           /api/kindergartens?district=, /api/channels?kindergarten=), online counts,
//           area labels and a search over the names loaded so far;
//   centre: a live-view grid of 1/4/9/16 cells, one RTCPeerConnection per cell
//           (POST /api/channels/{id}/webrtc, one round trip, no trickle ICE);
//           /live/{channel_id} opens that channel straight into cell 1;
//   right:  alarms (GET /api/alarms + the WebSocket /api/alarms/ws): sound + flash,
//           acknowledge / resolve by the named operator, 查看现场 plays the live channel.
//
// No build step, no external URLs. window.kgwConsole exposes state for tests.
"use strict";

const AREAS = {
  entrance: "出入口", perimeter: "周界", classroom: "教室", dormitory: "寝室",
  playground: "操场", kitchen: "厨房", corridor: "走廊", other: "其他",
};
const CHANNEL_KINDS = { "131": "摄像机", "132": "网络摄像机", "134": "报警输入", "135": "报警输出", "136": "语音输入" };
const PLAYABLE_TYPES = new Set(["131", "132"]);
const LAYOUTS = [1, 4, 9, 16];
const PAGE = 1000;            // the API's largest page
const REFRESH_MS = 30000;     // tree counts and service summary
const NO_PICTURE_MS = 20000;  // a cell that shows no picture by then says so
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

let errorTimer = null;

// The grid's message line; a hint (hideAfterMs) clears itself.
function showError(text, hideAfterMs) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
  clearTimeout(errorTimer);
  if (text && hideAfterMs) errorTimer = setTimeout(() => showError(""), hideAfterMs);
}

function typeCode(id) { return id && id.length === 20 ? id.slice(10, 13) : ""; }
function isCamera(id) { return PLAYABLE_TYPES.has(typeCode(id)); }

async function getJson(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) {
    let detail = "";
    try { detail = (await resp.json()).error || ""; } catch (err) { /* not JSON */ }
    throw new Error(`${url}: HTTP ${resp.status}${detail ? ` ${detail}` : ""}`);
  }
  return resp.json();
}

// Every item of a paginated list (offset/limit, limit <= 1000).
async function getAll(url, maxPages = 50) {
  const items = [];
  const sep = url.includes("?") ? "&" : "?";
  for (let page = 0; page < maxPages; page++) {
    const body = await getJson(`${url}${sep}limit=${PAGE}&offset=${page * PAGE}`);
    items.push(...body.items);
    if (body.items.length < PAGE || items.length >= body.total) break;
  }
  return items;
}

// --- header: who this service is ------------------------------------------------------------

const service = { id: "", role: "" };

// The role as told by /healthz when it says so, otherwise read from the 20-digit ID:
// type 200 (SIP server) is a platform, 209 an access gateway.
function roleOf(health) {
  if (health.role || health.level) {
    const names = { district: "区级平台", municipal: "市级平台", police: "公安平台", gateway: "接入网关" };
    return names[health.role || health.level] || String(health.role || health.level);
  }
  const id = health.gateway_id || "";
  const type = typeCode(id);
  if (type === "209") return "接入网关";
  if (type === "200") {
    if (id.endsWith("0110")) return "公安平台";
    const civil = id.slice(0, 6);
    if (civil.endsWith("00")) return "市级平台";
    const d = tree.districts.get(civil);
    return `区级平台${d && d.name ? ` · ${d.name}` : ` · ${civil}`}`;
  }
  return type ? `类型 ${type}` : "";
}

async function loadHealth() {
  try {
    const health = await getJson("/healthz");
    service.id = health.gateway_id || "";
    service.role = roleOf(health);
    $("service").textContent = `kgw · ${service.id}`;
    $("role").textContent = service.role;
    document.title = `幼儿园视频监控 · ${service.role || "监控台"}`;
    $("status").textContent =
      `设备在线 ${health.devices_online ?? "?"}/${health.devices_known ?? "?"} · 通道在线 ${health.channels_online ?? "?"}`;
  } catch (err) {
    $("status").textContent = "服务状态未知";
  }
}

// --- the tree: 行政区划 → 幼儿园 → 通道 ---------------------------------------------------------
//
// The model holds what was loaded; renderTree() rebuilds the DOM from it, with only the
// children of expanded nodes (or, while searching, the loaded matches and their ancestors).

const tree = {
  districts: new Map(),   // code -> {kind, id, name, counts from /api/districts, expanded, kgIds, loading, error}
  order: [],              // district codes in display order
  kgs: new Map(),         // id -> {kind, id, name, district, expanded, channelIds, loading, error, virtual}
  channels: new Map(),    // id -> channel JSON plus kind
  kgCounts: new Map(),    // kindergarten id -> {total, online} from the district scan
  query: "",
};

function nodeKey(node) { return `${node.kind}:${node.id}`; }

function findNode(key) {
  const [kind, id] = key.split(":");
  if (kind === "district") return tree.districts.get(id);
  if (kind === "kg") return tree.kgs.get(id);
  return tree.channels.get(id);
}

function unassignedId(code) { return `none-${code}`; }

function childrenOf(node) {
  if (node.kind === "district") {
    const kids = (node.kgIds || []).map((id) => tree.kgs.get(id)).filter(Boolean);
    const extra = tree.kgs.get(unassignedId(node.id));
    if (extra && extra.channelIds && extra.channelIds.length) kids.push(extra);
    return kids;
  }
  if (node.kind === "kg") return (node.channelIds || []).map((id) => tree.channels.get(id)).filter(Boolean);
  return [];
}

function kgOnline(kg) {
  if (kg.channelIds) {
    const list = childrenOf(kg);
    return { total: list.length, online: list.filter((c) => c.online).length };
  }
  return tree.kgCounts.get(kg.id) || null;
}

function dotClass(counts) {
  if (!counts) return "dot unknown";
  if (!counts.total || !counts.online) return "dot off";
  return counts.online === counts.total ? "dot on" : "dot part";
}

function countText(counts) {
  if (!counts) return "";
  if (!counts.total) return "无通道";
  return `在线 ${counts.online}/${counts.total}`;
}

// The channel's own part of "幼儿园名·大门口" under its kindergarten.
function shortName(ch) {
  const name = ch.name || ch.id;
  const kg = tree.kgs.get(ch.kindergarten_id || "");
  if (kg && name.startsWith(kg.name) && name.length > kg.name.length) return name.slice(kg.name.length).replace(/^[·\s-]+/, "");
  return name;
}

function channelName(id) {
  const ch = tree.channels.get(id);
  return ch ? ch.name || ch.id : "";
}

function nodeMatches(node, q) {
  if (node.name && node.name.toLowerCase().includes(q)) return true;
  if (node.kind === "channel" && AREAS[node.area] && AREAS[node.area].includes(q)) return true;
  return !node.virtual && node.id.startsWith(q);
}

function rowFor(node) {
  const row = el("div", "row");
  row.tabIndex = 0;
  if (node.kind === "channel") {
    const camera = isCamera(node.id);
    row.append(el("span", "toggle leaf", ""), el("span", node.online ? "dot on" : "dot off"));
    const name = el("span", "name", shortName(node));
    name.title = `${node.name || ""}\n${node.id}`;
    row.append(name);
    if (node.area) row.append(el("span", `area area-${node.area}`, AREAS[node.area] || node.area));
    if (!camera) row.append(el("span", "kind", CHANNEL_KINDS[typeCode(node.id)] || "非视频"));
    row.append(el("span", node.online ? "state online" : "state offline", node.online ? "在线" : "离线"));
    row.title = camera ? "点击在画面中播放" : "不是摄像机，不能播放";
    return row;
  }
  const open = node.expanded;
  row.append(el("span", "toggle", open ? "▾" : "▸"));
  let counts;
  if (node.kind === "district") {
    counts = { total: node.channels, online: node.channels_online };
  } else {
    counts = kgOnline(node);
  }
  row.append(el("span", dotClass(counts)));
  const name = el("span", "name", node.name || node.id);
  name.title = node.virtual ? node.name : `${node.name || ""}\n${node.id}`;
  row.append(name);
  if (node.kind === "district") row.append(el("span", "sub", `${node.kindergartens} 所`));
  row.append(el("span", `count ${counts && counts.online ? "online" : "offline"}`, countText(counts)));
  return row;
}

// One <li> for the node (null when filtered out); children only when open.
function nodeEl(node, q) {
  const self = !q || nodeMatches(node, q);
  let kids = null;
  if (node.kind !== "channel") {
    const open = self ? node.expanded : true;
    if (open) {
      kids = childrenOf(node).map((c) => nodeEl(c, self ? "" : q)).filter(Boolean);
      if (!self && !kids.length) return null;
    }
  } else if (!self) {
    return null;
  }
  const li = el("li", `node ${node.kind}`);
  li.dataset.key = nodeKey(node);
  li.dataset.id = node.id;
  li.setAttribute("role", "treeitem");
  if (node.kind === "channel") {
    li.classList.add(isCamera(node.id) ? "playable" : "not-playable", node.online ? "is-online" : "is-offline");
    if (cells.some((c) => c.channelId === node.id)) li.classList.add("playing");
  } else {
    li.setAttribute("aria-expanded", kids ? "true" : "false");
    if (node.virtual) li.classList.add("virtual");
  }
  const row = rowFor(node);
  if (kids && node.kind !== "channel" && !node.expanded) row.querySelector(".toggle").textContent = "▾";
  li.append(row);
  if (kids) {
    const ul = el("ul", "children");
    ul.setAttribute("role", "group");
    if (node.loading && !kids.length) ul.append(el("li", "placeholder", "加载中…"));
    else if (node.error) ul.append(el("li", "placeholder error", node.error));
    else if (!kids.length && !q) ul.append(el("li", "placeholder", node.kind === "district" ? "无幼儿园" : "无通道"));
    ul.append(...kids);
    li.append(ul);
  }
  return li;
}

function renderTree() {
  const ul = $("tree");
  const top = ul.scrollTop;
  const active = document.activeElement;
  const focusKey = active && ul.contains(active) ? active.closest("li")?.dataset.key : null;
  const q = tree.query;
  const frag = document.createDocumentFragment();
  for (const code of tree.order) {
    const li = nodeEl(tree.districts.get(code), q);
    if (li) frag.append(li);
  }
  ul.replaceChildren(frag);
  ul.scrollTop = top;
  if (focusKey) ul.querySelector(`li[data-key="${focusKey}"] > .row`)?.focus({ preventScroll: true });
  if (!ul.children.length) ul.append(el("li", "placeholder", q ? "已加载的名称中没有匹配项" : "暂无数据"));
  const ds = tree.order.map((code) => tree.districts.get(code));
  const kgTotal = ds.reduce((n, d) => n + (d.kindergartens || 0), 0);
  const chTotal = ds.reduce((n, d) => n + (d.channels || 0), 0);
  const chOnline = ds.reduce((n, d) => n + (d.channels_online || 0), 0);
  $("tree-summary").textContent = `${ds.length} 个区 · ${kgTotal} 所幼儿园 · 通道在线 ${chOnline}/${chTotal}` +
    (q ? ` · 搜索「${tree.query}」仅限已展开加载的节点` : "");
}

function markPlaying() {
  const playing = new Set(cells.map((c) => c.channelId).filter(Boolean));
  for (const li of $("tree").querySelectorAll("li.channel")) li.classList.toggle("playing", playing.has(li.dataset.id));
}

function showTreeError(text) {
  $("tree-error").textContent = text || "";
  $("tree-error").hidden = !text;
}

async function loadDistricts() {
  const body = await getJson("/api/districts");
  const seen = [];
  for (const item of body.items) {
    const code = item.district_code;
    // A platform counts its registered lower platforms under the city's code: nothing to browse.
    if (!item.kindergartens && !item.channels) continue;
    const d = tree.districts.get(code) || { kind: "district", id: code, expanded: false, kgIds: null, loading: false, error: "" };
    Object.assign(d, {
      name: item.name || code, kindergartens: item.kindergartens, devices: item.devices,
      devices_online: item.devices_online, channels: item.channels, channels_online: item.channels_online,
    });
    tree.districts.set(code, d);
    seen.push(code);
  }
  tree.order = seen.sort();
}

async function loadKindergartens(d) {
  const items = await getAll(`/api/kindergartens?district=${encodeURIComponent(d.id)}`);
  for (const item of items) {
    const kg = tree.kgs.get(item.id) || { kind: "kg", id: item.id, expanded: false, channelIds: null, loading: false, error: "" };
    Object.assign(kg, { name: item.name || item.id, district: d.id, address: item.address || "" });
    tree.kgs.set(item.id, kg);
  }
  d.kgIds = items.map((k) => k.id);
}

function rememberChannels(items) {
  for (const ch of items) tree.channels.set(ch.id, Object.assign(ch, { kind: "channel" }));
  for (const cell of cells) {
    if (cell.channelId && !cell.named && tree.channels.has(cell.channelId)) {
      cell.named = true;
      cell.name = channelName(cell.channelId);
      cell.title.textContent = cellLabel(cell.name);
    }
  }
}

// Online counts of every kindergarten of a district in a few pages, plus the channels
// that belong to no known kindergarten (shown under a node of their own). Once the totals
// are known and the district's channel count is unchanged, a refresh reads only the
// offline channels (usually few) instead of all of them.
async function scanDistrict(d) {
  const noneId = unassignedId(d.id);
  if (d.scan && d.scan.total === d.channels) {
    const offline = await getAll(`/api/channels?district=${encodeURIComponent(d.id)}&online=false`);
    const down = new Map();
    for (const ch of offline) {
      const kgId = ch.kindergarten_id && d.scan.totals.has(ch.kindergarten_id) ? ch.kindergarten_id : null;
      if (kgId) down.set(kgId, (down.get(kgId) || 0) + 1);
    }
    for (const [id, total] of d.scan.totals) tree.kgCounts.set(id, { total, online: Math.max(0, total - (down.get(id) || 0)) });
    const offIds = new Set(offline.map((c) => c.id));
    const extra = tree.kgs.get(noneId);
    for (const id of (extra && extra.channelIds) || []) {
      const ch = tree.channels.get(id);
      if (ch) ch.online = !offIds.has(id);
    }
    return;
  }
  const items = await getAll(`/api/channels?district=${encodeURIComponent(d.id)}`);
  const counts = new Map();
  const loose = [];
  for (const ch of items) {
    const kgId = ch.kindergarten_id && tree.kgs.has(ch.kindergarten_id) ? ch.kindergarten_id : null;
    if (!kgId) { loose.push(ch); continue; }
    const c = counts.get(kgId) || { total: 0, online: 0 };
    c.total += 1;
    if (ch.online) c.online += 1;
    counts.set(kgId, c);
  }
  const totals = new Map();
  for (const id of d.kgIds || []) {
    const c = counts.get(id) || { total: 0, online: 0 };
    tree.kgCounts.set(id, c);
    totals.set(id, c.total);
  }
  d.scan = { total: items.length, totals };
  if (loose.length) {
    rememberChannels(loose);
    const extra = tree.kgs.get(noneId) || { kind: "kg", id: noneId, name: "未归属幼儿园的通道", district: d.id,
                                            expanded: false, loading: false, error: "", virtual: true };
    extra.channelIds = loose.map((c) => c.id);
    tree.kgs.set(noneId, extra);
  } else {
    tree.kgs.delete(noneId);
  }
}

async function loadChannels(kg) {
  if (kg.virtual) return;
  const items = await getAll(`/api/channels?kindergarten=${encodeURIComponent(kg.id)}`, 5);
  rememberChannels(items);
  kg.channelIds = items.map((c) => c.id);
}

async function expandDistrict(d) {
  d.expanded = true;
  if (d.kgIds === null && !d.loading) {
    d.loading = true;
    d.error = "";
    renderTree();
    try {
      await loadKindergartens(d);
    } catch (err) {
      d.error = `加载幼儿园失败: ${err.message || err}`;
    } finally {
      d.loading = false;
    }
    renderTree();
    scanDistrict(d).then(renderTree, () => {});  // counts follow; the names are usable already
    return;
  }
  renderTree();
}

async function expandKg(kg) {
  kg.expanded = true;
  if (kg.channelIds === null && !kg.loading) {
    kg.loading = true;
    kg.error = "";
    renderTree();
    try {
      await loadChannels(kg);
    } catch (err) {
      kg.error = `加载通道失败: ${err.message || err}`;
    } finally {
      kg.loading = false;
    }
  }
  renderTree();
}

function toggleNode(node) {
  if (node.expanded) {
    node.expanded = false;
    renderTree();
  } else if (node.kind === "district") {
    expandDistrict(node);
  } else if (node.kind === "kg") {
    expandKg(node);
  }
}

function activate(li) {
  const node = findNode(li.dataset.key || "");
  if (!node) return;
  if (node.kind !== "channel") {
    toggleNode(node);
    return;
  }
  if (!isCamera(node.id)) {
    showError(`「${node.name || node.id}」是${CHANNEL_KINDS[typeCode(node.id)] || "非视频通道"}，不能播放`, 5000);
    return;
  }
  showError("");
  playInGrid(node.id, node.name);
}

// Open the path to a channel (an alarm's kindergarten) and scroll it into view.
async function reveal(districtCode, kgId, channelId) {
  const d = tree.districts.get(districtCode || "");
  if (!d) return;
  if (!d.expanded || d.kgIds === null) await expandDistrict(d);
  const kg = tree.kgs.get(kgId || "");
  if (kg && (!kg.expanded || kg.channelIds === null)) await expandKg(kg);
  const li = $("tree").querySelector(`li[data-key="channel:${channelId}"]`) || $("tree").querySelector(`li[data-key="kg:${kgId}"]`);
  if (li) li.scrollIntoView({ block: "nearest" });
}

async function refreshTree() {
  try {
    await loadDistricts();
    showTreeError("");
  } catch (err) {
    showTreeError(`加载行政区划失败: ${err.message || err}`);
  }
  renderTree();
  const jobs = [];
  for (const d of tree.districts.values()) if (d.expanded && d.kgIds !== null) jobs.push(scanDistrict(d));
  for (const kg of tree.kgs.values()) {
    if (kg.virtual || kg.channelIds === null) continue;
    if (kg.expanded) jobs.push(loadChannels(kg));
    else kg.channelIds = null;  // stale: loaded again on expand; its counts come from the scan
  }
  await Promise.allSettled(jobs);
  renderTree();
}

function setupTree() {
  const ul = $("tree");
  ul.addEventListener("click", (ev) => {
    const row = ev.target.closest(".row");
    if (row && ul.contains(row)) activate(row.parentElement);
  });
  ul.addEventListener("keydown", (ev) => {
    const row = ev.target.closest(".row");
    if (!row) return;
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      activate(row.parentElement);
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const rows = [...ul.querySelectorAll(".row")];
      const next = rows[rows.indexOf(row) + (ev.key === "ArrowDown" ? 1 : -1)];
      if (next) next.focus();
    }
  });
  let timer = null;
  $("tree-search").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { tree.query = $("tree-search").value.trim().toLowerCase(); renderTree(); }, 150);
  });
  $("tree-refresh").addEventListener("click", () => { refreshTree(); loadHealth(); });
}

// --- the live-view grid ---------------------------------------------------------------------

const cells = [];          // all 16 cells; the first `layout` are shown
const peerLog = [];        // recent {cell, channelId, pc} for diagnostics (window.kgwConsole)
let layout = 4;
let selected = 0;

function makeCell(index) {
  const root = el("div", "cell empty");
  root.id = `cell-${index}`;
  root.dataset.index = String(index);
  root.dataset.state = "empty";
  root.tabIndex = 0;
  const video = el("video");
  video.id = `video-${index}`;
  video.autoplay = true;
  video.muted = true;
  video.playsInline = true;
  const bar = el("div", "cell-bar");
  const title = el("span", "cell-title", "");
  const status = el("span", "cell-status", "");
  status.setAttribute("role", "status");
  const retry = el("button", "cell-retry", "重试");
  retry.type = "button";
  retry.title = "重新连接";
  const close = el("button", "cell-close", "×");
  close.type = "button";
  close.title = "关闭画面";
  close.setAttribute("aria-label", "关闭画面");
  bar.append(title, status, retry, close);
  const empty = el("div", "cell-empty");
  empty.append(el("span", "cell-number", String(index + 1)), el("span", "", "点击左侧摄像机播放"));
  root.append(video, empty, bar);
  const cell = { index, el: root, video, title, status, channelId: null, name: "", named: false, pc: null, timer: null };
  root.addEventListener("click", () => selectCell(index));
  root.addEventListener("dblclick", () => { if (cell.channelId && root.requestFullscreen) root.requestFullscreen().catch(() => {}); });
  close.addEventListener("click", (ev) => { ev.stopPropagation(); closeCell(cell); selectCell(index); });
  retry.addEventListener("click", (ev) => { ev.stopPropagation(); if (cell.channelId) playInCell(cell, cell.channelId, cell.name); });
  video.addEventListener("playing", () => { if (cell.pc) setCellState(cell, "playing", "播放中"); });
  return cell;
}

function setCellState(cell, state, text) {
  cell.el.dataset.state = state;
  for (const s of ["empty", "connecting", "playing", "failed"]) cell.el.classList.toggle(s, s === state);
  cell.status.textContent = text || "";
  cell.status.title = text || "";
}

function selectCell(index) {
  selected = index;
  for (const c of cells) c.el.classList.toggle("selected", c.index === index);
}

function stopCell(cell) {
  clearTimeout(cell.timer);
  cell.timer = null;
  if (cell.pc) {
    cell.pc.close();
    cell.pc = null;
  }
  cell.video.srcObject = null;
}

function closeCell(cell) {
  stopCell(cell);
  cell.channelId = null;
  cell.name = "";
  cell.named = false;
  cell.title.textContent = "";
  cell.title.title = "";
  setCellState(cell, "empty", "");
  markPlaying();
}

function closeAll() {
  for (const cell of cells) if (cell.channelId) closeCell(cell);
  selectCell(0);
}

function setLayout(n) {
  if (!LAYOUTS.includes(n)) n = 4;
  layout = n;
  for (const cell of cells) {
    const shown = cell.index < n;
    if (!shown && cell.channelId) closeCell(cell);  // fewer cells: their connections end
    cell.el.hidden = !shown;
  }
  const grid = $("grid");
  grid.className = `layout-${n}`;
  grid.style.setProperty("--cols", String(Math.sqrt(n)));
  for (const b of $("layouts").querySelectorAll("button")) b.setAttribute("aria-pressed", String(Number(b.dataset.layout) === n));
  if (selected >= n) selectCell(nextFree(0) ?? 0);
  localStorage.setItem("kgw-layout", String(n));
}

// The first empty shown cell from `start` on (wrapping), or null.
function nextFree(start) {
  for (let k = 0; k < layout; k++) {
    const i = (start + k) % layout;
    if (!cells[i].channelId) return i;
  }
  return null;
}

// Play in the selected cell (the user picks one by clicking it); afterwards the selection
// moves on to the next free cell, so clicking cameras one after another fills the grid.
function playInGrid(channelId, name, index) {
  const already = cells.slice(0, layout).find((c) => c.channelId === channelId && c.el.dataset.state !== "failed");
  if (already && index === undefined) {
    selectCell(already.index);
    return already;
  }
  let target = index ?? selected;
  if (target >= layout) target = nextFree(0) ?? 0;
  const cell = cells[target];
  playInCell(cell, channelId, name);
  selectCell(nextFree(target) ?? target);
  return cell;
}

function waitIceComplete(conn, timeoutMs) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); conn.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (conn.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);  // send what we have rather than hang
    conn.addEventListener("icegatheringstatechange", check);
  });
}

// "幼儿园名·大门口" → "大门口 · 幼儿园名": the camera first, so small cells keep what matters.
function cellLabel(name) {
  const parts = name.split("·");
  return parts.length > 1 ? `${parts.pop().trim()} · ${parts.join("·").trim()}` : name;
}

async function playInCell(cell, channelId, name) {
  stopCell(cell);
  cell.channelId = channelId;
  cell.name = name || channelName(channelId) || channelId;
  cell.named = Boolean(name || channelName(channelId));
  cell.title.textContent = cellLabel(cell.name);
  cell.title.title = channelId;
  setCellState(cell, "connecting", "连接中…");
  markPlaying();
  const conn = new RTCPeerConnection({ iceServers: [] });
  cell.pc = conn;
  peerLog.push({ cell: cell.index, channelId, pc: conn });
  if (peerLog.length > 64) peerLog.shift();
  const fail = (text) => {
    if (cell.pc !== conn) return;
    setCellState(cell, "failed", `失败：${text}`);
    clearTimeout(cell.timer);
  };
  try {
    conn.addTransceiver("video", { direction: "recvonly" });
    conn.addEventListener("track", (ev) => {
      if (cell.pc !== conn) return;
      cell.video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      cell.video.play().catch((err) => { if (err.name !== "AbortError") fail(`无法自动播放 ${err.message}`); });
    });
    conn.addEventListener("connectionstatechange", () => {
      if (cell.pc !== conn) return;
      if (conn.connectionState === "failed") fail("WebRTC 连接失败");
      else if (conn.connectionState === "disconnected") setCellState(cell, "connecting", "连接中断，等待恢复…");
      else if (conn.connectionState === "connected" && cell.video.readyState >= 2) setCellState(cell, "playing", "播放中");
    });
    cell.timer = setTimeout(() => { if (cell.pc === conn && cell.video.readyState < 2) fail("20 秒内没有收到画面"); }, NO_PICTURE_MS);
    await conn.setLocalDescription(await conn.createOffer());
    await waitIceComplete(conn, 3000);
    if (cell.pc !== conn) return;  // closed or replaced meanwhile
    const resp = await fetch(`/api/channels/${encodeURIComponent(channelId)}/webrtc`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: conn.localDescription.sdp }),
    });
    const text = await resp.text();
    if (!resp.ok) {
      let detail = text;
      try { detail = JSON.parse(text).error || text; } catch (err) { /* plain text */ }
      throw new Error(`网关拒绝 (HTTP ${resp.status})：${detail}`);
    }
    if (cell.pc !== conn) return;
    await conn.setRemoteDescription({ type: "answer", sdp: JSON.parse(text).sdp });
  } catch (err) {
    if (cell.pc === conn) {
      fail(err.message || String(err));
      conn.close();
      cell.pc = null;
    }
  }
}

function setupGrid() {
  const grid = $("grid");
  for (let i = 0; i < 16; i++) {
    const cell = makeCell(i);
    cells.push(cell);
    grid.append(cell.el);
  }
  for (const b of $("layouts").querySelectorAll("button")) b.addEventListener("click", () => setLayout(Number(b.dataset.layout)));
  $("close-all").addEventListener("click", closeAll);
  window.addEventListener("pagehide", () => { for (const c of cells) stopCell(c); });
}

function channelFromPath() {
  const m = location.pathname.match(/^\/live\/([0-9A-Za-z]+)\/?$/);
  return m ? m[1] : null;
}

// --- alarms ------------------------------------------------------------------------------

const STATES = { new: "新报警", delivered: "已送达", acknowledged: "已确认", resolved: "已处置" };
const alarms = new Map();  // id -> alarm JSON, newest first in the list

function operatorName() {
  const name = $("operator").value.trim();
  if (!name) {
    $("operator").focus();
    throw new Error("请先填写值班员姓名");
  }
  localStorage.setItem("kgw-operator", name);
  return name;
}

function showAlarmError(text) {
  const box = $("alarm-error");
  box.textContent = text;
  box.hidden = !text;
}

function beep() {
  // A short two-tone alert made on the spot (no sound file to fetch); browsers may
  // keep audio off until the user has clicked the page once.
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    [880, 660, 880].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = freq;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + i * 0.25);
      osc.stop(ctx.currentTime + i * 0.25 + 0.2);
    });
  } catch (err) { /* no audio: the flashing entry still shows */ }
}

function formatTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString("zh-CN", { hour12: false });
}

function renderAlarm(alarm) {
  let li = document.querySelector(`#alarms li[data-id="${alarm.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.id = alarm.id;
  }
  li.className = `state-${alarm.state}` + (li.classList.contains("fresh") ? " fresh" : "");
  const title = el("div", "title", `${alarm.kind_name} · ${alarm.kindergarten_name || alarm.kindergarten_id || alarm.device_id}`);
  if (alarm.escalated_at) {
    const esc = el("span", "escalated", "已升级");
    esc.title = `已升级至市级 ${formatTime(alarm.escalated_at)}`;
    title.append(esc);
  }
  const who = alarm.resolved_by ? ` · 处置人 ${alarm.resolved_by}` : alarm.acknowledged_by ? ` · 确认人 ${alarm.acknowledged_by}` : "";
  const meta = el("div", "meta", `${formatTime(alarm.received_at)} · ${alarm.district_name} · 优先级 ${alarm.priority ?? "?"} · ` +
    `${STATES[alarm.state] || alarm.state}${who}`);
  const actions = el("div", "actions");
  if (alarm.live_channel_id) {
    const live = el("button", "live", "查看现场");
    live.type = "button";
    live.addEventListener("click", () => {
      playInGrid(alarm.live_channel_id, `${alarm.kindergarten_name || alarm.kindergarten_id || ""} 出入口`);
      reveal(alarm.district_code, alarm.kindergarten_id, alarm.live_channel_id).catch(() => {});
    });
    actions.append(live);
  }
  if (alarm.state === "new" || alarm.state === "delivered") {
    const ack = el("button", "ack", "确认");
    ack.type = "button";
    ack.addEventListener("click", () => act(alarm.id, "ack"));
    actions.append(ack);
  }
  if (alarm.state !== "resolved") {
    const done = el("button", "resolve", "处置完毕");
    done.type = "button";
    done.addEventListener("click", () => act(alarm.id, "resolve"));
    actions.append(done);
  }
  li.replaceChildren(title, meta, actions);
  if (alarm.has_snapshot) {
    const img = document.createElement("img");
    img.alt = "报警时出入口画面";
    img.loading = "lazy";
    img.src = `/api/alarms/${alarm.id}/snapshot.jpg`;
    li.append(img);
  }
  return li;
}

function updateAlarmCount() {
  const open = [...alarms.values()].filter((a) => a.state === "new" || a.state === "delivered").length;
  $("alarm-count").textContent = open ? `（${open} 条待确认）` : "";
  const onlyOpen = $("alarms").classList.contains("open-only");
  const visible = [...alarms.values()].filter((a) => !onlyOpen || a.state !== "resolved").length;
  $("alarm-empty").hidden = visible > 0;
  $("alarm-empty").textContent = onlyOpen ? "没有未处理的报警" : "暂无报警";
}

function upsertAlarm(alarm, fresh) {
  const known = alarms.get(alarm.id);
  if (known && known.has_snapshot) alarm.has_snapshot = true;
  alarms.set(alarm.id, alarm);
  const li = renderAlarm(alarm);
  if (!li.parentNode) {
    if (fresh) li.classList.add("fresh");
    $("alarms").prepend(li);
  }
  updateAlarmCount();
}

async function act(id, action) {
  showAlarmError("");
  try {
    const user = operatorName();
    const resp = await fetch(`/api/alarms/${encodeURIComponent(id)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    upsertAlarm(body, false);
  } catch (err) {
    showAlarmError(`操作失败: ${err.message || err}`);
  }
}

async function loadAlarms() {
  const page = await getJson("/api/alarms?limit=50");
  for (const alarm of page.items.reverse()) upsertAlarm(alarm, false);
  updateAlarmCount();
}

function connectAlarms(delay) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/alarms/ws`);
  const link = $("alarm-link");
  ws.addEventListener("open", () => { link.textContent = "报警已连接"; link.className = "alarm-state up"; delay = 1000; });
  ws.addEventListener("message", (ev) => {
    const event = JSON.parse(ev.data);
    if (event.type === "alarm") {
      upsertAlarm(event.alarm, true);
      beep();
    } else if (event.type === "updated" || event.type === "escalated") {
      upsertAlarm(event.alarm, event.type === "escalated");
      if (event.type === "escalated") beep();
    } else if (event.type === "snapshot" && alarms.has(event.alarm_id)) {
      const alarm = alarms.get(event.alarm_id);
      alarm.has_snapshot = true;
      upsertAlarm(alarm, false);
    }
  });
  ws.addEventListener("close", () => {
    link.textContent = "报警连接断开，重连中…";
    link.className = "alarm-state down";
    setTimeout(() => { loadAlarms().catch(() => {}); connectAlarms(Math.min(delay * 2, 15000)); }, delay);
  });
}

function setAlarmFilter(filter) {
  $("alarms").classList.toggle("open-only", filter === "open");
  for (const b of $("alarm-filter").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.filter === filter));
  localStorage.setItem("kgw-alarm-filter", filter);
  updateAlarmCount();
}

// --- start ---------------------------------------------------------------------------------

function main() {
  $("operator").value = localStorage.getItem("kgw-operator") || "";
  setupGrid();
  setupTree();
  const first = channelFromPath();
  setLayout(first ? 1 : Number(localStorage.getItem("kgw-layout")) || 4);
  selectCell(0);
  if (first) playInGrid(first, "", 0);  // straight into cell 1; the tree loads alongside
  for (const b of $("alarm-filter").querySelectorAll("button")) b.addEventListener("click", () => setAlarmFilter(b.dataset.filter));
  setAlarmFilter(localStorage.getItem("kgw-alarm-filter") === "open" ? "open" : "all");
  refreshTree().then(loadHealth);
  setInterval(() => { refreshTree(); loadHealth(); }, REFRESH_MS);
  loadAlarms().catch((err) => showAlarmError(err.message || String(err)));
  connectAlarms(1000);
}

window.kgwConsole = {
  cells, tree, peerLog,
  layout: () => layout,
  selected: () => selected,
  play: playInGrid,
  refresh: refreshTree,
  setLayout,
};

main();
