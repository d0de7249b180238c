// The tree's data, 行政区划 → 幼儿园 → 通道, as loaded so far from GET /api/districts,
// /api/kindergartens?district= and /api/channels?kindergarten= (lazily, on expand), plus the
// online counts of each district's kindergartens from a scan of its channels. No DOM here:
// tree.js renders this model.

import { getAll, getJson } from "./api.js";

export const tree = {
  districts: new Map(),   // code -> {kind, id, name, counts from /api/districts, expanded, kgIds, loading, error}
  order: [],              // district codes in display order
  kgs: new Map(),         // id -> {kind, id, name, district, expanded, channelIds, loading, error, virtual}
  channels: new Map(),    // id -> channel JSON plus kind
  kgCounts: new Map(),    // kindergarten id -> {total, online} from the district scan
  query: "",
  picked: null,           // kindergarten ids ticked for a patrol (patrol.js), or null: no ticks shown
  onCamera: null,         // set while another panel (playback.js) takes the clicked camera instead of the grid
};

const channelListeners = [];

// Call fn() whenever channels were added to the model (the grid names its cells from them).
export function onChannelsLoaded(fn) { channelListeners.push(fn); }

export function nodeKey(node) { return `${node.kind}:${node.id}`; }

export function findNode(key) {
  const [kind, id] = key.split(":");
  if (kind === "district") return tree.districts.get(id);
  if (kind === "kg") return tree.kgs.get(id);
  return tree.channels.get(id);
}

function unassignedId(code) { return `none-${code}`; }

export function childrenOf(node) {
  if (node.kind === "district") {
    const kids = (node.kgIds || []).map((id) => tree.kgs.get(id)).filter(Boolean);
    const extra = tree.kgs.get(unassignedId(node.id));
    if (extra && extra.channelIds && extra.channelIds.length) kids.push(extra);
    return kids;
  }
  if (node.kind === "kg") return (node.channelIds || []).map((id) => tree.channels.get(id)).filter(Boolean);
  return [];
}

export function kgOnline(kg) {
  if (kg.channelIds) {
    const list = childrenOf(kg);
    return { total: list.length, online: list.filter((c) => c.online).length };
  }
  return tree.kgCounts.get(kg.id) || null;
}

// The channel's own part of "幼儿园名·大门口" under its kindergarten.
export function shortName(ch) {
  const name = ch.name || ch.id;
  const kg = tree.kgs.get(ch.kindergarten_id || "");
  if (kg && name.startsWith(kg.name) && name.length > kg.name.length) return name.slice(kg.name.length).replace(/^[·\s-]+/, "");
  return name;
}

export function channelName(id) {
  const ch = tree.channels.get(id);
  return ch ? ch.name || ch.id : "";
}

export async function loadDistricts() {
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

export async function loadKindergartens(d) {
  const items = await getAll(`/api/kindergartens?district=${encodeURIComponent(d.id)}`);
  for (const item of items) {
    const kg = tree.kgs.get(item.id) || { kind: "kg", id: item.id, expanded: false, channelIds: null, loading: false, error: "" };
    Object.assign(kg, { name: item.name || item.id, district: d.id, address: item.address || "", uplink: item.uplink || null });
    tree.kgs.set(item.id, kg);
  }
  d.kgIds = items.map((k) => k.id);
}

function rememberChannels(items) {
  for (const ch of items) tree.channels.set(ch.id, Object.assign(ch, { kind: "channel" }));
  for (const fn of channelListeners) fn();
}

// Online counts of every kindergarten of a district in a few pages, plus the channels
// that belong to no known kindergarten (shown under a node of their own). Once the totals
// are known and the district's channel count is unchanged, a refresh reads only the
// offline channels (usually few) instead of all of them.
export async function scanDistrict(d) {
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

export async function loadChannels(kg) {
  if (kg.virtual) return;
  const items = await getAll(`/api/channels?kindergarten=${encodeURIComponent(kg.id)}`, 5);
  rememberChannels(items);
  kg.channelIds = items.map((c) => c.id);
  // The uplink in use now (issue 11; absent on nodes without budgets).
  kg.uplink = await getJson(`/api/kindergartens/${encodeURIComponent(kg.id)}/uplink`).catch(() => kg.uplink);
}
