// The header: who this service is (its 20-digit ID and its role, both from /healthz) and a
// one-line device/channel summary. The role is only what /healthz says, never guessed from the ID.

import { getJson } from "./api.js";
import { $ } from "./dom.js";

const ROLE_NAMES = { district: "区级平台", municipal: "市级平台", police: "公安平台", gateway: "接入网关" };
const NO_ROLE = "监控台";  // neutral: /healthz did not say

const service = { id: "", role: "" };

// The role's zh-CN name as /healthz gives it (gateway, district, municipal, police); "" if none.
function roleOf(health) {
  if (!health.role) return "";
  return ROLE_NAMES[health.role] || String(health.role);
}

export async function loadHealth() {
  try {
    const health = await getJson("/healthz");
    service.id = health.gateway_id || "";
    service.role = roleOf(health);
    $("service").textContent = `kgw · ${service.id}`;
    $("role").textContent = service.role || NO_ROLE;
    document.title = `幼儿园视频监控 · ${service.role || NO_ROLE}`;
    $("status").textContent =
      `设备在线 ${health.devices_online ?? "?"}/${health.devices_known ?? "?"} · 通道在线 ${health.channels_online ?? "?"}`;
  } catch (err) {
    $("status").textContent = "服务状态未知";
  }
}
