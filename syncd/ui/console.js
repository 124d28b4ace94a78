/* console.js - the operator's console of syncd, served at /ui by every node.
 *
 * Everything shown comes from the HTTP API (DESIGN.md section 5): of the
 * node that served the page, and for the health view of every live node
 * of GET /v1/nodes, at its advertised URL (each node allows the console of
 * any live node of its cluster through CORS). With --token the console asks
 * for the token once and keeps it in this tab's sessionStorage; every call
 * carries it as "Authorization: Bearer". The watch stream is read with
 * fetch() rather than EventSource, which cannot send that header.
 *
 * Writes: the API has one access level (any --token reads and writes), so
 * the console writes (rollback) whenever it can read, after a confirmation.
 *
 * No library, no build step: plain DOM, text only (never innerHTML), SVG
 * charts drawn by hand.
 */
"use strict";

const state = {
    token: sessionStorage.getItem("syncd-token"),
    self: null,        // this node's id
    nodes: [],         // the last /v1/nodes list
    colls: [],         // collection names
    coll: null,        // the selected collection
    doc: null,         // {id, v} of the document shown
    history: [],       // its kept versions
    watch: null,       // the AbortController of the watch stream
    lastSeq: null,     // the last event seq seen on the stream
    samples: [],       // metrics samples for the charts
    docsDue: null,     // the timer of a documents reload after events
};

const $ = (id) => document.getElementById(id);

/* el("td", {class: "x"}, child...) builds an element; strings become text. */
function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (k === "class") e.className = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v);
    }
    for (const c of children) {
        if (c === null || c === undefined) continue;
        e.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
    }
    return e;
}

function showError(msg) {
    const p = $("error");
    p.textContent = msg || "";
    p.hidden = !msg;
}

class HttpError extends Error {
    constructor(status, body) {
        super(`HTTP ${status}: ${(body && body.message) || ""}`);
        this.status = status;
        this.body = body;
    }
}

/* Calls the API of base ("" for this node, else a node URL) at path and
 * returns the response (ok) or throws HttpError. */
async function call(base, path, opts = {}) {
    const headers = Object.assign({}, opts.headers);
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    const r = await fetch(base + path, Object.assign({}, opts, { headers }));
    if (r.status === 401) {
        askToken("the token was refused");
        throw new HttpError(401, null);
    }
    if (!r.ok) {
        let body = null;
        try { body = await r.json(); } catch (e) { body = null; }
        throw new HttpError(r.status, body);
    }
    return r;
}

async function getJSON(base, path, opts) {
    return (await call(base, path, opts)).json();
}

const enc = encodeURIComponent;
const docPath = (c, id) => `/v1/collections/${enc(c)}/docs/${enc(id)}`;

/* ---- Token ------------------------------------------------------------ */

function askToken(why) {
    $("token-panel").hidden = false;
    $("token-message").textContent = why || "";
    $("token-input").focus();
}

function setupToken() {
    $("token-button").addEventListener("click", () => askToken(""));
    $("token-panel").addEventListener("submit", (ev) => {
        ev.preventDefault();
        state.token = $("token-input").value.trim() || null;
        if (state.token) sessionStorage.setItem("syncd-token", state.token);
        else sessionStorage.removeItem("syncd-token");
        $("token-input").value = "";
        $("token-panel").hidden = true;
        start();
    });
}

/* ---- Nodes ------------------------------------------------------------ */

