// 云台控制: the PTZ pad under the grid, for the selected cell when its camera can move (the
// catalog's PTZType: 1 球机, 2 半球, 4 遥控枪机, 5 遥控半球; a fixed camera gets no pad).
// Hold a direction, zoom, focus or iris button: the move is sent on pointerdown and repeated
// every second while held (the gateway stops a move by itself when no command follows within
// its ptz_auto_stop); releasing it (pointerup, pointerleave, pointercancel) sends the stop.
// Presets are single clicks: 设置 / 调用 / 删除 the numbered preset. POST /api/channels/{id}/ptz.

import { getJson, postJson } from "./api.js";
import { $, el } from "./dom.js";
import { onChannelsLoaded, tree } from "./tree-model.js";

const STEERABLE = new Set([1, 2, 4, 5]);
const REPEAT_MS = 1000;

const HOLD = [
  ["up_left", "↖", "左上"], ["up", "↑", "上"], ["up_right", "↗", "右上"],
  ["left", "←", "左"], ["stop", "■", "停止"], ["right", "→", "右"],
  ["down_left", "↙", "左下"], ["down", "↓", "下"], ["down_right", "↘", "右下"],
];
const LENS = [
  ["zoom_in", "放大"], ["zoom_out", "缩小"],
  ["focus_near", "聚焦近"], ["focus_far", "聚焦远"],
  ["iris_open", "光圈大"], ["iris_close", "光圈小"],
];

let current = null;      // the selected cell
const known = new Map(); // channel id -> {steerable, name} from GET /api/channels/{id}/ptz (null: asking)
let held = null;         // {action, timer} while a button is held
export const ptzSent = [];  // what this page sent (tests read it: window.kgwPtz)

function channelOf(cell) {
  return cell && cell.channelId ? tree.channels.get(cell.channelId) || { id: cell.channelId } : null;
}

// Whether this user may steer the camera: the tree's PTZType says whether it can move, the
// server whether this user may move it (a police console gets 403 and no pad).
function steerable(channel) {
  if (!channel) return false;
  if (channel.ptz_type !== undefined && !STEERABLE.has(Number(channel.ptz_type))) return false;
  const info = known.get(channel.id);
  if (info === undefined) {
    known.set(channel.id, null);
    getJson(`/api/channels/${encodeURIComponent(channel.id)}/ptz`)
      .then((answer) => known.set(channel.id, { steerable: Boolean(answer.steerable) }))
      .catch(() => known.set(channel.id, { steerable: false }))
      .then(() => showPtzFor(current));
    return false;
  }
  return Boolean(info && info.steerable);
}

function message(text) {
  const box = $("ptz-error");
  box.textContent = text || "";
  box.hidden = !text;
}

async function send(action, extra = {}) {
  const channel = channelOf(current);
  if (!channel) return;
  const speed = Number($("ptz-speed").value);
  ptzSent.push({ action, channel: channel.id });
  try {
    await postJson(`/api/channels/${encodeURIComponent(channel.id)}/ptz`, { action, speed, ...extra });
    message("");
  } catch (err) {
    message(`云台控制失败：${err.message || err}`);
  }
}

function press(action, button, ev) {
  ev.preventDefault();
  if (action === "stop") { release(); send("stop"); return; }
  release();
  if (button.setPointerCapture && ev.pointerId !== undefined) {
    try { button.setPointerCapture(ev.pointerId); } catch (err) { /* synthetic events have no capture */ }
  }
  held = { action, timer: setInterval(() => send(action), REPEAT_MS) };
  button.classList.add("held");
  send(action);
}

// The button was let go (or the pointer left it): stop what it started, once.
function release() {
  if (!held) return;
  clearInterval(held.timer);
  held = null;
  for (const b of $("ptz-pad").querySelectorAll(".held")) b.classList.remove("held");
  send("stop");
}

function holdButton(action, text, title) {
  const button = el("button", `ptz-${action.replace("_", "-")}`, text);
  button.type = "button";
  button.dataset.action = action;
  button.title = title;
  button.addEventListener("pointerdown", (ev) => press(action, button, ev));
  for (const kind of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(kind, release);
  return button;
}

function presetButton(action, text) {
  const button = el("button", `ptz-${action.replace("_", "-")}`, text);
  button.type = "button";
  button.dataset.action = action;
  button.addEventListener("click", () => {
    const preset = Number($("ptz-preset").value);
    if (!Number.isInteger(preset) || preset < 1 || preset > 255) { message("预置位编号应为 1–255"); return; }
    send(action, { preset });
  });
  return button;
}

// Show the pad for the selected cell's camera, or hide it (a running move is stopped first).
export function showPtzFor(cell) {
  if (held && cell !== current) release();
  current = cell;
  const channel = channelOf(cell);
  const pad = $("ptz-pad");
  pad.hidden = !steerable(channel);
  if (!pad.hidden) $("ptz-title").textContent = `云台控制 · ${channel.name || channel.id}`;
}

export function setupPtz() {
  const pad = $("ptz-pad");
  const title = el("h3", "", "云台控制");
  title.id = "ptz-title";
  const arrows = el("div", "ptz-arrows");
  for (const [action, text, label] of HOLD) arrows.append(holdButton(action, text, label));
  const lens = el("div", "ptz-lens");
  for (const [action, text] of LENS) lens.append(holdButton(action, text, text));
  const speedLabel = el("label", "ptz-speed", "速度 ");
  const speed = el("input");
  Object.assign(speed, { id: "ptz-speed", type: "range", min: "1", max: "255", value: "128" });
  speedLabel.append(speed);
  const presets = el("div", "ptz-presets");
  const presetLabel = el("label", "", "预置位 ");
  const preset = el("input");
  Object.assign(preset, { id: "ptz-preset", type: "number", min: "1", max: "255", value: "1" });
  presetLabel.append(preset);
  presets.append(presetLabel, presetButton("preset_set", "设置"), presetButton("preset_call", "调用"), presetButton("preset_delete", "删除"));
  const error = el("p", "error");
  error.id = "ptz-error";
  error.setAttribute("role", "alert");
  error.hidden = true;
  pad.append(title, arrows, lens, speedLabel, presets, error);
  onChannelsLoaded(() => showPtzFor(current));  // a cell opened by ID learns its PTZType with the tree
  window.addEventListener("blur", release);     // a button held while the window lost focus
  window.kgwPtz = { sent: ptzSent, held: () => (held ? held.action : null) };
}
