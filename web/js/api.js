// The HTTP API of calc-api, as the page uses it. The access token lives in this module's memory
// only (never in storage): a reload gets a new one from the HttpOnly refresh-token cookie.

let accessToken = null;
let refreshing = null; // the refresh in flight, shared by every caller that needs it

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function send(method, path, body, withToken) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (withToken && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let json = null;
  try {
    json = await r.json();
  } catch (e) {
    json = null;
  }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

// A new access token from the refresh cookie; false when there is no session.
export function refresh() {
  if (!refreshing) {
    refreshing = send("POST", "/api/v1/refresh", undefined, false)
      .then((j) => {
        accessToken = j.accessToken;
        return true;
      })
      .catch((e) => {
        if (e.status === 401 || e.status === 403) {
          accessToken = null;
          return false;
        }
        throw e;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

// A call with the access token; on a 401 the token is refreshed once and the call retried.
export async function call(method, path, body) {
  try {
    return await send(method, path, body, true);
  } catch (e) {
    if (e.status !== 401) throw e;
    if (!(await refresh())) throw e;
    return send(method, path, body, true);
  }
}

export function signedIn() {
  return accessToken !== null;
}

export async function login(loginName, password) {
  const j = await send("POST", "/api/v1/login", { login: loginName, password }, false);
  accessToken = j.accessToken;
}

export async function register(loginName, password) {
  await send("POST", "/api/v1/register", { login: loginName, password }, false);
  await login(loginName, password);
}

export async function logout() {
  try {
    await send("POST", "/api/v1/logout", undefined, false);
  } finally {
    accessToken = null;
  }
}
