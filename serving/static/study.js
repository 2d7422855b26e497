"use strict";
const jobId = new URLSearchParams(location.search).get("id");
let index = null, k = 0, detail = null;
const cache = new Map();

function fmt(x, d = 1) { return x == null ? "–" : Number(x).toFixed(d); }

async function img(kind, n) {
  const key = kind + n;
  if (!cache.has(key)) cache.set(key, Preread.blobUrl(`/studies/${jobId}/${kind}/${n}`));
  return cache.get(key);
}

async function show(n) {
  if (!index) return;
  k = Math.max(0, Math.min(index.slices - 1, n));
  document.getElementById("slider").value = k;
  const inum = index.instance_numbers[k];
  document.getElementById("slice-label").textContent = `slice ${k + 1} / ${index.slices}` +
    (inum != null ? ` · image ${inum}` : "") + (index.outlined_slices.includes(k) ? " · AI outline" : "");
  const [s, o] = await Promise.all([img("slices", k), img("outlines", k)]);
  document.getElementById("slice").src = s;
  document.getElementById("outline").src = o;
  document.getElementById("slice").dataset.k = k;
}

function findingText(f) {
  const loc = [f.location?.side, f.location?.lobe].filter(Boolean).join(" ");
  return `${f.id}: ${fmt(f.long_axis_mm)} × ${fmt(f.short_axis_mm)} mm (mean ${fmt(f.mean_diameter_mm)} mm, ` +
    `±${fmt(f.uncertainty_mm)} mm), ${fmt(f.volume_mm3, 0)} mm³, ${f.composition}` + (loc ? `, ${loc}` : "") +
    `, confidence ${fmt(f.confidence, 2)}`;
}

function reportSentence(text, rf) {
  if (!rf) return Preread.el("span", { class: "note" }, "not in the report");
  const [a, b] = rf.span || [0, 0];
  const start = Math.max(0, text.lastIndexOf(".", a - 1) + 1), endDot = text.indexOf(".", b);
  const end = endDot < 0 ? text.length : endDot + 1;
  const span = Preread.el("span", {}, text.slice(start, a), Preread.el("mark", {}, text.slice(a, b)), text.slice(b, end));
  const size = rf.size_mm && rf.size_mm.length ? ` — report: ${rf.size_mm.join(" × ")} mm` : "";
  return Preread.el("span", {}, span, Preread.el("span", { class: "note" }, size));
}

function renderResult(d) {
  const r = d.result;
  document.getElementById("title").textContent = "Study " + d.id.slice(0, 8);
  document.getElementById("verdict").textContent = r ? r.verdict : d.status;
  document.getElementById("severity").replaceChildren(Preread.sev(d.max_severity));
  document.getElementById("meta").textContent = r ? ` priority ${fmt(r.priority)} · ${r.series.slices} slices · ` +
    `${r.series.spacing_mm.map(x => fmt(x, 2)).join(" × ")} mm · model ${r.model.name} ${r.model.version} (${r.model.backend}, ${r.model.device})`
    : (d.error ? `${d.error.code}: ${d.error.detail}` : "");
  document.getElementById("report").textContent = d.report_text || "";
  if (!r) return;
  document.getElementById("discordances").replaceChildren(...(r.discordances.length ? r.discordances.map(x =>
    Preread.el("div", { class: "disc " + x.severity }, Preread.el("b", {}, `${x.type.replaceAll("_", " ")} (${x.severity}, ${x.guideline})`),
      Preread.el("div", {}, x.explanation),
      Preread.el("div", { class: "note" }, `report ${x.report_category ?? "–"} · AI ${x.ai_category ?? "–"}`)))
    : [Preread.el("div", { class: "note" }, "No discordance.")]));
  const byAi = Object.fromEntries(r.ai_findings.map(f => [f.id, f]));
  const byRep = Object.fromEntries(r.report_findings.map(f => [f.id, f]));
  document.getElementById("findings").replaceChildren(...(r.ai_findings.length ? r.ai_findings.map(f => {
    const target = index ? (index.findings.find(x => x.id === f.id) || {}).k : undefined;
    return Preread.el("div", { class: "controls" },
      Preread.el("button", { class: "jump", "data-finding": f.id, disabled: target === undefined ? "" : null,
        onclick: () => show(target) }, "Go to"), Preread.el("span", {}, findingText(f)));
  }) : [Preread.el("div", { class: "note" }, "The AI found no nodule.")]));
  document.getElementById("pairs").replaceChildren(...r.matches.map(m => Preread.el("div", { class: "pair" },
    Preread.el("div", {}, Preread.el("div", { class: "note" }, "Report"), reportSentence(d.report_text || "", byRep[m.report])),
    Preread.el("div", {}, Preread.el("div", { class: "note" }, "AI"),
      m.ai ? findingText(byAi[m.ai]) : Preread.el("span", { class: "note" }, "not found by the AI"),
      m.distance_mm != null ? Preread.el("div", { class: "note" }, `${fmt(m.distance_mm)} mm apart`) : "",
      m.report_guided ? Preread.el("div", { class: "note guided" },
        "below the AI's own threshold: taken because the report points at it") : ""))));
}

