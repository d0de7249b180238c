// The left panel's behaviour: the lazily loaded tree 行政区划 → 幼儿园 → 通道 (data in
// tree-model.js, drawing in tree-view.js) expands on click or keyboard, searches the names
// loaded so far and refreshes its counts. Clicking a camera plays it in the grid; reveal()
// opens the path to a channel (an alarm's kindergarten).

import { CHANNEL_KINDS, isCamera, typeCode } from "./codes.js";
import { $ } from "./dom.js";
import { playInGrid, showError } from "./grid.js";
import { loadHealth } from "./service.js";
import { findNode, loadChannels, loadDistricts, loadKindergartens, scanDistrict, tree } from "./tree-model.js";
import { renderTree, showTreeError } from "./tree-view.js";

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
  if (tree.onCamera) tree.onCamera(node);  // e.g. the playback panel is open: it takes the camera
  else playInGrid(node.id, node.name);
}

// Open the path to a channel (an alarm's kindergarten) and scroll it into view.
export async function reveal(districtCode, kgId, channelId) {
  const d = tree.districts.get(districtCode || "");
  if (!d) return;
  if (!d.expanded || d.kgIds === null) await expandDistrict(d);
  const kg = tree.kgs.get(kgId || "");
  if (kg && (!kg.expanded || kg.channelIds === null)) await expandKg(kg);
  const li = $("tree").querySelector(`li[data-key="channel:${channelId}"]`) || $("tree").querySelector(`li[data-key="kg:${kgId}"]`);
  if (li) li.scrollIntoView({ block: "nearest" });
}

export async function refreshTree() {
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

export function setupTree() {
  const ul = $("tree");
  ul.addEventListener("click", (ev) => {
    const row = ev.target.closest(".row");
    if (row && tree.picked && ev.target.classList.contains("pick")) {  // 轮巡's kindergarten ticks
      const id = row.parentElement.dataset.id;
      if (ev.target.checked) tree.picked.add(id);
      else tree.picked.delete(id);
      document.dispatchEvent(new CustomEvent("kgw-tree-picked"));
      return;
    }
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