function fmtAge(ms) {
    return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

async function refreshNodes() {
    const v = await getJSON("", "/v1/nodes");
    state.nodes = v.nodes || [];
    const tb = $("nodes-table").tBodies[0];
    tb.replaceChildren(...state.nodes.map((n) => {
        const lags = Object.entries(n.collections || {}).map(([c, x]) =>
            el("div", { class: x.lag > 0 ? "bad" : "" },
               `${c}: lag ${x.lag} (seq ${x.seq})`));
        return el("tr", { "data-node": n.id },
                  el("td", {}, el("span", { class: "dot ok" }), n.id,
                     n.id === state.self ? " (this node)" : ""),
                  el("td", { class: "mono" }, n.url || ""),
                  el("td", {}, n.version || ""),
                  el("td", {}, fmtAge(n.age_ms || 0)),
                  el("td", {}, ...lags));
    }));
}

/* ---- Collections and documents ---------------------------------------- */

async function refreshCollections() {
    const v = await getJSON("", "/v1/collections");
    const names = (v.collections || []).slice().sort();
    if (JSON.stringify(names) !== JSON.stringify(state.colls)) {
        state.colls = names;
        const sel = $("coll-select");
        sel.replaceChildren(...names.map((c) => el("option", { value: c }, c)));
        if (state.coll && names.includes(state.coll)) sel.value = state.coll;
    }
    if (!state.coll && state.colls.length > 0) selectCollection(state.colls[0]);
}

function selectCollection(c) {
    state.coll = c;
    $("coll-select").value = c;
    loadDocs().catch(report);
    startWatch(c);
}

async function loadDocs() {
    const prefix = $("prefix-input").value;
    const v = await getJSON("", `/v1/collections/${enc(state.coll)}/docs` +
                            `?limit=200&prefix=${enc(prefix)}`);
    const tb = $("docs-table").tBodies[0];
    tb.replaceChildren(...(v.docs || []).map((d) =>
        el("tr", { "data-id": d.id },
           el("td", {}, el("button", { class: "link", type: "button",
                                       onclick: () => openDoc(d.id).catch(report) },
                           d.id)),
           el("td", {}, d.v),
           el("td", { class: "mono" }, (d.h || "").slice(0, 19)))));
    $("docs-more").textContent = v.next ? "more ids follow (narrow the prefix)" : "";
}

/* Stable, key-sorted, indented JSON: equal documents print alike. */
function pretty(x) {
    const sortKeys = (v) => {
        if (Array.isArray(v)) return v.map(sortKeys);
        if (v && typeof v === "object") {
            const o = {};
            for (const k of Object.keys(v).sort()) o[k] = sortKeys(v[k]);
            return o;
        }
        return v;
    };
    return JSON.stringify(sortKeys(x), null, 2);
}

/* The kept versions of a /history answer ({"versions": [{v, time, origin,
 * deleted, patch}], newest first}), oldest first. */
function historyVersions(h) {
    return (h.versions || []).slice().sort((a, b) => a.v - b.v);
}

/* Shows document id of the selected collection; a deleted one shows its
 * tombstone's history, from which it can be restored. */
async function openDoc(id) {
    const c = state.coll;
    let body = null, v = null;
    try {
        const r = await call("", docPath(c, id));
        body = await r.json();
        v = Number((r.headers.get("ETag") || "").replace(/[^0-9]/g, ""));
    } catch (e) {
        if (!(e instanceof HttpError) || e.status !== 404) throw e;
    }
    state.doc = { coll: c, id, v };
    $("doc").hidden = false;
    $("doc-title").textContent = `${c}/${id}`;
    $("doc-version").textContent = v === null ? "deleted or absent" : `version ${v}`;
    $("doc-json").textContent = v === null ? "" : JSON.stringify(body, null, 2);
    $("rollback-confirm").hidden = true;
    await loadHistory();
}

async function loadHistory() {
    const d = state.doc;
    let versions = [];
    try {
        versions = historyVersions(await getJSON("", docPath(d.coll, d.id) + "/history"));
    } catch (e) {
        if (!(e instanceof HttpError) || e.status !== 404) throw e;
    }
    state.history = versions;
    $("history-table").tBodies[0].replaceChildren(...versions.slice().reverse().map((h) =>
        el("tr", { "data-version": h.v },
           el("td", {}, h.v, h.v === d.v ? " (current)" : "",
              h.deleted ? " (deleted)" : ""),
           el("td", {}, h.time || h.ts || ""),
           el("td", {}, h.origin || ""),
           el("td", { class: "mono" }, h.patch ? JSON.stringify(h.patch) : ""))));
    const opts = (sel, list, pick) => {
        sel.replaceChildren(...list.map((h) => el("option", { value: h.v }, h.v)));
        if (pick !== undefined) sel.value = pick;
    };
    const bodies = versions.filter((h) => !h.deleted);
    const n = bodies.length;
    opts($("diff-a"), bodies, n > 1 ? bodies[n - 2].v : undefined);
    opts($("diff-b"), bodies, n > 0 ? bodies[n - 1].v : undefined);
    const older = bodies.filter((h) => h.v !== d.v);
    $("rollback-to").replaceChildren(...older.map((h) => el("option", { value: h.v }, h.v)));
    if (older.length > 0) $("rollback-to").value = older[older.length - 1].v;
    $("diff").replaceChildren();
}

async function versionBody(d, v) {
    return getJSON("", docPath(d.coll, d.id) + `?version=${v}`);
}

/* Line diff of a and b (arrays of lines) by longest common subsequence:
 * [[kind, left, right]] with kind "same", "del", "add" or "chg". */
function lineDiff(a, b) {
    const n = a.length, m = b.length;
    const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--)
        for (let j = m - 1; j >= 0; j--)
            L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = [];
    let i = 0, j = 0;
    while (i < n || j < m) {
        if (i < n && j < m && a[i] === b[j]) { out.push(["same", a[i++], b[j++]]); }
        else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) { out.push(["add", null, b[j++]]); }
        else { out.push(["del", a[i++], null]); }
    }
    return out;
}

