// 幼儿园视频监控 console: list cameras (GET /api/channels), play one over WebRTC
// (POST /api/channels/{id}/webrtc, one round trip, no trickle ICE).
// /live/{channel_id} opens straight into that channel. No build step, no external URLs.
"use strict";

const AREAS = {
  entrance: "出入口", perimeter: "周界", classroom: "教室", dormitory: "寝室",
  playground: "操场", kitchen: "厨房", corridor: "走廊", other: "其他",
};
const $ = (id) => document.getElementById(id);
let pc = null;

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function setStatus(text) { $("status").textContent = text; }

function isCamera(ch) { return ch.id.length === 20 && ch.id.slice(10, 13) === "131"; }

async function loadChannels() {
  const resp = await fetch("/api/channels?limit=200");
  if (!resp.ok) throw new Error(`加载摄像机列表失败: HTTP ${resp.status}`);
  const page = await resp.json();
  const list = $("channels");
  list.replaceChildren();
  const online = page.items.filter((c) => c.online).length;
  $("list-summary").textContent = `共 ${page.total} 路，显示 ${page.items.length} 路，在线 ${online} 路`;
  for (const ch of page.items) {
    const li = document.createElement("li");
    li.dataset.id = ch.id;
    const name = document.createElement("span");
    name.textContent = ch.name || ch.id;
    name.title = ch.id;
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = (AREAS[ch.area] || ch.area || "") + (isCamera(ch) ? "" : " · 非视频");
    const state = document.createElement("span");
    state.className = ch.online ? "online" : "offline";
    state.textContent = ch.online ? "在线" : "离线";
    li.append(name, area, state);
    li.addEventListener("click", () => {
      history.pushState(null, "", `/live/${ch.id}`);
      play(ch.id, ch.name);
    });
    list.append(li);
  }
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

async function play(channelId, name) {
  showError("");
  for (const li of $("channels").children) li.classList.toggle("active", li.dataset.id === channelId);
  $("current").textContent = name ? `${name} (${channelId})` : channelId;
  if (pc) { pc.close(); pc = null; }
  const video = $("video");
  video.srcObject = null;
  setStatus("连接中…");
  const conn = new RTCPeerConnection({ iceServers: [] });
  pc = conn;
  try {
    conn.addTransceiver("video", { direction: "recvonly" });
    conn.addEventListener("track", (ev) => {
      video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      video.play().catch((err) => showError(`无法自动播放: ${err.message}`));
    });
    conn.addEventListener("connectionstatechange", () => {
      if (pc !== conn) return;
      const labels = { connected: "播放中", failed: "连接失败", disconnected: "连接中断", closed: "已关闭" };
      setStatus(labels[conn.connectionState] || conn.connectionState);
      if (conn.connectionState === "failed") showError("WebRTC 连接失败");
    });
    await conn.setLocalDescription(await conn.createOffer());
    await waitIceComplete(conn, 3000);
    const resp = await fetch(`/api/channels/${encodeURIComponent(channelId)}/webrtc`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: conn.localDescription.sdp }),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`网关拒绝 (HTTP ${resp.status}): ${text}`);
    if (pc !== conn) return;  // another channel was chosen meanwhile
    await conn.setRemoteDescription({ type: "answer", sdp: JSON.parse(text).sdp });
  } catch (err) {
    if (pc === conn) {
      setStatus("播放失败");
      showError(`播放 ${channelId} 失败: ${err.message || err}`);
      conn.close();
      pc = null;
    }
  }
}

function channelFromPath() {
  const m = location.pathname.match(/^\/live\/([0-9A-Za-z]+)\/?$/);
  return m ? m[1] : null;
}

async function main() {
  const first = channelFromPath();
  if (first) play(first);  // straight into the video; the list loads alongside
  try {
    await loadChannels();
  } catch (err) {
    showError(err.message || String(err));
  }
  const current = channelFromPath();
  if (!current) return;
  for (const li of $("channels").children) {
    li.classList.toggle("active", li.dataset.id === current);
    if (li.dataset.id === current) $("current").textContent = `${li.firstChild.textContent} (${current})`;
  }
}

window.addEventListener("popstate", () => { const id = channelFromPath(); if (id) play(id); });
main();
