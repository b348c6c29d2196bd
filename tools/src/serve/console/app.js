// The golemw console: one page, drawn from the JSON API of the server that serves it.
// Routes live in the URL's fragment:
//   #/                               components
//   #/c/COMPONENT?filter=EXPR        workers of a component
//   #/c/COMPONENT/w/WORKER?from=N    a worker: metadata, promise, actions, output, oplog
//   #/c/COMPONENT/w/WORKER/snapshots?a=I&b=J   its snapshots and a heatmap of changed pages
"use strict";

/** Oplog entries shown per page: one request, one table; fast at any oplog length. */
const OPLOG_PAGE = 100;
/** Pages of memory drawn per row of the heatmap, and each page's cell in CSS pixels: 64 a row
 *  up to 4,096 pages (256 MiB), then 256 smaller ones a row (a 4 GiB memory, 65,536 pages, is
 *  256 rows of 3 px). */
const HEATMAP_LAYOUTS = [{ upTo: 4096, columns: 64, cell: 9 }, { upTo: Infinity, columns: 256, cell: 3 }];
/** How often a worker's page looks at its status again, in ms. */
const STATUS_POLL_MS = 2000;

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const statusLine = document.getElementById("status");
/** Timings of the page just drawn, for the browser tests (ms since navigation start). */
window.golemwTimings = {};
/** Cancels what the current page started (its output stream) when another is drawn. */
let pageAbort = new AbortController();

// ---- DOM and API helpers ----

/** An element with attributes and children (strings become text nodes, never HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiFailure extends Error {
  constructor(status, body) {
    super(typeof body === "object" && body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem("golemw-token");
  return token ? { Authorization: "Bearer " + token } : {};
}

/** A request to the API: the parsed answer, or an ApiFailure with the API's error. */
async function api(method, path, body, contentType) {
  const headers = authHeaders();
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    payload = contentType ? body : JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let value;
  try { value = JSON.parse(text); } catch { value = text; }
  if (response.status === 401) askToken();
  if (!response.ok) throw new ApiFailure(response.status, value);
  return value;
}

function askToken() {
  const form = document.getElementById("token-form");
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem("golemw-token", document.getElementById("token-input").value.trim());
    form.hidden = true;
    route();
  };
}

function say(message, isError) {
  statusLine.textContent = message;
  statusLine.className = isError ? "error" : "";
}

function enc(segment) { return encodeURIComponent(segment); }
function workerPath(c, w) { return `/v1/components/${enc(c)}/workers/${enc(w)}`; }
function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "—"; }
function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** Runs an action after the user confirms it; says how it went. */
async function act(question, action, after) {
  if (!confirm(question)) return;
  try {
    const value = await action();
    say("done: " + (typeof value === "string" ? value : JSON.stringify(value)));
    if (after) after(value);
  } catch (err) {
    say(err.message, true);
  }
}

function setCrumbs(...parts) {
  crumbs.replaceChildren(...parts.flatMap((p, i) => [i ? " / " : "", p]));
}

function table(id, headings, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

// ---- routing ----

function parseHash() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query || "") };
}

async function route() {
  pageAbort.abort();
  pageAbort = new AbortController();
  window.golemwTimings = {};
  const { parts, query } = parseHash();
  say("");
  try {
    if (parts.length === 0) await componentsPage();
    else if (parts[0] === "c" && parts.length === 2) await workersPage(parts[1], query);
    else if (parts[0] === "c" && parts[2] === "w" && parts.length === 4) await workerPage(parts[1], parts[3], query);
    else if (parts[0] === "c" && parts[2] === "w" && parts[4] === "snapshots") await snapshotsPage(parts[1], parts[3], query);
    else main.replaceChildren(el("p", {}, "No such page. ", el("a", { href: "#/" }, "Components")));
  } catch (err) {
    main.replaceChildren(el("p", { class: "error", id: "page-error" }, err.message));
  }
  window.golemwTimings.drawnMs = performance.now();
}

