"use strict";
const RANK = { major: 3, minor: 2, info: 1 };
let rows = [], sortKey = null, sortDir = -1, timer = null;

function showLogin() { document.getElementById("login").hidden = false; document.getElementById("list").hidden = true; }

async function showList() {
  try {
    const me = await Preread.json("/me");
    document.getElementById("who").textContent = me.name + " (" + me.role + ")";
    document.getElementById("logout").hidden = false;
  } catch (e) { return; }
  document.getElementById("login").hidden = true;
  document.getElementById("list").hidden = false;
  await refresh();
  schedule();
}

function schedule() {
  clearInterval(timer);
  if (document.getElementById("live").checked) timer = setInterval(refresh, 5000);
}

async function refresh() {
  const p = new URLSearchParams({ limit: "200", sort: document.getElementById("f-sort").value });
  for (const [id, key] of [["f-status", "status"], ["f-verdict", "verdict"], ["f-severity", "severity"]]) {
    const v = document.getElementById(id).value; if (v) p.append(key, v);
  }
  try {
    const page = await Preread.json("/worklist?" + p);
    rows = page.items.map(r => Object.assign(r, { severity_rank: RANK[r.max_severity] || 0 }));
    document.getElementById("counts").textContent = page.total + " studies · " +
      Object.entries(page.counts).map(([k, v]) => v + " " + k).join(" · ");
    document.getElementById("list-error").textContent = "";
    render();
  } catch (e) { document.getElementById("list-error").textContent = e.message; }
}

function render() {
  const data = rows.slice();
  if (sortKey) data.sort((a, b) => {
    const x = sortKey === "review" ? (a.review ? a.review.action : "") : a[sortKey];
    const y = sortKey === "review" ? (b.review ? b.review.action : "") : b[sortKey];
    return (x > y ? 1 : x < y ? -1 : 0) * sortDir;
  });
  const tbody = document.querySelector("#worklist tbody");
  tbody.replaceChildren(...data.map(r => {
    const tr = Preread.el("tr", { class: "row-" + (r.max_severity || "none"), "data-id": r.id,
      onclick: () => { location.href = "study.html?id=" + encodeURIComponent(r.id); } },
      Preread.el("td", {}, Preread.sev(r.max_severity)),
      Preread.el("td", {}, r.status === "done" ? r.priority.toFixed(1) : ""),
      Preread.el("td", {}, r.verdict || ""),
      Preread.el("td", {}, r.status + (r.status === "running" && r.stage ? " · " + r.stage : "")
        + (r.error ? " · " + r.error.code : "")),
      Preread.el("td", {}, r.n_ai_findings ?? ""),
      Preread.el("td", {}, r.n_discordances ?? ""),
      Preread.el("td", {}, Preread.fmtWait(r.waiting_s)),
      Preread.el("td", {}, r.review ? r.review.action + " · " + r.review.reviewer : ""),
      Preread.el("td", { class: "note" }, r.id.slice(0, 8)));
    return tr;
  }));
}

document.querySelectorAll("#worklist th").forEach(th => th.addEventListener("click", () => {
  const k = th.dataset.key; sortDir = sortKey === k ? -sortDir : -1; sortKey = k; render();
}));
["f-status", "f-verdict", "f-severity", "f-sort"].forEach(id => document.getElementById(id).addEventListener("change", refresh));
document.getElementById("live").addEventListener("change", schedule);
document.getElementById("logout").addEventListener("click", () => Preread.logout());
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  Preread.setToken(document.getElementById("token").value.trim());
  const r = await fetch("/me", { headers: { Authorization: "Bearer " + Preread.token() } });
  if (!r.ok) { document.getElementById("login-error").textContent = "That token was not accepted.";
    sessionStorage.removeItem("preread-token"); return; }
  showList();
});
if (Preread.token()) showList(); else showLogin();