async function showDiff() {
    const d = state.doc;
    const va = Number($("diff-a").value), vb = Number($("diff-b").value);
    const [a, b] = await Promise.all([versionBody(d, va), versionBody(d, vb)]);
    const rows = lineDiff(pretty(a).split("\n"), pretty(b).split("\n"));
    const cells = [el("div", { class: "head" }, `version ${va}`),
                   el("div", { class: "head" }, `version ${vb}`)];
    for (const [kind, l, r] of rows) {
        cells.push(el("div", { class: l === null ? "gap" : kind === "del" ? "del" : "" }, l === null ? "" : l));
        cells.push(el("div", { class: r === null ? "gap" : kind === "add" ? "add" : "" }, r === null ? "" : r));
    }
    $("diff").replaceChildren(...cells);
}

function askRollback() {
    const d = state.doc, to = $("rollback-to").value;
    if (!d || !to) return;
    $("rollback-question").textContent =
        `Write version ${to} of ${d.coll}/${d.id} as a new version ` +
        (d.v === null ? "(restoring it)?" : `(now ${d.v})?`);
    $("rollback-confirm").hidden = false;
}

async function doRollback() {
    const d = state.doc, to = $("rollback-to").value;
    $("rollback-confirm").hidden = true;
    const headers = d.v === null ? {} : { "If-Match": `"${d.v}"` };
    const r = await call("", docPath(d.coll, d.id) + `/rollback?to=${enc(to)}`,
                         { method: "POST", headers });
    const v = (r.headers.get("ETag") || "").replace(/[^0-9]/g, "");
    $("rollback-result").textContent = `rolled back to version ${to}: now version ${v}`;
    $("rollback-result").className = "ok";
    await openDoc(d.id);
    loadDocs().catch(report);
}

/* ---- Live events ------------------------------------------------------ */

/* Reads the SSE stream of coll with fetch() (so that it can carry the
 * token), resuming after a break from the last seq seen. */
function startWatch(coll) {
    if (state.watch) state.watch.abort();
    const ctl = new AbortController();
    state.watch = ctl;
    state.lastSeq = null;
    $("live-coll").textContent = coll;
    $("events").replaceChildren();
    const run = async () => {
        while (!ctl.signal.aborted) {
            try {
                const headers = {};
                if (state.lastSeq !== null) headers["Last-Event-ID"] = String(state.lastSeq);
                const r = await call("", `/v1/collections/${enc(coll)}/watch`,
                                     { headers, signal: ctl.signal });
                $("live-status").textContent = "connected";
                await readEvents(r.body, ctl);
            } catch (e) {
                if (ctl.signal.aborted) return;
                if (e instanceof HttpError && e.status === 410) state.lastSeq = null;
                if (e instanceof HttpError && e.status === 401) return;
            }
            if (ctl.signal.aborted) return;
            $("live-status").textContent = "reconnecting";
            await new Promise((res) => setTimeout(res, 1000));
        }
    };
    run();
}

async function readEvents(body, ctl) {
    const reader = body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
        const { value, done } = await reader.read();
        if (done || ctl.signal.aborted) return;
        buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            const ev = { event: "message", data: [], id: null };
            for (const line of block.split("\n")) {
                const k = line.indexOf(":");
                if (k === 0) continue;
                const name = k < 0 ? line : line.slice(0, k);
                const val = k < 0 ? "" : line.slice(k + 1).replace(/^ /, "");
                if (name === "event") ev.event = val;
                else if (name === "data") ev.data.push(val);
                else if (name === "id") ev.id = val;
            }
            onEvent(ev);
        }
    }
}

