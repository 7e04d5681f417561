// The status page's script: plain JavaScript, no build step, nothing from outside.
//
// Safety rules (doc/status-page.md):
// - every string a service or claim supplies goes into the page as text
//   (textContent, or append() of a string, which makes a text node); never
//   innerHTML or any other HTML parser;
// - tokens live in sessionStorage (this tab only) and travel only in one
//   header of fetch() calls to this origin (Authorization: Bearer, or
//   X-Auth-Token when the daemon takes Keystone tokens); never a cookie,
//   never a URL.
// Why it pages: at 10,000 services the first paint must stay under a second,
// so the daemon sorts, filters and pages (GET /v1/services?offset=&limit=) and
// counts; the browser only ever holds one page.
// Why a refresh is one request, and news waits: each refresh reads the whole
// fleet, about a second of the daemon's CPU at 100,000 services, and a storm
// of transitions brings news every sweep. So the page of services carries the
// counts (GET /v1/services?...&summary=true: one read of the fleet, not two),
// and news that arrives while a refresh is in flight, or soon after one,
// makes one refresh after it, not one each (soon(); doc/status-page.md).
"use strict";

(() => {
  const PAGE_SIZE = 100;
  const RECENT_EVENTS = 50;
  const SHOWN_CLAIMS = 50;
  const LONG_POLL_SECONDS = 25;
  // Heartbeat ages only move forward between refreshes: a page with no news
  // re-reads everything once this long after its last refresh (not on a
  // fixed beat, which during a storm would add to the refreshes news makes).
  const SAFETY_REFRESH_MS = 10000;
  const RETRY_MS = 2000;
  // After news, the first refresh waits this long: the sweep that wrote one
  // event often writes more within it.
  const NEWS_DELAY_MS = 100;
  // The shortest time between the end of one refresh and the start of the
  // next one made by news: 1 s, as fast as a person reads a change, so a
  // storm costs the daemon one refresh a second per open page, not one per
  // sweep, and a service still turns red within a second of its event
  // (within the wider gap below where a refresh is slow).
  const EVENT_REFRESH_GAP_MS = 1000;
  // A refresh that took long (a big fleet, a busy daemon) widens that gap to
  // this many times its own length: an open page then keeps the daemon busy
  // a quarter of the time at most, however long a read of the fleet takes.
  const SLOW_REFRESH_FACTOR = 3;
  const STATES = ["up", "down", "unknown"];
  const READ_KEY = "servicegroup-read-token";
  const ADMIN_KEY = "servicegroup-admin-token";
  // The daemon says how it authenticates in the page it serves (status_page.py):
  // under [api] auth_strategy = keystone the tokens typed in are Keystone
  // tokens, sent as X-Auth-Token, OpenStack's header for them.
  const STRATEGY = document.querySelector('meta[name="servicegroup-auth-strategy"]');
  const KEYSTONE = STRATEGY !== null && STRATEGY.content === "keystone";

  const view = {
    filters: { binary: "", host: "", state: "", availability_zone: "" },
    sort: "state",
    order: "asc",
    offset: 0,
    total: 0,
    cursor: null,
    skewMs: 0,
    ages: [],
    events: [],
    refreshing: false,
    again: false,
    newsWaiting: false,
    lastEnd: -Infinity,
    lastTook: 0,
    scheduled: null,
    poll: null,
    rendered: false,
    loadFailed: false,
  };

  const $ = (id) => document.getElementById(id);

  // A node with text children only: strings become text nodes, never markup.
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function cell(text, className) {
    const td = el("td", className || "", text);
    if (typeof text === "string") td.title = text;
    return td;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function tokens() {
    return {
      read: sessionStorage.getItem(READ_KEY) || "",
      admin: sessionStorage.getItem(ADMIN_KEY) || "",
    };
  }

  async function api(path, options = {}) {
    const { method = "GET", body, admin = false, signal } = options;
    const held = tokens();
    const token = admin ? held.admin : held.read || held.admin;
    const headers = { Accept: "application/json" };
    if (token && KEYSTONE) headers["X-Auth-Token"] = token;
    else if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && data.error && data.error.message) || response.statusText;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== "" && value !== null && value !== undefined) search.set(key, String(value));
    }
    return search.toString();
  }

  function say(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "message error" : "message";
    box.hidden = false;
  }

  function quiet() {
    $("message").hidden = true;
  }

  function explain(error) {
    if (error.status === 401 || error.status === 403) {
      return "The daemon refused (HTTP " + error.status + "): " + error.message +
        ". Enter a " + (KEYSTONE ? "Keystone token" : "token") + " above.";
    }
    if (error.status) return "HTTP " + error.status + ": " + error.message;
    return "The daemon did not answer: " + error.message;
  }

  // Ages -------------------------------------------------------------------

  function serverNow() {
    return Date.now() + view.skewMs;
  }

  function ageText(seconds) {
    if (seconds < 0) seconds = 0;
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h";
    return Math.floor(seconds / 86400) + " d";
  }

  function ageCell(time) {
    const td = el("td", "num", "never");
    if (time) {
      const at = Date.parse(time);
      view.ages.push([td, at]);
      td.textContent = ageText((serverNow() - at) / 1000);
      td.title = time;
    }
    return td;
  }

  function tickAges() {
    const now = serverNow();
    for (const [td, at] of view.ages) td.textContent = ageText((now - at) / 1000);
  }

  // Fleet summary ------------------------------------------------------------

  function count(value, badClass) {
    return cell(String(value), value > 0 && badClass ? "num " + badClass : "num");
  }

  function renderSummary(summary) {
    const rows = summary.groups.map((group) => {
      const versions = group.min_version === null ? "—"
        : group.min_version === group.max_version ? String(group.min_version)
        : group.min_version + "–" + group.max_version;
      const tr = el("tr", group.down > 0 ? "state-down" : "",
        cell(group.binary),
        cell(group.availability_zone === null ? "—" : group.availability_zone),
        count(group.total), count(group.up), count(group.down, "bad"),
        count(group.unknown, "warn"), count(group.disabled), count(group.forced_down, "bad"),
        cell(versions, "num"));
      tr.addEventListener("click", () => {
        view.filters.binary = group.binary;
        view.filters.availability_zone = group.availability_zone || "";
        view.offset = 0;
        showFilters();
        refresh();
      });
      return tr;
    });
    $("summary").tBodies[0].replaceChildren(...rows);
    const t = summary.totals;
    $("totals").textContent = t.total + " services: " + t.up + " up, " + t.down + " down, " +
      t.unknown + " unknown, " + t.disabled + " disabled, " + t.forced_down + " forced down";
    fillChoices($("f-binary"), summary.groups.map((g) => g.binary), view.filters.binary);
    fillChoices($("f-zone"), summary.groups.map((g) => g.availability_zone)
      .filter((zone) => zone !== null), view.filters.availability_zone);
  }

  function fillChoices(select, values, chosen) {
    const wanted = [...new Set(values)].sort();
    if (chosen && !wanted.includes(chosen)) wanted.push(chosen);
    const have = [...select.options].slice(1).map((option) => option.value);
    if (have.join("\n") !== wanted.join("\n")) {
      const options = wanted.map((value) => {
        const option = el("option", "", value);
        option.value = value;
        return option;
      });
      select.replaceChildren(select.options[0], ...options);
    }
    select.value = chosen;
  }

  // Services -------------------------------------------------------------------

  function flags(service) {
    const td = el("td");
    if (service.disabled) {
      const reason = service.disabled_reason ? ": " + service.disabled_reason : "";
      td.append(el("span", "flag", "disabled" + reason));
    }
    if (service.forced_down) td.append(el("span", "flag forced", "forced down"));
    return td;
  }

  function button(label, onClick) {
    const b = el("button", "", label);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function serviceActions(service) {
    const td = el("td", "admin");
    if (!tokens().admin) return td;
    const name = service.host + " (" + service.binary + ")";
    const path = "/v1/services/" + encodeURIComponent(service.id);
    if (service.disabled) {
      td.append(button("enable", () => act("Enable " + name + "?", false, () =>
        api(path, { method: "PATCH", admin: true,
          body: { disabled: false, disabled_reason: null } }))));
    } else {
      td.append(button("disable", () => act("Disable " + name + "? Give a reason.", true,
        (reason) => api(path, { method: "PATCH", admin: true,
          body: { disabled: true, disabled_reason: reason } }))));
    }
    if (service.forced_down) {
      td.append(button("unforce", () => act("Stop forcing " + name + " down?", false, () =>
        api(path, { method: "PATCH", admin: true, body: { forced_down: false } }))));
    } else {
      td.append(button("force down", () => act("Force " + name + " down?", false, () =>
        api(path, { method: "PATCH", admin: true, body: { forced_down: true } }))));
    }
    td.append(button("delete", () => act("Delete " + name + "? It can register again.", false,
      () => api(path, { method: "DELETE", admin: true }))));
    return td;
  }

  function serviceRow(service) {
    const state = STATES.includes(service.state) ? service.state : "unknown";
    const tr = el("tr", "state-" + state,
      el("td", "", el("span", "badge " + state, state)),
      cell(service.host),
      cell(service.binary),
      cell(service.availability_zone === null ? "—" : service.availability_zone),
      ageCell(service.last_heartbeat),
      cell(String(service.version), "num"),
      flags(service),
      serviceActions(service));
    tr.dataset.id = service.id;
    return tr;
  }

  function renderServices(list) {
    view.total = list.total;
    view.ages = [];
    const rows = list.services.map(serviceRow);
    if (!rows.length) {
      const td = el("td", "muted", "no service matches");
      td.colSpan = 8;
      rows.push(el("tr", "", td));
    }
    $("services").tBodies[0].replaceChildren(...rows);
    const last = view.offset + list.services.length;
    $("range").textContent = list.total === 0 ? "0 services"
      : (view.offset + 1) + "–" + last + " of " + list.total;
    $("prev").disabled = view.offset === 0;
    $("next").disabled = last >= list.total;
    for (const b of document.querySelectorAll("button.sort")) {
      b.classList.toggle("asc", b.dataset.sort === view.sort && view.order === "asc");
      b.classList.toggle("desc", b.dataset.sort === view.sort && view.order === "desc");
    }
    if (!view.rendered) {
      view.rendered = true;
      performance.mark("servicegroup-services-rendered");
    }
  }

  // Events and claims --------------------------------------------------------------

  function addEvents(events) {
    view.events = events.slice().reverse().concat(view.events).slice(0, RECENT_EVENTS);
    const rows = view.events.map((event) => {
      const state = STATES.includes(event.state) ? event.state : "";
      return el("tr", state === "down" ? "state-down" : "",
        cell(new Date(Date.parse(event.time)).toLocaleTimeString()),
        cell(event.host), cell(event.binary),
        cell((event.previous || "new") + " → " + event.state), cell(event.cause));
    });
    $("events").tBodies[0].replaceChildren(...rows);
  }

  function renderClaims(claims) {
    const shown = claims.slice()
      .sort((a, b) => Date.parse(b.updated_at || b.claimed_at) - Date.parse(a.updated_at || a.claimed_at))
      .slice(0, SHOWN_CLAIMS);
    const admin = Boolean(tokens().admin);
    const rows = shown.map((claim) => {
      const owner = claim.owner_host ? claim.owner_host + " (" + claim.owner_binary + ")"
        : claim.owner || "—";
      const actions = el("td", "admin");
      if (admin && (claim.state === "held" || claim.state === "recovering")) {
        const name = claim.resource_type + "/" + claim.resource_id;
        actions.append(button("force-release", () => act(
          "Force-release " + name + " held by " + owner + "? Give a reason.", true,
          (reason) => api("/v1/claims/force-release", { method: "POST", admin: true,
            body: { resource_type: claim.resource_type, resource_id: claim.resource_id, reason } }))));
      }
      return el("tr", claim.state === "recovering" ? "state-down" : "",
        cell(claim.resource_type + "/" + claim.resource_id), cell(claim.operation),
        cell(owner), cell(claim.state), cell(String(claim.epoch), "num"),
        ageCell(claim.claimed_at), actions);
    });
    if (!rows.length) {
      const td = el("td", "muted", "no claims");
      td.colSpan = 7;
      rows.push(el("tr", "", td));
    }
    $("claims").tBodies[0].replaceChildren(...rows);
  }

  // Admin actions, each behind a confirm step ------------------------------------

  function confirmStep(text, needsReason) {
    const dialog = $("confirm");
    const reason = $("confirm-reason");
    $("confirm-text").textContent = text;
    $("confirm-reason-label").hidden = !needsReason;
    reason.required = needsReason;
    reason.value = "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        resolve(dialog.returnValue === "ok" ? { reason: reason.value.trim() } : null);
      }, { once: true });
      dialog.showModal();
      (needsReason ? reason : $("confirm-cancel")).focus();
    });
  }

  async function act(question, needsReason, perform) {
    const answer = await confirmStep(question, needsReason);
    if (answer === null) return;
    try {
      await perform(answer.reason);
      say("Done: " + question.split("?")[0] + ".", false);
    } catch (error) {
      say("Refused: " + explain(error), true);
    }
    refresh();
  }

  // Loading and live updates ---------------------------------------------------------

  function servicesPath() {
    return "/v1/services?" + query({ ...view.filters, sort: view.sort, order: view.order,
      offset: view.offset, limit: PAGE_SIZE, summary: true });
  }

  // Now, for what the page shows: a click or a token (and the safety timer).
  // A refresh covers any news that arrived before it starts.
  async function refresh() {
    if (view.refreshing) {
      view.again = true;
      return;
    }
    view.refreshing = true;
    view.newsWaiting = false;
    if (view.scheduled !== null) {
      clearTimeout(view.scheduled);
      view.scheduled = null;
    }
    const started = performance.now();
    try {
      const [list, claims] = await Promise.all([api(servicesPath()), api("/v1/claims")]);
      const summary = list.summary;
      view.skewMs = Date.parse(summary.now) - Date.now();
      renderSummary(summary);
      if (list.services.length === 0 && view.offset > 0 && list.total > 0) {
        view.offset = Math.max(0, list.total - PAGE_SIZE);
        view.again = true;
      } else {
        renderServices(list);
      }
      renderClaims(claims.claims);
      if (view.cursor === null) await startEvents(summary.event_cursor);
      if (view.loadFailed) quiet();
      view.loadFailed = false;
    } catch (error) {
      view.loadFailed = true;
      say(explain(error), true);
    } finally {
      view.refreshing = false;
      view.lastEnd = performance.now();
      view.lastTook = view.lastEnd - started;
      if (view.again) {
        view.again = false;
        refresh();
      } else if (view.newsWaiting) {
        view.newsWaiting = false;
        soon();
      }
    }
  }

  // For news from the events stream: one refresh for all the news that arrives
  // while one is in flight or within the gap after it (the constants above).
  function soon() {
    if (view.refreshing) {
      view.newsWaiting = true;
      return;
    }
    if (view.scheduled !== null) return;
    const gap = Math.max(EVENT_REFRESH_GAP_MS, SLOW_REFRESH_FACTOR * view.lastTook);
    const wait = Math.max(NEWS_DELAY_MS, view.lastEnd + gap - performance.now());
    view.scheduled = setTimeout(() => {
      view.scheduled = null;
      refresh();
    }, wait);
  }

  async function startEvents(cursor) {
    const since = Math.max(0, cursor - RECENT_EVENTS);
    const batch = await api("/v1/events?" + query({ since, limit: RECENT_EVENTS }));
    addEvents(batch.events);
    view.cursor = Math.max(cursor, batch.cursor);
    setLive(true);
    follow();
  }

  function setLive(on) {
    const live = $("live");
    live.textContent = on ? "live" : "reconnecting…";
    live.className = on ? "live on" : "live off";
  }

  async function follow() {
    for (;;) {
      const poll = new AbortController();
      view.poll = poll;
      try {
        const batch = await api("/v1/events?" + query({ since: view.cursor,
          wait: LONG_POLL_SECONDS, limit: 1000 }), { signal: poll.signal });
        setLive(true);
        if (batch.events.length) {
          view.cursor = batch.cursor;
          addEvents(batch.events);
          soon();
        }
      } catch (error) {
        if (error.name !== "AbortError") {
          setLive(false);
          await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        }
      }
    }
  }

  // Controls ----------------------------------------------------------------------

  function showFilters() {
    $("f-binary").value = view.filters.binary;
    $("f-host").value = view.filters.host;
    $("f-state").value = view.filters.state;
    $("f-zone").value = view.filters.availability_zone;
  }

  function labelTokens() {
    if (!KEYSTONE) return;
    $("read-token-label").textContent = "Keystone token";
    $("read-token").placeholder = "reader role or above";
    $("admin-token-label").textContent = "Admin Keystone token";
    $("admin-token").placeholder = "admin role, for actions";
  }

  function showTokens() {
    const held = tokens();
    $("read-token").value = held.read;
    $("admin-token").value = held.admin;
    document.body.classList.toggle("admin-mode", Boolean(held.admin));
  }

  function keep(key, value) {
    if (value) sessionStorage.setItem(key, value);
    else sessionStorage.removeItem(key);
  }

  function wire() {
    $("tokens").addEventListener("submit", (event) => {
      event.preventDefault();
      keep(READ_KEY, $("read-token").value.trim());
      keep(ADMIN_KEY, $("admin-token").value.trim());
      showTokens();
      if (view.poll) view.poll.abort();
      refresh();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(READ_KEY);
      sessionStorage.removeItem(ADMIN_KEY);
      showTokens();
      refresh();
    });
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      view.filters = { binary: $("f-binary").value, host: $("f-host").value.trim(),
        state: $("f-state").value, availability_zone: $("f-zone").value };
      view.offset = 0;
      refresh();
    });
    for (const id of ["f-binary", "f-state", "f-zone"]) {
      $(id).addEventListener("change", () => $("filters").requestSubmit());
    }
    $("f-clear").addEventListener("click", () => {
      view.filters = { binary: "", host: "", state: "", availability_zone: "" };
      view.offset = 0;
      showFilters();
      refresh();
    });
    for (const b of document.querySelectorAll("button.sort")) {
      b.addEventListener("click", () => {
        view.order = view.sort === b.dataset.sort && view.order === "asc" ? "desc" : "asc";
        view.sort = b.dataset.sort;
        view.offset = 0;
        refresh();
      });
    }
    $("prev").addEventListener("click", () => {
      view.offset = Math.max(0, view.offset - PAGE_SIZE);
      refresh();
    });
    $("next").addEventListener("click", () => {
      view.offset += PAGE_SIZE;
      refresh();
    });
  }

  function start() {
    wire();
    labelTokens();
    showTokens();
    refresh();
    setInterval(tickAges, 1000);
    setInterval(() => {
      if (!view.refreshing && performance.now() - view.lastEnd >= SAFETY_REFRESH_MS) refresh();
    }, 1000);
  }

  start();
})();