window.addEventListener("hashchange", route);

// ---- components ----

async function componentsPage() {
  setCrumbs("components");
  const components = await api("GET", "/v1/components");
  main.replaceChildren(
    el("h1", {}, "Components"),
    components.length === 0
      ? el("p", { class: "muted" }, "No components yet: `golemw component add NAME FILE`.")
      : table("components-table", ["name", "version", "exports", "size", "added"],
        components.map((c) => el("tr", {},
          el("td", {}, el("a", { href: `#/c/${enc(c.name)}` }, c.name)),
          el("td", {}, c.version),
          el("td", { class: "exports" }, (c.exports || []).map((e) => el("code", {}, e))),
          el("td", {}, bytes(c.size)),
          el("td", {}, time(c.created_at_ms))))));
}

// ---- workers ----

async function workersPage(component, query) {
  setCrumbs(el("a", { href: "#/" }, "components"), component);
  const filter = query.get("filter") || "";
  const path = `/v1/components/${enc(component)}/workers` + (filter ? `?filter=${enc(filter)}` : "");
  const form = el("form", { id: "filter-form", class: "inline" },
    el("input", { id: "filter-input", name: "filter", value: filter, size: 60,
      placeholder: "filter, as worker list --filter: status == idle and name like 'order-%'" }),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("filter-input").value.trim();
    location.hash = `#/c/${enc(component)}` + (value ? `?filter=${enc(value)}` : "");
  });
  const listing = el("div", { id: "workers-listing" });
  main.replaceChildren(el("h1", {}, `Workers of ${component}`), form, listing);
  const ok = await drawWorkers(component, path, listing);
  // Live: the list follows the workers (statuses, new and deleted ones) while it is shown.
  if (ok) watchWorkers(component, path, listing, pageAbort.signal);
}

/** An update's outcome as words: `pending`, `succeeded`, `failed: why`, and whether undone. */
function updateOutcome(update) {
  const outcome = typeof update.outcome === "string"
    ? update.outcome : `failed: ${update.outcome.failed}`;
  return update.undone ? `${outcome} (undone)` : outcome;
}

/** Draws the workers `path` lists into `listing`; false if the listing was refused. */
async function drawWorkers(component, path, listing) {
  try {
    const workers = await api("GET", path);
    listing.replaceChildren(workers.length === 0
      ? el("p", { class: "muted", id: "no-workers" }, "No workers match.")
      : table("workers-table", ["name", "status", "version", "oplog", "retries", "created"],
        workers.map((w) => el("tr", {},
          el("td", {}, el("a", { href: `#/c/${enc(component)}/w/${enc(w.id.worker_name)}` }, w.id.worker_name)),
          el("td", {}, el("span", { class: `badge ${w.status}` }, w.status)),
          el("td", {}, w.component_version),
          el("td", {}, w.oplog_len),
          el("td", {}, w.retry_count),
          el("td", {}, time(w.created_at_ms))))));
    return true;
  } catch (err) {
    listing.replaceChildren(el("p", { class: "error", id: "filter-error" }, err.message));
    return false;
  }
}

async function watchWorkers(component, path, listing, signal) {
  while (!signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
    if (signal.aborted) return;
    await drawWorkers(component, path, listing);
  }
}

// ---- a worker ----