function onEvent(ev) {
    if (ev.id !== null && ev.id !== "") state.lastSeq = Number(ev.id);
    if (ev.event === "bookmark" || ev.data.length === 0) return;
    if (ev.event === "resync") {
        state.lastSeq = null;
        return;
    }
    let e;
    try { e = JSON.parse(ev.data.join("\n")); } catch (x) { return; }
    const li = el("li", { class: "fresh", "data-id": e.id, "data-v": e.v },
                  el("span", { class: "muted" }, `#${e.seq} `),
                  el("b", {}, e.op), ` ${e.id} v${e.v} `,
                  el("span", { class: "muted" }, `from ${e.origin || "?"} at ${e.ts || ""}`),
                  el("div", { class: "mono" }, e.op === "delete" ? "" :
                     e.patch ? JSON.stringify(e.patch) : "(no patch in the event: nodes refetch the body)"));
    const list = $("events");
    list.prepend(li);
    setTimeout(() => li.classList.remove("fresh"), 3000);
    while (list.children.length > 200) list.lastChild.remove();
    if (!state.docsDue) {
        state.docsDue = setTimeout(() => {
            state.docsDue = null;
            loadDocs().catch(report);
        }, 500);
    }
    if (state.doc && state.doc.coll === e.coll && state.doc.id === e.id && e.v > state.doc.v)
        openDoc(e.id).catch(report);
}

/* ---- Health ----------------------------------------------------------- */

/* The base URL of node n for call(): "" when the page came from it. */
function baseOf(n) {
    const url = (n.url || "").replace(/\/$/, "");
    return url === location.origin ? "" : url;
}

async function refreshHealth() {
    const nodes = state.nodes.slice();
    const tb = $("health-table").tBodies[0];
    const rows = await Promise.all(state.colls.map(async (c) => {
        const digests = await Promise.all(nodes.map((n) =>
            getJSON(baseOf(n), `/v1/collections/${enc(c)}/digest`)
                .then((d) => ({ node: n.id, digest: d.digest, count: d.count }))
                .catch(() => ({ node: n.id, error: "unreachable" }))));
        const good = digests.filter((d) => !d.error);
        const agree = good.length === digests.length &&
            good.every((d) => d.digest === good[0].digest);
        const old = tb.querySelector(`tr[data-coll="${CSS.escape(c)}"] .differs`);
        return el("tr", { "data-coll": c, "data-agree": agree ? "yes" : "no" },
                  el("td", {}, c),
                  el("td", { class: "mono" }, ...digests.map((d) =>
                      el("div", {}, `${d.node}: `,
                         d.error ? el("span", { class: "bad" }, d.error)
                                 : `${d.count} docs ${String(d.digest).slice(0, 12)}`))),
                  el("td", {}, el("span", { class: agree ? "dot ok" : "dot bad" }),
                     agree ? "agree" : "differ"),
                  el("td", {}, el("button", { type: "button",
                                              onclick: (ev) => verify(c, ev.target).catch(report) },
                                  "Verify"),
                     old || el("div", { class: "differs mono" })));
    }));
    tb.replaceChildren(...rows);
}

/* Asks every live node to verify c against the store and lists the ids
 * that differ. */
async function verify(c, button) {
    const out = button.parentNode.querySelector(".differs");
    out.textContent = "verifying…";
    const answers = await Promise.all(state.nodes.map((n) =>
        getJSON(baseOf(n), `/v1/collections/${enc(c)}/verify`, { method: "POST" })
            .then((v) => ({ node: n.id, v }))
            .catch((e) => ({ node: n.id, error: e.message }))));
    out.replaceChildren(...answers.map((a) => {
        if (a.error) return el("div", { class: "bad" }, `${a.node}: ${a.error}`);
        const ids = (a.v.differs || []).map((x) => `${x.id} (node v${x.node_v}, store v${x.store_v})`);
        return el("div", { class: a.v.agree ? "ok" : "bad" },
                  `${a.node}: ${a.v.agree ? "agrees with the store" : "differs: " + ids.join(", ")}`);
    }));
}

/* ---- Metrics charts --------------------------------------------------- */

/* Parses the Prometheus text of /metrics into {name{labels}: value}. */
function parseMetrics(text) {
    const m = {};
    for (const line of text.split("\n")) {
        if (!line || line[0] === "#") continue;
        const sp = line.lastIndexOf(" ");
        m[line.slice(0, sp)] = Number(line.slice(sp + 1));
    }
    return m;
}

/* Sums the metrics of every reachable live node into one sample. */
async function sampleMetrics() {
    const per = await Promise.all(state.nodes.map((n) =>
        call(baseOf(n), "/metrics").then((r) => r.text()).then(parseMetrics).catch(() => null)));
    const s = { t: Date.now(), conflicts: 0, retries: 0, buckets: {} };
    for (const m of per) {
        if (!m) continue;
        s.conflicts += m["syncd_edit_conflicts_total"] || 0;
        s.retries += m["syncd_edit_retries_total"] || 0;
        for (const [k, v] of Object.entries(m)) {
            const b = /^syncd_propagation_seconds_bucket\{le="([^"]+)"\}$/.exec(k);
            if (b) s.buckets[b[1]] = (s.buckets[b[1]] || 0) + v;
        }
    }
    state.samples.push(s);
    if (state.samples.length > 61) state.samples.shift();
    drawCharts();
}

