// keylimit keys dashboard: talks only to the management API; the token lives in `session` only.
"use strict";

(function () {
  const api = document.querySelector('meta[name="keylimit-api"]').content;
  const $ = (id) => document.getElementById(id);
  const LIMITS = [
    ["requests", "Requests"],
    ["prompt_tokens", "Prompt tokens"],
    ["completion_tokens", "Completion tokens"],
  ];
  let session = null; // the session token: in memory only, never in a URL, a cookie or web storage
  let account = null;
  let pendingRevoke = null;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(method, path, body) {
    const headers = { Authorization: "Bearer " + session, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(api + "/" + encodeURIComponent(account) + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message ? data.error.message : response.statusText;
      throw new ApiError(response.status, message || "HTTP " + response.status);
    }
    return data;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function cell(row, text, label) {
    const td = document.createElement("td");
    td.textContent = text;
    if (label) td.dataset.label = label;
    row.appendChild(td);
    return td;
  }

  function when(iso) {
    if (!iso) return "never";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function number(n) {
    return Math.round(n).toLocaleString();
  }

  function renderAccount(data) {
    $("plan").textContent = data.plan + (data.custom_limits ? " (custom limits)" : "");
  }

  function renderUsage(usage, accountData) {
    const body = $("usage").tBodies[0];
    body.replaceChildren();
    $("usage-missing").hidden = usage !== null;
    $("reset").textContent = usage ? "· window resets at " + when(usage.reset_at) : "";
    for (const [field, label] of LIMITS) {
      const row = body.insertRow();
      row.dataset.limit = field;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = label;
      row.appendChild(th);
      const limit = accountData.limits[field];
      if (usage) {
        const used = cell(row, "", "Used");
        const meter = document.createElement("meter");
        meter.min = 0;
        meter.max = Math.max(limit, 1);
        meter.value = Math.min(usage.used[field], meter.max);
        meter.setAttribute("aria-label", label + " used");
        const amount = document.createElement("span");
        amount.className = "used";
        amount.textContent = number(usage.used[field]);
        used.append(meter, " ", amount);
        cell(row, number(usage.remaining[field]), "Remaining");
      } else {
        cell(row, "–", "Used");
        cell(row, "–", "Remaining");
      }
      cell(row, number(limit), "Per minute");
    }
  }

  function renderKeys(list) {
    const body = $("keys").tBodies[0];
    body.replaceChildren();
    $("no-keys").hidden = list.data.length > 0;
    for (const key of list.data) {
      const row = body.insertRow();
      row.dataset.keyId = key.id;
      cell(row, key.name, "Name");
      cell(row, key.id, "ID").className = "mono";
      cell(row, key.display, "Key").className = "mono";
      cell(row, key.type === "api" ? "API" : "SDK", "Type");
      cell(row, key.scopes.join(", "), "Scopes");
      cell(row, when(key.created), "Created");
      cell(row, when(key.last_used_at), "Last used");
      cell(row, key.status, "Status").className = "status " + key.status;
      const actions = cell(row, "", "");
      if (key.status === "active") {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "danger";
        button.textContent = "Revoke";
        button.setAttribute("aria-label", "Revoke " + key.name + " (" + key.id + ")");
        button.addEventListener("click", () => askRevoke(key));
        actions.appendChild(button);
      }
    }
  }

  async function load() {
    const accountData = await call("GET", "");
    const [list, usage] = await Promise.all([
      call("GET", "/apiKeys"),
      call("GET", "/usage").catch((error) => {
        if (error.status === 404 || error.status === 405) return null;
        throw error;
      }),
    ]);
    renderAccount(accountData);
    renderUsage(usage, accountData);
    renderKeys(list);
  }

  function signOut(message) {
    session = null;
    account = null;
    $("workspace").hidden = true;
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("new-key-value").value = "";
    $("new-key").hidden = true;
    $("usage").tBodies[0].replaceChildren();
    $("keys").tBodies[0].replaceChildren();
    $("sign-in-section").hidden = false;
    showError(message || "");
    $("token").focus();
  }

  async function open(accountId) {
    account = accountId;
    try {
      await load();
    } catch (error) {
      if (error.status === 401) {
        signOut("Sign-in failed: " + error.message);
      } else {
        showError(error.message);
        $("workspace").hidden = true;
      }
      return false;
    }
    showError("");
    $("sign-in-section").hidden = true;
    $("workspace").hidden = false;
    $("who").textContent = "Account: " + account;
    $("who").hidden = false;
    $("sign-out").hidden = false;
    $("switch-account").value = account;
    return true;
  }

  async function refresh() {
    try {
      await load();
      showError("");
    } catch (error) {
      if (error.status === 401) signOut("Signed out: " + error.message);
      else showError(error.message);
    }
  }

  function askRevoke(key) {
    pendingRevoke = key;
    $("confirm-key").textContent = key.name + " (" + key.display + ")";
    $("confirm").showModal();
  }

  $("confirm").addEventListener("close", async () => {
    const key = pendingRevoke;
    pendingRevoke = null;
    if ($("confirm").returnValue !== "revoke" || key === null) return;
    try {
      await call("DELETE", "/apiKeys/" + encodeURIComponent(key.id));
    } catch (error) {
      showError(error.message);
    }
    await refresh();
    $("keys-title").focus();
  });

  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    session = $("token").value;
    $("token").value = "";
    if (await open($("account").value.trim())) $("usage-title").focus();
  });

  $("switch").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("new-key").hidden = true;
    $("new-key-value").value = "";
    await open($("switch-account").value.trim());
  });

  $("sign-out").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", refresh);

  $("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const scopes = Array.from(form.querySelectorAll('input[name="scope"]:checked'), (box) => box.value);
    if (scopes.length === 0) {
      showError("Pick at least one scope.");
      return;
    }
    let created;
    try {
      created = await call("POST", "/apiKeys", { name: form.elements.name.value, type: form.elements.type.value, scopes });
    } catch (error) {
      if (error.status === 401) signOut("Signed out: " + error.message);
      else showError(error.message);
      return;
    }
    showError("");
    form.elements.name.value = "";
    $("new-key-value").value = created.key;
    $("copied").textContent = "";
    $("new-key").hidden = false;
    $("new-key").focus();
    await refresh();
  });

  $("copy").addEventListener("click", async () => {
    const field = $("new-key-value");
    try {
      await navigator.clipboard.writeText(field.value);
      $("copied").textContent = "Copied.";
    } catch (_) {
      field.select();
      $("copied").textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  });

  $("done").addEventListener("click", () => {
    $("new-key-value").value = "";
    $("new-key").hidden = true;
    $("key-name").focus();
  });

  for (const id of ["usage-title", "keys-title"]) $(id).tabIndex = -1;
})();
