// Who is logged in: GET /api/me says (401: nobody). Without a session the page shows only the
// login form (用户名 / 密码 / 登录); after a login it loads as usual. The header shows
// 用户名 · 角色 and 退出登录. The session is an HttpOnly cookie the script never sees.

import { postJson } from "./api.js";
import { $ } from "./dom.js";

// The logged-in user ({username, role, role_label, …}), or null when the server says 401.
export async function currentUser() {
  const resp = await fetch("/api/me", { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (resp.status === 401) return null;
  if (!resp.ok) throw new Error(`/api/me: HTTP ${resp.status}`);
  return resp.json();
}

export function showUser(user) {
  $("user").textContent = `${user.username} · ${user.role_label}`;
  $("logout").hidden = false;
  $("logout").addEventListener("click", async () => {
    try { await postJson("/api/logout", {}); } catch (err) { /* the session is gone either way */ }
    location.reload();
  });
}

function loginError(text) {
  $("login-error").textContent = text;
  $("login-error").hidden = !text;
}

// The login form, the same on every page (built here, not copied into each page's HTML).
const LOGIN_FORM = `<div id="login" hidden>
  <form id="login-form">
    <h2>登录</h2>
    <label>用户名 <input id="login-user" name="username" autocomplete="username" required></label>
    <label>密码 <input id="login-password" name="password" type="password" autocomplete="current-password" required></label>
    <button id="login-submit" type="submit">登录</button>
    <p id="login-error" class="error" role="alert" hidden></p>
  </form>
</div>`;

// Show the form; `done` runs after a successful login.
export function showLogin(done) {
  if (!document.getElementById("login")) document.body.insertAdjacentHTML("beforeend", LOGIN_FORM);
  document.body.classList.add("logged-out");
  $("login").hidden = false;
  $("login-user").focus();
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    loginError("");
    const resp = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ username: $("login-user").value.trim(), password: $("login-password").value }),
    });
    if (resp.ok) {
      $("login-password").value = "";
      done();
      return;
    }
    if (resp.status === 429) {
      const wait = resp.headers.get("Retry-After") || "60";
      loginError(`登录失败次数过多，请 ${wait} 秒后再试`);
    } else if (resp.status === 401) {
      loginError("用户名或密码错误");
    } else {
      loginError(`登录失败 (HTTP ${resp.status})`);
    }
  });
}

// Every page starts here: the logged-in user, shown in the header; or null after showing the
// login form (the page reloads once logged in), or after `unavailable(err)` when /api/me fails.
export async function requireUser(unavailable) {
  let user = null;
  try {
    user = await currentUser();
  } catch (err) {
    unavailable(err);
    return null;
  }
  if (!user) {
    showLogin(() => location.reload());
    return null;
  }
  showUser(user);
  return user;
}
