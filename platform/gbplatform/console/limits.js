// What this server allows the console (GET /api/console/limits), read once per page: the
// WebRTC peer caps (patrol sizes its pages by them) and the caller's capabilities (buttons
// a role may not use are not shown; the server checks every request anyway).

const FALLBACK = { webrtc_per_user: 4, webrtc_total: 64, capabilities: null };  // the config's defaults
let pending = null;

// Plain fetch, not api.js getJson: that reloads the page on a 401, and modules may ask before
// anyone has logged in. Only a successful answer is kept.
export function limits() {
  if (!pending) {
    pending = fetch("/api/console/limits", { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((resp) => (resp.ok ? resp.json() : Promise.reject(new Error(`HTTP ${resp.status}`))))
      .catch(() => { pending = null; return FALLBACK; });
  }
  return pending;
}

// True unless the server said the caller's role lacks `capability` (e.g. "playback").
export async function can(capability) {
  const l = await limits();
  return !l.capabilities || l.capabilities.includes(capability);
}