/* The 99th percentile (s) of the observations between two histogram
 * samples (upper bound of the bucket that holds it), or null if none. */
function p99(prev, cur) {
    const les = Object.keys(cur).sort((a, b) => Number(a) - Number(b));
    const total = (cur["+Inf"] || 0) - (prev["+Inf"] || 0);
    if (total <= 0) return null;
    for (const le of les) {
        if ((cur[le] || 0) - (prev[le] || 0) >= 0.99 * total)
            return le === "+Inf" ? Number(les[les.length - 2]) : Number(le);
    }
    return null;
}

/* A small SVG line chart of values (null: no data, a gap in the line). */
function chart(title, unit, values) {
    const W = 240, H = 60;
    const max = Math.max(1e-9, ...values.filter((v) => v !== null));
    const x = (i) => (i * W) / Math.max(1, values.length - 1);
    const y = (v) => H - (v / max) * (H - 4) - 2;
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    let pts = [];
    const flush = () => {
        if (pts.length === 0) return;
        if (pts.length === 1) pts.push(pts[0].replace(/^[^,]+/, (a) => String(Number(a) + 2)));
        const line = document.createElementNS(svgNS, "polyline");
        line.setAttribute("points", pts.join(" "));
        svg.append(line);
        pts = [];
    };
    values.forEach((v, i) => {
        if (v === null) flush();
        else pts.push(`${x(i)},${y(v)}`);
    });
    flush();
    const last = values.length ? values[values.length - 1] : null;
    const fmt = (v) => (v === null ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0));
    return el("div", { class: "chart" },
              el("div", { class: "label" },
                 `${title}: ${fmt(last)} ${unit} (max ${fmt(values.some((v) => v !== null) ? max : null)})`),
              svg);
}

function drawCharts() {
    const S = state.samples, conflicts = [], retries = [], prop = [];
    for (let i = 1; i < S.length; i++) {
        const dt = (S[i].t - S[i - 1].t) / 1000;
        conflicts.push(Math.max(0, S[i].conflicts - S[i - 1].conflicts) / dt);
        retries.push(Math.max(0, S[i].retries - S[i - 1].retries) / dt);
        const p = p99(S[i - 1].buckets, S[i].buckets);
        prop.push(p === null ? null : p * 1000);
    }
    $("charts").replaceChildren(chart("conflicts", "/s", conflicts),
                                chart("retries", "/s", retries),
                                chart("propagation p99", "ms", prop));
}

/* ---- Start ------------------------------------------------------------ */

function report(e) {
    if (e instanceof HttpError && e.status === 401) return;
    showError(String(e.message || e));
}

/* Runs fn every ms milliseconds, one call at a time. */
function every(ms, fn) {
    let shown = null;
    const tick = async () => {
        try {
            await fn();
            if (shown !== null && $("error").textContent === shown) showError("");
            shown = null;
        } catch (e) {
            report(e);
            shown = $("error").textContent;
        }
        setTimeout(tick, ms);
    };
    tick();
}

let started = false;

async function start() {
    const h = await (await fetch("/v1/health")).json();
    state.self = h.node;
    $("self").textContent = `node ${h.node} · ${h.store} store · ${h.bus} bus`;
    if (h.token_required && !state.token) {
        $("mode").textContent = "no token";
        askToken("this cluster needs its token");
        return;
    }
    $("mode").textContent = "read-write";
    if (started) {
        if (state.coll) selectCollection(state.coll);
        return;
    }
    started = true;
    every(1000, refreshNodes);
    every(3000, refreshCollections);
    every(3000, refreshHealth);
    every(2000, sampleMetrics);
}

document.addEventListener("DOMContentLoaded", () => {
    setupToken();
    $("coll-select").addEventListener("change", (ev) => selectCollection(ev.target.value));
    $("search-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        loadDocs().catch(report);
    });
    $("open-id").addEventListener("click", () => {
        const id = $("prefix-input").value.trim();
        if (id && state.coll) openDoc(id).catch(report);
    });
    $("diff-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        showDiff().catch(report);
    });
    $("rollback-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        askRollback();
    });
    $("rollback-yes").addEventListener("click", () => doRollback().catch(report));
    $("rollback-no").addEventListener("click", () => { $("rollback-confirm").hidden = true; });
    start().catch(report);
});
