// The shippy web console: plain DOM, no framework, no build step, served by the gateway under
// `Content-Security-Policy: default-src 'self'`. Every string the server sends reaches the page
// through textContent or an attribute value only (never innerHTML), so hostile data stays text.

/** sessionStorage, not localStorage: the token dies with the tab and is not shared between tabs. */
const TOKEN_KEY = "shippy.token";
/** How often the live instances are fetched again. */
const INSTANCES_EVERY_MS = 3000;
/** Items asked for per page, and the most pages followed (bounds the table, not the fleet). */
const PAGE_SIZE = 100;
const MAX_PAGES = 20;

const $ = (id) => document.getElementById(id);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** A refused call: the gateway's one-sentence `detail` and the request id to quote. */
class ApiError extends Error {
  constructor(detail, requestId, status) {
    super(detail);
    this.requestId = requestId;
    this.status = status;
  }
}

/** Calls the gateway; resolves to the JSON answer or rejects with an ApiError. */
async function api(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders, Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  } catch {
    throw new ApiError("The gateway could not be reached; is it running?", "", 0);
  }
  const headerId = response.headers.get("x-request-id") ?? "";
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): reported below by status.
  }
  if (!response.ok) {
    const detail = typeof data?.detail === "string" ? data.detail : `The gateway answered ${response.status}.`;
    const requestId = typeof data?.request_id === "string" ? data.request_id : headerId;
    if (response.status === 401 && token) endSession();
    throw new ApiError(detail, requestId, response.status);
  }
  if (data === null || typeof data !== "object") {
    throw new ApiError("The gateway's answer was not a JSON object.", headerId, response.status);
  }
  return data;
}

/** Follows next_page_token; returns the items under `key` of every page. */
async function allPages(path, key) {
  const items = [];
  let pageToken = "";
  for (let page = 0; page < MAX_PAGES; page++) {
    const query = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (pageToken) query.set("page_token", pageToken);
    const answer = await api("GET", `${path}?${query}`);
    if (Array.isArray(answer[key])) items.push(...answer[key]);
    pageToken = typeof answer.next_page_token === "string" ? answer.next_page_token : "";
    if (!pageToken) break;
  }
  return items;
}

function showError(error) {
  $("error-detail").textContent = error instanceof ApiError ? error.message : `Unexpected: ${error}`;
  $("error-request-id").textContent = error.requestId || "none";
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

/** Runs a user action with its errors shown in the alert area. */
function action(run) {
  return async (event) => {
    event?.preventDefault();
    clearError();
    try {
      await run(event);
    } catch (error) {
      showError(error);
    }
  };
}

/** A table row of text cells; each cell gets class `c-<column>` so it can be found. */
function row(cells) {
  const tr = document.createElement("tr");
  for (const [column, value] of Object.entries(cells)) {
    const td = document.createElement("td");
    td.className = `c-${column}`;
    td.textContent = value === null || value === undefined ? "—" : String(value);
    tr.append(td);
  }
  return tr;
}

function fill(tableId, rows) {
  $(tableId).tBodies[0].replaceChildren(...rows);
}

/** Shows the parts for a signed-in or signed-out visitor. */
function render() {
  const signedIn = sessionStorage.getItem(TOKEN_KEY) !== null;
  $("auth").hidden = signedIn;
  $("ship").hidden = !signedIn;
  $("mine").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
  if (!signedIn) {
    fill("consignments", []);
    $("consignments-count").textContent = "";
  }
}

function endSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("signed-in-as").textContent = "";
  render();
}

async function loadMe() {
  const answer = await api("GET", "/v1/users");
  const me = Array.isArray(answer.users) ? answer.users[0] : undefined;
  $("signed-in-as").textContent = me ? `Signed in as ${me.name} <${me.email}>` : "Signed in";
}

async function loadConsignments() {
  const consignments = await allPages("/v1/consignments", "consignments");
  fill("consignments", consignments.map((c) => row({
    id: c.id,
    description: c.description,
    weight: c.weight,
    containers: Array.isArray(c.containers) ? c.containers.length : 0,
    vessel: c.vessel_id,
  })));
  $("consignments-count").textContent = plural(consignments.length, "consignment");
}

async function loadVessels() {
  const vessels = await allPages("/v1/vessels", "vessels");
  fill("vessels", vessels.map((v) => row({
    id: v.id,
    name: v.name,
    capacity: v.capacity,
    max_weight: v.max_weight,
    available: v.available ? "yes" : "no",
  })));
}