function renderReviews(list) {
  document.getElementById("reviews").replaceChildren(...list.map(v => Preread.el("li", {},
    `${v.at.replace("T", " ").slice(0, 19)} · ${v.reviewer} · ${v.action}` + (v.comment ? ` — ${v.comment}` : ""))));
}

async function review(action) {
  const comment = document.getElementById("review-text").value.trim() || null;
  try {
    await Preread.api(`/studies/${jobId}/reviews`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action, comment }) });
    document.getElementById("review-text").value = "";
    document.getElementById("review-msg").textContent = "Recorded: " + action;
    renderReviews((await Preread.json(`/studies/${jobId}/reviews`)).reviews);
  } catch (e) { document.getElementById("review-msg").textContent = e.message; }
}

async function download(kind) {
  try {
    const url = await Preread.blobUrl(`/studies/${jobId}/${kind}`);
    const a = Preread.el("a", { href: url, download: `${jobId}-${kind}.dcm` }); document.body.append(a); a.click(); a.remove();
  } catch (e) { document.getElementById("error").textContent = e.message; }
}

async function main() {
  if (!Preread.token()) { location.href = "index.html"; return; }
  try {
    const me = await Preread.json("/me");
    document.getElementById("who").textContent = me.name + " (" + me.role + ")";
    detail = await Preread.json(`/studies/${jobId}`);
  } catch (e) { document.getElementById("error").textContent = e.message; return; }
  document.getElementById("study").hidden = false;
  if (detail.status === "done") {
    try { index = await Preread.json(`/studies/${jobId}/viewer`); } catch (e) { index = null; }
  }
  renderResult(detail);
  renderReviews(detail.reviews || []);
  if (index) {
    const slider = document.getElementById("slider");
    slider.max = index.slices - 1;
    slider.addEventListener("input", () => show(Number(slider.value)));
    document.getElementById("stack").addEventListener("wheel", ev => { ev.preventDefault(); show(k + Math.sign(ev.deltaY)); },
      { passive: false });
    document.addEventListener("keydown", ev => { if (ev.key === "ArrowUp") show(k - 1); if (ev.key === "ArrowDown") show(k + 1); });
    await show(index.findings.length ? index.findings[0].k : Math.floor(index.slices / 2));
  } else {
    document.getElementById("stack").hidden = true;
    document.getElementById("no-slices").hidden = false;
    if (detail.status === "done") {
      const names = (await Preread.json(`/studies/${jobId}/overlays`)).overlays;
      for (const n of names) document.getElementById("overlays").append(
        Preread.el("img", { src: await Preread.blobUrl(`/studies/${jobId}/overlays/${n}`), style: "width:100%" }));
    }
  }
  document.getElementById("toggle-outline").addEventListener("change", ev => {
    document.getElementById("outline").style.visibility = ev.target.checked ? "visible" : "hidden";
  });
  document.getElementById("review-agree").addEventListener("click", () => review("agree"));
  document.getElementById("review-disagree").addEventListener("click", () => review("disagree"));
  document.getElementById("review-comment").addEventListener("click", () => review("comment"));
  document.getElementById("dl-seg").addEventListener("click", () => download("seg"));
  document.getElementById("dl-sr").addEventListener("click", () => download("sr"));
}
main();
