// This service's own JSON API: one GET with the error the server gave, every item of a
// paginated list (offset/limit pages), and a JSON POST. Every call sends the session cookie
// (same-origin credentials) and every body is JSON: the server refuses other types (CSRF).

const PAGE = 1000;  // the API's largest page

export async function getJson(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (resp.status === 401) location.reload();  // the session ended: back to the login form
  if (!resp.ok) {
    let detail = "";
    try { detail = (await resp.json()).error || ""; } catch (err) { /* not JSON */ }
    throw new Error(`${url}: HTTP ${resp.status}${detail ? ` ${detail}` : ""}`);
  }
  return resp.json();
}

// Every item of a paginated list (offset/limit, limit <= 1000).
export async function getAll(url, maxPages = 50) {
  const items = [];
  const sep = url.includes("?") ? "&" : "?";
  for (let page = 0; page < maxPages; page++) {
    const body = await getJson(`${url}${sep}limit=${PAGE}&offset=${page * PAGE}`);
    items.push(...body.items);
    if (body.items.length < PAGE || items.length >= body.total) break;
  }
  return items;
}

// POST a JSON body; the parsed JSON answer, or an Error with the server's message.
export async function postJson(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    credentials: "same-origin",
    body: JSON.stringify(body),
  });
  let answer = null;
  try { answer = await resp.json(); } catch (err) { /* not JSON */ }
  if (!resp.ok) throw new Error((answer && answer.error) || `HTTP ${resp.status}`);
  return answer;
}
