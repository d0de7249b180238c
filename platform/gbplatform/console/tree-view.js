// Drawing the tree panel from tree-model.js: one row per node with its online dot and count,
// area label and kind; only the children of expanded nodes are in the DOM (or, while
// searching, the loaded matches and their ancestors). renderTree() rebuilds it all.

import { areaBadges, areaButton } from "./areas.js";
import { AREAS, CHANNEL_KINDS, isCamera, typeCode } from "./codes.js";
import { $, el } from "./dom.js";
import { cells } from "./grid.js";
import { childrenOf, kgOnline, nodeKey, shortName, tree } from "./tree-model.js";

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
    if (camera) row.append(...areaBadges(node), areaButton(node, renderTree));  // 确认区域 (areas.js)
    else if (node.area) row.append(el("span", `area area-${node.area}`, AREAS[node.area] || node.area));
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
  if (node.kind === "kg" && node.uplink && node.uplink.used_kbps) row.append(uplinkEl(node.uplink));
  if (node.kind === "kg" && tree.picked && !node.virtual) {  // 轮巡: tick kindergartens (tree.js toggles)
    const pick = el("input", "pick");
    pick.type = "checkbox";
    pick.checked = tree.picked.has(node.id);
    pick.title = "选入轮巡";
    row.prepend(pick);
  }
  row.append(el("span", `count ${counts && counts.online ? "online" : "offline"}`, countText(counts)));
  return row;
}

// "上行 4.8/20M": the kindergarten's uplink in use of its budget (issue 11), sessions in the tooltip.
function uplinkEl(u) {
  const mbps = (kbps) => (kbps / 1000).toFixed(1).replace(/\.0$/, "");
  const span = el("span", "sub uplink", `上行 ${mbps(u.used_kbps)}/${u.budget_kbps ? mbps(u.budget_kbps) : "∞"}M`);
  span.title = (Array.isArray(u.sessions) ? u.sessions : []).map((x) => `${x.what} ${mbps(x.kbps)} Mbit/s`).join("\n") || "上行带宽使用";
  return span;
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

export function renderTree() {
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

// Mark the channels shown in the grid (called whenever a cell starts or stops).
export function markPlaying() {
  const playing = new Set(cells.map((c) => c.channelId).filter(Boolean));
  for (const li of $("tree").querySelectorAll("li.channel")) li.classList.toggle("playing", playing.has(li.dataset.id));
}

export function showTreeError(text) {
  $("tree-error").textContent = text || "";
  $("tree-error").hidden = !text;
}
