// One cell of the live-view grid and its one RTCPeerConnection: a receive-only video offer
// sent in one round trip once ICE gathering is done (POST /api/channels/{id}/webrtc, no
// trickle ICE); the gateway answers H.264 only (passed through, no transcoding). The cell
// shows its state (empty / connecting / playing / failed). grid.js decides which cell plays what;
// patrol.js pre-opens cells off screen and swaps them in (so handlers read cell.index, not a
// copy); playback.js plays a recording through the same code with its own offer URL.

import { el } from "./dom.js";
import { channelName } from "./tree-model.js";

const NO_PICTURE_MS = 20000;  // a cell that shows no picture by then says so

export const peerLog = [];    // recent {cell, channelId, pc} for diagnostics (window.kgwConsole)

const playingListeners = [];

// Call fn() whenever a cell starts or stops playing a channel (the tree marks what plays).
export function onPlayingChange(fn) { playingListeners.push(fn); }

function playingChanged() {
  for (const fn of playingListeners) fn();
}

// Cell `index` (0-based) of the grid; select(index) is called when the user picks it.
export function makeCell(index, select) {
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
  const sound = el("button", "cell-sound", "🔇");
  sound.type = "button";
  sound.title = "摄像机声音（有麦克风的摄像机）：点击开/关";
  bar.append(title, status, sound, retry, close);
  const empty = el("div", "cell-empty");
  empty.append(el("span", "cell-number", String(index + 1)), el("span", "", "点击左侧摄像机播放"));
  root.append(video, empty, bar);
  const cell = { index, el: root, video, title, status, channelId: null, name: "", named: false, pc: null, timer: null };
  root.addEventListener("click", () => select(cell.index));
  root.addEventListener("dblclick", () => { if (cell.channelId && root.requestFullscreen) root.requestFullscreen().catch(() => {}); });
  close.addEventListener("click", (ev) => { ev.stopPropagation(); closeCell(cell); select(cell.index); });
  sound.addEventListener("click", (ev) => { ev.stopPropagation(); video.muted = !video.muted; sound.textContent = video.muted ? "🔇" : "🔊"; });
  retry.addEventListener("click", (ev) => { ev.stopPropagation(); if (cell.channelId) playInCell(cell, cell.channelId, cell.name, { stream: cell.stream, offerUrl: cell.offerUrl }); });
  video.addEventListener("playing", () => { if (cell.pc) setCellState(cell, "playing", "播放中"); });
  return cell;
}

function setCellState(cell, state, text) {
  cell.el.dataset.state = state;
  for (const s of ["empty", "connecting", "playing", "failed"]) cell.el.classList.toggle(s, s === state);
  cell.status.textContent = text || "";
  cell.status.title = text || "";
}

export function stopCell(cell) {
  clearTimeout(cell.timer);
  cell.timer = null;
  if (cell.pc) {
    cell.pc.close();
    cell.pc = null;
  }
  cell.video.srcObject = null;
}

export function closeCell(cell) {
  stopCell(cell);
  cell.channelId = null;
  cell.name = "";
  cell.named = false;
  cell.title.textContent = "";
  cell.title.title = "";
  setCellState(cell, "empty", "");
  playingChanged();
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
export function cellLabel(name) {
  const parts = name.split("·");
  return parts.length > 1 ? `${parts.pop().trim()} · ${parts.join("·").trim()}` : name;
}

// Play `channelId` in the cell: live by default (`stream`: "sub" for cells of a 4-or-more grid,
// "main" for a single cell), or whatever `offerUrl` answers an offer for (a playback session:
// POST /api/playback/{id}/webrtc).
export async function playInCell(cell, channelId, name, { stream = "main", offerUrl = null } = {}) {
  stopCell(cell);
  cell.stream = stream;
  delete cell.el.dataset.stream;
  cell.channelId = channelId;
  cell.offerUrl = offerUrl || null;
  cell.httpStatus = 0;
  cell.name = name || channelName(channelId) || channelId;
  cell.named = Boolean(name || channelName(channelId));
  cell.title.textContent = cellLabel(cell.name);
  cell.title.title = channelId;
  setCellState(cell, "connecting", "连接中…");
  playingChanged();
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
    conn.addTransceiver("audio", { direction: "recvonly" });  // the camera's microphone (PCMA), muted until asked
    conn.addEventListener("track", (ev) => {
      if (cell.pc !== conn) return;
      const stream = cell.video.srcObject || new MediaStream();
      stream.addTrack(ev.track);
      if (cell.video.srcObject === stream) return;
      cell.video.srcObject = stream;
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
    const resp = await fetch(offerUrl || `/api/channels/${encodeURIComponent(channelId)}/webrtc`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ sdp: conn.localDescription.sdp, stream }),
    });
    const text = await resp.text();
    if (!resp.ok) {
      cell.httpStatus = resp.status;  // patrol retries a 429 (peer cap) once old pages are gone
      let detail = text;
      try { detail = JSON.parse(text).error || text; } catch (err) { /* plain text */ }
      throw new Error(`网关拒绝 (HTTP ${resp.status})：${detail}`);
    }
    if (cell.pc !== conn) return;
    const answer = JSON.parse(text);
    cell.el.dataset.stream = answer.stream || stream;  // what the gateway serves (console.css marks 子码流)
    cell.title.title = answer.note ? `${channelId}\n${answer.note}` : channelId;
    await conn.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  } catch (err) {
    if (cell.pc === conn) {
      fail(err.message || String(err));
      conn.close();
      cell.pc = null;
    }
  }
}
