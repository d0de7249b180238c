// Reading this service's own JSON API: one GET with the error the server gave, and every
// item of a paginated list (offset/limit pages).

const PAGE = 1000;  // the API's largest page

export async function getJson(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
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