/** One section per catalog service: its instances and the calls each has served. */
function instanceSection(service) {
  const instances = Array.isArray(service.instances) ? service.instances : [];
  const section = document.createElement("section");
  section.className = "service";
  section.dataset.service = String(service.name);
  const heading = document.createElement("h3");
  const calls = instances.reduce((sum, i) => sum + (Number.isFinite(i.calls_served) ? i.calls_served : 0), 0);
  heading.textContent = `${service.name} — ${plural(instances.length, "instance")}, ${plural(calls, "call")} served`;
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const title of ["Id", "Address", "Version", "Calls served"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = title;
    head.append(th);
  }
  table.createTBody().append(...instances.map((i) => row({
    id: i.id,
    address: i.address,
    version: i.version,
    calls: i.calls_served,
  })));
  section.append(heading, table);
  return section;
}

let instancesBusy = false;
async function loadInstances() {
  if (instancesBusy) return;
  instancesBusy = true;
  try {
    const answer = await api("GET", "/v1/instances");
    const services = Array.isArray(answer.services) ? answer.services : [];
    $("instances").replaceChildren(...services.map(instanceSection));
    $("instances-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    // A background refresh must not cover the user's own errors: it reports next to the list.
    $("instances-updated").textContent = `Last refresh failed: ${error.message}`;
  } finally {
    instancesBusy = false;
  }
}

async function afterLogin() {
  render();
  await Promise.all([loadMe(), loadConsignments()]);
}

$("login-form").addEventListener("submit", action(async () => {
  const answer = await api("POST", "/v1/auth/token", JSON.stringify({
    email: $("email").value,
    password: $("password").value,
  }));
  if (typeof answer.token !== "string" || !answer.token) {
    throw new ApiError("The gateway returned no token.", "", 200);
  }
  sessionStorage.setItem(TOKEN_KEY, answer.token);
  $("password").value = "";
  await afterLogin();
}));

$("register-form").addEventListener("submit", action(async () => {
  await api("POST", "/v1/users", JSON.stringify({
    name: $("reg-name").value,
    company: $("reg-company").value,
    email: $("reg-email").value,
    password: $("reg-password").value,
  }));
  // Straight to the login form, filled in: one click to sign in.
  $("email").value = $("reg-email").value;
  $("password").value = $("reg-password").value;
  $("reg-password").value = "";
  $("register-form").closest("details").open = false;
  $("login").focus();
}));

$("logout").addEventListener("click", () => {
  clearError();
  endSession();
});

$("consignment-file").addEventListener("change", action(async (event) => {
  const [file] = event.target.files;
  if (file) $("consignment-json").value = await file.text();
}));

/**
 * The draft being created and its idempotency key. Sending the same draft again (after an answer
 * that never came back, say) sends the same key, so the consignment service stores it once and
 * answers with the consignment it stored; a changed draft, or the next one after a success, gets a
 * fresh key, so two identical consignments shipped on purpose are two.
 */
let draft = { body: null, key: "" };

/** A fresh idempotency key: 128 random bits as hex. `crypto.randomUUID` would do, but only in a
 * secure context, and the console may be served over plain HTTP on a non-loopback address. */
function freshKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

$("consignment-form").addEventListener("submit", action(async () => {
  $("created").hidden = true;
  // Sent as typed: the gateway is the one judge of the JSON, and its answer names what is wrong.
  const body = $("consignment-json").value;
  if (draft.body !== body) draft = { body, key: freshKey() };
  const answer = await api("POST", "/v1/consignments", body, { "Idempotency-Key": draft.key });
  draft = { body: null, key: "" };
  $("created-id").textContent = answer.consignment?.id ?? "";
  $("created-vessel").textContent = answer.consignment?.vessel_id ?? "";
  $("created").hidden = false;
  await loadConsignments();
}));

$("refresh-consignments").addEventListener("click", action(loadConsignments));
$("refresh-vessels").addEventListener("click", action(loadVessels));
$("error-dismiss").addEventListener("click", clearError);

render();
action(loadVessels)();
loadInstances();
setInterval(loadInstances, INSTANCES_EVERY_MS);
if (sessionStorage.getItem(TOKEN_KEY) !== null) action(afterLogin)();