async function workerPage(component, name, query) {
  const base = workerPath(component, name);
  setCrumbs(el("a", { href: "#/" }, "components"),
    el("a", { href: `#/c/${enc(component)}` }, component), name);
  const [details, componentRecord, snapshots] = await Promise.all([
    api("GET", base),
    api("GET", `/v1/components/${enc(component)}`),
    api("GET", `${base}/snapshots`),
  ]);
  const snapshotIndexes = new Set(snapshots.snapshots.map((s) => s.index));
  const last = Math.max(1, details.oplog_len - OPLOG_PAGE + 1);
  const from = query.has("from") ? Math.max(1, Number(query.get("from")) || 1) : last;
  const reload = () => route();

  const meta = el("dl", { id: "worker-meta" },
    ...[
      ["status", el("span", { class: `badge ${details.status}`, id: "worker-status" }, details.status)],
      ["component version", details.component_version],
      ["created", time(details.created_at_ms)],
      ["oplog entries", el("span", { id: "oplog-len" }, details.oplog_len)],
      ["retries", details.retry_count],
      ["last error", details.last_error || "—"],
      ["queued invocations", details.queued_invocations],
      ["latest snapshot", details.latest_snapshot_index ?? "—"],
      ["sleeping until", details.sleeping_until_ms ? time(details.sleeping_until_ms) : "—"],
      ["updates", (details.history.updates || []).length
        ? table("updates-table", ["to version", "mode", "outcome", "requested", "at entries"],
          details.history.updates.map((u) => el("tr", {},
            el("td", {}, u.target_version),
            el("td", {}, u.mode),
            el("td", {}, updateOutcome(u)),
            el("td", {}, time(u.requested_at_ms)),
            el("td", {}, u.started_at ? `${u.started_at}–${u.completed_at}` : "—"))))
        : "—"],
      ["deleted regions (jumps, reverts, discarded retry attempts)",
        (details.history.deleted || []).length
          ? el("span", { id: "deleted-regions" },
            details.history.deleted.map((r) => `${r.start}–${r.end}`).join(", "))
          : "—"],
      ["last recovery", details.last_recovery
        ? `${details.last_recovery.snapshot_index ? "from snapshot " + details.last_recovery.snapshot_index : "replay"}, ` +
          `${details.last_recovery.entries_replayed} entries replayed in ${details.last_recovery.duration_us} µs`
        : "—"],
      ["forked from", details.forked_from ? JSON.stringify(details.forked_from) : "—"],
    ].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  // The promise it awaits, completed from here.
  let promise = el("p", { class: "muted", id: "no-promise" }, "Not awaiting a promise.");
  if (details.awaiting) {
    const index = details.awaiting.promise.oplog_idx;
    const payload = el("input", { id: "promise-payload", placeholder: "payload (text)", size: 40 });
    promise = el("div", { id: "promise" },
      el("p", {}, `Awaits promise ${index} (invocation ${details.awaiting.idempotency_key}, since ${time(details.awaiting.since_ms)}).`),
      payload,
      el("button", { id: "complete-promise", onclick: () => act(
        `Complete promise ${index} of ${name}?`,
        () => api("POST", `${base}/promises/${index}/complete`, payload.value, "application/octet-stream"),
        reload) }, "Complete"));
  }

  const exports = componentRecord.exports || [];
  const fn = el("select", { id: "invoke-function" }, exports.map((e) => el("option", { value: e }, e)));
  const params = el("textarea", { id: "invoke-params", rows: 2, cols: 40, placeholder: "WAVE parameters, one per line" });
  const result = el("pre", { id: "invoke-result", class: "result" });
  const revertIndex = el("input", { id: "revert-index", type: "number", min: 1, placeholder: "oplog index", size: 10 });
  const revertLast = el("input", { id: "revert-last", type: "number", min: 1, placeholder: "invocations", size: 10 });
  const version = el("input", { id: "update-version", type: "number", min: 0, placeholder: "version", size: 8 });
  const actions = el("div", { id: "actions", class: "actions" },
    el("div", {}, fn, params,
      el("button", { id: "invoke-button", onclick: () => act(
        `Invoke ${fn.value} on ${name}?`,
        async () => {
          const list = params.value.split("\n").map((p) => p.trim()).filter(Boolean);
          const answer = await api("POST", `${base}/invoke-and-await`, { function: fn.value, params: list });
          result.textContent = JSON.stringify(answer);
          return answer.status;
        }, reload) }, "Invoke"),
      result),
    el("div", {},
      el("button", { id: "interrupt-button", onclick: () => act(`Interrupt ${name}?`, () => api("POST", `${base}/interrupt`, {}), reload) }, "Interrupt"),
      el("button", { id: "resume-button", onclick: () => act(`Resume ${name}?`, () => api("POST", `${base}/resume`, {}), reload) }, "Resume"),
      el("button", { id: "delete-button", class: "danger", onclick: () => act(
        `Delete ${name} with its whole oplog? This cannot be undone.`,
        () => api("DELETE", base), () => { location.hash = `#/c/${enc(component)}`; }) }, "Delete")),
    el("div", {}, "Revert to ", revertIndex, " or the last ", revertLast, " invocations ",
      el("button", { id: "revert-button", onclick: () => act(
        `Revert ${name}? Entries after the target are deleted from its history.`,
        () => api("POST", `${base}/revert`, revertIndex.value
          ? { to_oplog_index: Number(revertIndex.value) }
          : { last_invocations: Number(revertLast.value) }),
        reload) }, "Revert")),
    el("div", {}, "Update to version ", version,
      el("button", { id: "update-button", onclick: () => act(
        `Update ${name} to version ${version.value}?`,
        () => api("POST", `${base}/update`, { version: Number(version.value) }), reload) }, "Update")));

  const output = el("pre", { id: "output", class: "output" });
  main.replaceChildren(
    el("h1", {}, name, " ", el("a", { href: `#/c/${enc(component)}/w/${enc(name)}/snapshots`, id: "snapshots-link", class: "small" },
      `snapshots (${snapshots.snapshots.length})`)),
    el("section", {}, el("h2", {}, "Metadata"), meta),
    el("section", {}, el("h2", {}, "Promise"), promise),
    el("section", {}, el("h2", {}, "Actions"), actions),
    el("section", {}, el("h2", {}, "Output (live)"), output),
    el("section", { id: "oplog-section" }, el("h2", {}, "Oplog"), el("p", { class: "muted" }, "Loading…")));
  window.golemwTimings.metaMs = performance.now();
  follow(base, output, pageAbort.signal);
  watchStatus(base, details, pageAbort.signal);
  await drawOplog(component, name, base, from, details.oplog_len, snapshotIndexes, query);
}

/** Fills `output` with the worker's output as the server streams it (`GET .../connect`). */
async function follow(base, output, signal) {
  try {
    const response = await fetch(`${base}/connect`, { headers: authHeaders(), signal });
    if (!response.ok) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: ?(.*)$/m.exec(block);
        const data = /^data: ?(.*)$/m.exec(block);
        if (!event || !data) continue;
        const value = JSON.parse(data[1]);
        output.append(el("span", { class: event[1] }, value.text));
      }
    }
  } catch {
    // The page was left (aborted) or the server went away.
  }
}

