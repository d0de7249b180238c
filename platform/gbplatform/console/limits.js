// What this server allows the console (GET /api/console/limits), read once per page: the
// WebRTC peer caps (patrol sizes its pages by them) and the caller's capabilities (buttons
// a role may not use are not shown; the server checks every request anyway).

import { getJson } from "./api.js";

const FALLBACK = { webrtc_per_user: 4, webrtc_total: 64, capabilities: null };  // the config's defaults
let pending = null;

export function limits() {
  if (!pending) pending = getJson("/api/console/limits").catch(() => FALLBACK);
  return pending;
}

// True unless the server said the caller's role lacks `capability` (e.g. "playback").
export async function can(capability) {
  const l = await limits();
  return !l.capabilities || l.capabilities.includes(capability);
}
