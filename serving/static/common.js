// Shared helpers: the token lives in sessionStorage; every API call sends it as a bearer token.
"use strict";
const Preread = {
  token() { return sessionStorage.getItem("preread-token"); },
  setToken(t) { sessionStorage.setItem("preread-token", t); },
  logout() { sessionStorage.removeItem("preread-token"); location.href = "index.html"; },
  async api(path, opts = {}) {
    const headers = Object.assign({ "Authorization": "Bearer " + this.token() }, opts.headers || {});
    const resp = await fetch(path, Object.assign({}, opts, { headers }));
    if (resp.status === 401) { this.logout(); throw new Error("not logged in"); }
    if (!resp.ok) {
      let body = {}; try { body = await resp.json(); } catch (e) { /* not JSON */ }
      throw new Error((body.error || resp.status) + ": " + (body.detail || resp.statusText));
    }
    return resp;
  },
  async json(path, opts) { return (await this.api(path, opts)).json(); },
  async blobUrl(path) { return URL.createObjectURL(await (await this.api(path)).blob()); },
  el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return e;
  },
  sev(s) { return this.el("span", { class: "sev sev-" + (s || "none") }, s || "none"); },
  fmtWait(s) { if (s == null) return ""; if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min"; return (s / 3600).toFixed(1) + " h"; },
};