/** Keeps the status and oplog length on the page current; says when the oplog grew or the
 *  promise it awaited is no longer awaited (the page's sections are then out of date). */
async function watchStatus(base, shown, signal) {
  let last = shown;
  while (!signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
    if (signal.aborted) return;
    let now;
    try { now = await api("GET", base); } catch { continue; }
    if (signal.aborted) return;
    const status = document.getElementById("worker-status");
    status.textContent = now.status;
    status.className = `badge ${now.status}`;
    document.getElementById("oplog-len").textContent = now.oplog_len;
    if (now.oplog_len !== last.oplog_len || Boolean(now.awaiting) !== Boolean(last.awaiting)) {
      say(`the worker changed (${now.oplog_len} oplog entries): reload the page to see it`);
    }
    last = now;
  }
}

/** A one-line summary of an oplog entry. */
function summary(kind, entry) {
  const body = Object.values(entry)[0];
  if (kind === "log" && body && body.bytes) {
    return `${body.stream}: ${new TextDecoder().decode(new Uint8Array(body.bytes))}`;
  }
  if (kind === "exported-function-invoked") return `${body.function}(${(body.params || []).join(", ")})`;
  if (kind === "exported-function-completed") return `→ ${body.result ?? "()"}`;
  const text = typeof body === "object" ? JSON.stringify(body) : String(body ?? "");
  return text.length > 200 ? text.slice(0, 200) + "…" : text;
}

