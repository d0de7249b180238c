// 喊话 (voice broadcast): hold the button to speak to the kindergarten of the selected cell.
// pointerdown → microphone (getUserMedia) → a send-only WebRTC offer, ICE gathered, one POST
// /api/channels/{id}/broadcast; the gateway runs the GB/T 28181 broadcast with the device and
// answers. pointerup (or leaving the button, or Space/Enter released) → DELETE: the device gets
// BYE. Someone else speaking already → HTTP 409 and the message names them. The device hanging
// up closes the connection and the button lets go by itself.

import { cells, selected, showError } from "./grid.js";
import { $ } from "./dom.js";

// What the page's tests read (window.kgwConsole.talk).
export const talkState = { state: "idle", channelId: null, error: "", speaker: "", answered: 0 };

let current = null;  // {channelId, pc, stream, released, live}

function setState(state, text) {
  talkState.state = state;
  const button = $("talk");
  button.dataset.state = state;
  button.classList.toggle("talking", state === "talking");
  button.setAttribute("aria-pressed", String(state === "connecting" || state === "talking"));
  $("talk-status").textContent = text || "";
}

function waitIce(conn, timeoutMs) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); conn.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (conn.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    conn.addEventListener("icegatheringstatechange", check);
  });
}

function cleanup(talk) {
  if (talk.pc) talk.pc.close();
  if (talk.stream) for (const track of talk.stream.getTracks()) track.stop();
  if (current === talk) current = null;
}

async function start() {
  if (current) return;
  const cell = cells[selected];
  const channelId = cell && cell.channelId;
  if (!channelId) {
    showError("请先选中一个正在播放的画面，再按住喊话", 4000);
    return;
  }
  const talk = { channelId, pc: null, stream: null, released: false, live: false };
  current = talk;
  talkState.channelId = channelId;
  talkState.error = "";
  setState("connecting", `正在接通 ${cell.name || channelId}…`);
  try {
    talk.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    const pc = new RTCPeerConnection({ iceServers: [] });
    talk.pc = pc;
    for (const track of talk.stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    pc.addEventListener("connectionstatechange", () => {
      if (current === talk && ["failed", "closed"].includes(pc.connectionState)) stop("对方已挂断");
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc, 3000);
    const resp = await fetch(`/api/channels/${encodeURIComponent(channelId)}/broadcast`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ sdp: pc.localDescription.sdp }),
    });
    let body = null;
    try { body = await resp.json(); } catch (err) { /* not JSON */ }
    if (!resp.ok) {
      talkState.speaker = (body && body.speaker) || "";
      throw new Error((body && body.error) || `HTTP ${resp.status}`);
    }
    talk.live = true;
    talkState.answered += 1;
    talkState.speaker = body.speaker || "";
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    if (talk.released) {  // let go while it was connecting: end it now
      await stop("");
      return;
    }
    setState("talking", `正在对 ${cell.name || channelId} 喊话…（松开结束）`);
  } catch (err) {
    const message = err && err.name === "NotAllowedError" ? "没有麦克风权限" : (err.message || String(err));
    talkState.error = message;
    cleanup(talk);
    setState("failed", "");
    showError(`喊话失败：${message}`, 8000);
  }
}

async function stop(reason) {
  const talk = current;
  if (!talk) return;
  if (!talk.live) {  // still connecting: start() ends it once the gateway answered
    talk.released = true;
    return;
  }
  cleanup(talk);
  setState("idle", reason || "");
  try {
    await fetch(`/api/channels/${encodeURIComponent(talk.channelId)}/broadcast`, {
      method: "DELETE",
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
  } catch (err) { /* the connection is closed: the gateway ends the broadcast by itself */ }
}

export function setupTalk(user) {
  const button = $("talk");
  if (user && user.role === "police") {  // 公安 may not broadcast (the server refuses too)
    button.hidden = true;
    return;
  }
  button.hidden = false;
  button.addEventListener("pointerdown", (ev) => { ev.preventDefault(); button.setPointerCapture?.(ev.pointerId); start(); });
  for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) button.addEventListener(name, () => stop(""));
  button.addEventListener("keydown", (ev) => { if ((ev.key === " " || ev.key === "Enter") && !ev.repeat) { ev.preventDefault(); start(); } });
  button.addEventListener("keyup", (ev) => { if (ev.key === " " || ev.key === "Enter") stop(""); });
  window.addEventListener("pagehide", () => stop(""));
}
