// RTSP 摄像机接入: add a camera by URL (POST /api/rtsp-cameras), list them with their connection
// state (在线 / 离线 / 认证失败 / 不支持的编码 …, refreshed every few seconds), remove one.
// Passwords are write-only: the server never sends them back. Text from the server goes
// through textContent only.

import { getAll, getJson, postJson } from "./api.js";
import { requireUser } from "./auth.js";
import { $, el } from "./dom.js";

const AREAS = {
  entrance: "大门口", perimeter: "周界", playground: "操场", corridor: "走廊",
  classroom: "教室", dormitory: "寝室", kitchen: "厨房", other: "其他",
};
const REFRESH_MS = 3000;
const kindergartens = new Map();

function showError(text) {
  $("rtsp-error").textContent = text;
  $("rtsp-error").hidden = !text;
}

async function remove(camera) {
  if (!confirm(`删除摄像机「${camera.name}」？`)) return;
  const resp = await fetch(`/api/rtsp-cameras/${encodeURIComponent(camera.channel_id)}`, {
    method: "DELETE", headers: { Accept: "application/json" }, credentials: "same-origin",
  });
  if (!resp.ok) showError(`删除失败 (HTTP ${resp.status})`);
  await refresh();
}

function row(camera) {
  const tr = el("tr");
  tr.dataset.channel = camera.channel_id;
  const kg = kindergartens.get(camera.kindergarten_id);
  const state = el("td", `state-${camera.state}`, camera.state_label);
  state.className += " rtsp-state";
  const detail = camera.state === "online" ? "" : camera.detail;
  tr.append(
    el("td", "", camera.channel_id), el("td", "", kg ? kg.name : camera.kindergarten_id), el("td", "", camera.name),
    el("td", "", AREAS[camera.area] || camera.area), el("td", "", camera.url), state, el("td", "", detail),
  );
  const cell = el("td");
  const del = el("button", "", "删除");
  del.type = "button";
  del.addEventListener("click", () => remove(camera));
  cell.append(del);
  tr.append(cell);
  return tr;
}

async function refresh() {
  try {
    const body = await getJson("/api/rtsp-cameras");
    $("rtsp-list").replaceChildren(...body.items.map(row));
    const online = body.items.filter((c) => c.state === "online").length;
    $("rtsp-summary").textContent = `共 ${body.total} 路，在线 ${online} 路`;
  } catch (err) {
    showError(String(err.message || err));
  }
}

async function start() {
  if (!(await requireUser((err) => showError(`服务不可用：${err.message || err}`)))) return;
  for (const [value, label] of Object.entries(AREAS)) {
    const option = el("option", "", label);
    option.value = value;
    $("rtsp-area").append(option);
  }
  try {
    for (const kg of await getAll("/api/kindergartens")) {
      kindergartens.set(kg.id, kg);
      const option = el("option", "", `${kg.name} (${kg.id})`);
      option.value = kg.id;
      $("rtsp-kindergarten").append(option);
    }
  } catch (err) {
    showError(String(err.message || err));
  }
  $("rtsp-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    try {
      await postJson("/api/rtsp-cameras", {
        kindergarten_id: $("rtsp-kindergarten").value,
        name: $("rtsp-name").value.trim(),
        area: $("rtsp-area").value,
        url: $("rtsp-url").value.trim(),
        username: $("rtsp-user").value.trim(),
        password: $("rtsp-password").value,
      });
      $("rtsp-password").value = "";
      $("rtsp-name").value = "";
      $("rtsp-url").value = "";
    } catch (err) {
      showError(`添加失败：${err.message || err}`);
    }
    await refresh();
  });
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