/** Finds `text` in the whole oplog from index `start` on (the server searches a bounded stretch
 *  per request) and shows the page that starts at the match. */
async function findInOplog(component, name, base, text, start) {
  let from = start;
  for (;;) {
    const answer = await api("GET", `${base}/oplog/search?q=${enc(text)}&from=${from}`);
    if (answer.found) {
      location.hash = `#/c/${enc(component)}/w/${enc(name)}?from=${answer.found}&find=${enc(text)}&match=${answer.found}`;
      return;
    }
    if (answer.scanned_to >= answer.oplog_len) {
      say(`"${text}" is not in the oplog after entry ${start - 1}`);
      return;
    }
    from = answer.scanned_to + 1;
    say(`searching… entry ${from} of ${answer.oplog_len}`);
  }
}

async function drawOplog(component, name, base, from, length, snapshotIndexes, query) {
  const section = document.getElementById("oplog-section");
  const rows = await api("GET", `${base}/oplog?from=${from}&count=${OPLOG_PAGE}`);
  const page = (index) => `#/c/${enc(component)}/w/${enc(name)}?from=${Math.max(1, index)}`;
  const search = el("input", { id: "oplog-search", placeholder: "search", size: 30, value: query.get("find") || "" });
  const match = Number(query.get("match")) || 0;
  const find = el("button", { id: "oplog-find", onclick: () => {
    const text = search.value.trim();
    if (text) findInOplog(component, name, base, text, match ? match + 1 : from).catch((err) => say(err.message, true));
  } }, match ? "Find next in the oplog" : "Find in the oplog");
  const goto = el("input", { id: "oplog-goto", type: "number", min: 1, placeholder: "index", size: 10 });
  const body = rows.map((row) => {
    if (row.corrupt || !row.entry) {
      return el("tr", { class: "corrupt" }, el("td", {}, row.first ?? ""), el("td", {}, "corrupt"), el("td", {}, JSON.stringify(row)));
    }
    const classes = [row.kind, row.deleted ? "deleted" : "", snapshotIndexes.has(row.index) ? "snapshot" : "",
      row.index === match ? "match" : ""].join(" ");
    return el("tr", { class: classes, "data-index": row.index },
      el("td", { class: "index" }, row.index),
      el("td", {}, el("span", { class: "kind" }, row.kind),
        row.deleted ? el("span", { class: "badge deleted" }, "deleted") : null,
        snapshotIndexes.has(row.index) ? el("span", { class: "badge snapshot" }, "snapshot") : null),
      el("td", { class: "summary" }, summary(row.kind, row.entry)));
  });
  search.addEventListener("input", () => {
    // Typing filters this page; "find" searches the whole oplog.
    const needle = search.value.toLowerCase();
    for (const tr of body) tr.hidden = needle !== "" && !tr.textContent.toLowerCase().includes(needle);
  });
  const nav = el("div", { class: "pager" },
    el("a", { href: page(1), id: "oplog-first" }, "« first"),
    el("a", { href: page(from - OPLOG_PAGE), id: "oplog-prev" }, "‹ earlier"),
    el("span", { id: "oplog-range" }, ` ${from}–${Math.min(length, from + OPLOG_PAGE - 1)} of ${length} `),
    el("a", { href: page(from + OPLOG_PAGE), id: "oplog-next" }, "later ›"),
    el("a", { href: page(length - OPLOG_PAGE + 1), id: "oplog-last" }, "last »"),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); location.hash = page(Number(goto.value)); } },
      goto, el("button", { type: "submit" }, "Go")),
    search, find);
  section.replaceChildren(el("h2", {}, "Oplog"), nav, table("oplog-table", ["#", "entry", ""], body));
  window.golemwTimings.oplogMs = performance.now();
}

// ---- snapshots ----

async function snapshotsPage(component, name, query) {
  const base = workerPath(component, name);
  setCrumbs(el("a", { href: "#/" }, "components"),
    el("a", { href: `#/c/${enc(component)}` }, component),
    el("a", { href: `#/c/${enc(component)}/w/${enc(name)}` }, name), "snapshots");
  const list = (await api("GET", `${base}/snapshots`)).snapshots.filter((s) => !s.error);
  const heading = el("h1", {}, `Snapshots of ${name}`);
  if (list.length === 0) {
    main.replaceChildren(heading, el("p", { class: "muted", id: "no-snapshots" }, "No snapshots yet."));
    return;
  }
  const indexes = list.map((s) => s.index);
  const b = Number(query.get("b")) || indexes[indexes.length - 1];
  const a = Number(query.get("a")) || indexes[Math.max(0, indexes.indexOf(b) - 1)];
  const select = (id, chosen) => el("select", { id }, indexes.map((i) => el("option", { value: i, selected: i === chosen }, i)));
  const pickA = select("heatmap-a", a);
  const pickB = select("heatmap-b", b);
  const redraw = () => { location.hash = `#/c/${enc(component)}/w/${enc(name)}/snapshots?a=${pickA.value}&b=${pickB.value}`; };
  pickA.addEventListener("change", redraw);
  pickB.addEventListener("change", redraw);
  const rows = list.map((s) => el("tr", { class: s.index === a || s.index === b ? "chosen" : "" },
    el("td", {}, s.index), el("td", {}, bytes(s.memory_bytes)), el("td", {}, s.pages_total),
    el("td", {}, s.pages_stored), el("td", {}, s.pages_new), el("td", {}, bytes(s.bytes_new)),
    el("td", {}, `${s.capture_us} µs`), el("td", {}, `${s.age_s} s`)));
  const diff = await api("GET", `${base}/snapshots/diff?from=${a}&to=${b}`);
  main.replaceChildren(heading,
    table("snapshots-table", ["oplog index", "memory", "pages", "stored", "new", "new bytes", "capture", "age"], rows),
    el("h2", {}, "Memory, page by page"),
    el("p", {}, "From ", pickA, " to ", pickB, " ",
      el("span", { id: "heatmap-summary" }, `${diff.changed_pages} of ${diff.pages_total} pages of 64 KiB changed`)),
    heatmap(diff),
    el("p", { class: "legend" },
      el("span", { class: "swatch changed" }), "changed ",
      el("span", { class: "swatch same" }), "unchanged ",
      el("span", { class: "swatch zero" }), "all zero"));
}

/** A canvas with one cell per page of the later snapshot's memory. */
function heatmap(diff) {
  const total = diff.pages_total;
  const { columns, cell } = HEATMAP_LAYOUTS.find((l) => total <= l.upTo);
  const rows = Math.max(1, Math.ceil(total / columns));
  const canvas = el("canvas", {
    id: "heatmap", width: columns * cell, height: rows * cell,
    "data-changed": diff.changed_pages, "data-pages": total,
  });
  const state = new Uint8Array(total); // 0 unchanged, 1 changed, 2 zero
  for (const [s, e] of diff.zero) state.fill(2, s, Math.min(e, total));
  for (const [s, e] of diff.changed) state.fill(1, s, Math.min(e, total));
  const colors = ["#74b816", "#e8590c", "#dee2e6"];
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < total; i++) {
    ctx.fillStyle = colors[state[i]];
    ctx.fillRect((i % columns) * cell, Math.floor(i / columns) * cell, cell - 1, Math.max(1, cell - 1));
  }
  return canvas;
}

route();
