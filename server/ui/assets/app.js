// The lattice dashboard. Everything shown is read from the receptor's API on
// this origin and kept current from its event stream (/v1/events); the app
// page also follows the log hub (/v1/logs/GUID?follow=true). No framework:
// the state lives in a few Maps and each page is re-rendered from them.
'use strict';

// Absolute URLs from location.origin, never relative ones: a page opened as
// http://user:password@host/ui would make relative URLs carry the
// credentials, which fetch() refuses.
const url = (path) => location.origin + path;

const state = {
  cells: new Map(),   // cell_id -> { cell, goneSince }  (goneSince: ms, or 0)
  desired: new Map(), // process_guid -> desired LRP
  actual: new Map(),  // "guid/index" -> actual LRP
  tasks: new Map(),   // task_guid -> task
  info: null,
  loaded: false,
  sort: { apps: { key: 'name', dir: 1 }, tasks: { key: 'created', dir: -1 } },
};

// ---- API ----------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url(path), init);
  if (!response.ok) {
    let message = `${method} ${path}: HTTP ${response.status}`;
    try {
      const error = await response.json();
      if (error && error.message) message = error.message;
    } catch (_) { /* not JSON: keep the status */ }
    throw new Error(message);
  }
  // Creates may answer with an empty body; nothing here relies on one.
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

const actualKey = (a) => `${a.process_guid}/${a.index}`;

async function loadAll() {
  const [cells, desired, actual, tasks, info] = await Promise.all([
    api('GET', '/v1/cells'), api('GET', '/v1/desired_lrps'),
    api('GET', '/v1/actual_lrps'), api('GET', '/v1/tasks'), api('GET', '/v1/info'),
  ]);
  state.info = info;
  state.desired = new Map(desired.map((d) => [d.process_guid, d]));
  state.actual = new Map(actual.map((a) => [actualKey(a), a]));
  state.tasks = new Map(tasks.map((t) => [t.task_guid, t]));
  applyCells(cells);
  state.loaded = true;
  render();
}

// Cells have no events: they are re-read after each placement change and
// every few seconds, which is how a cell that went away is noticed.
function applyCells(cells) {
  const seen = new Set();
  for (const cell of cells) {
    seen.add(cell.cell_id);
    state.cells.set(cell.cell_id, { cell, goneSince: 0 });
  }
  for (const [id, entry] of state.cells) {
    if (!seen.has(id) && !entry.goneSince) entry.goneSince = Date.now();
  }
}

let cellsTimer = null;
function refreshCellsSoon() {
  if (cellsTimer) return;
  cellsTimer = setTimeout(async () => {
    cellsTimer = null;
    try {
      applyCells(await api('GET', '/v1/cells'));
      render();
    } catch (err) { showNotice(`cannot read cells: ${err.message}`); }
  }, 200);
}

// ---- Event stream -------------------------------------------------------

const handlers = {
  desired_lrp_created: (d) => state.desired.set(d.desired_lrp.process_guid, d.desired_lrp),
  desired_lrp_changed: (d) => state.desired.set(d.desired_lrp_after.process_guid, d.desired_lrp_after),
  desired_lrp_removed: (d) => state.desired.delete(d.desired_lrp.process_guid),
  actual_lrp_created: (d) => { state.actual.set(actualKey(d.actual_lrp), d.actual_lrp); refreshCellsSoon(); },
  actual_lrp_changed: (d) => { state.actual.set(actualKey(d.actual_lrp_after), d.actual_lrp_after); refreshCellsSoon(); },
  actual_lrp_removed: (d) => { state.actual.delete(actualKey(d.actual_lrp)); refreshCellsSoon(); },
  task_created: (d) => state.tasks.set(d.task.task_guid, d.task),
  task_changed: (d) => { state.tasks.set(d.task_after.task_guid, d.task_after); refreshCellsSoon(); },
  task_removed: (d) => { state.tasks.delete(d.task.task_guid); refreshCellsSoon(); },
};

function connectEvents() {
  const events = new EventSource(url('/v1/events'));
  const status = document.getElementById('connection');
  // Every (re)connection re-reads the state: events sent while the stream
  // was down are gone, and the server drops a subscriber that lags.
  events.onopen = () => {
    status.textContent = 'live';
    status.className = 'connection live';
    loadAll().catch((err) => showNotice(`cannot read the cluster: ${err.message}`));
  };
  events.onerror = () => {
    status.textContent = 'event stream lost; reconnecting…';
    status.className = 'connection down';
    // EventSource retries by itself after a lost connection, but gives up
    // after an error answer (e.g. the server restarting behind a proxy).
    if (events.readyState === EventSource.CLOSED) setTimeout(connectEvents, 3000);
  };
  for (const [name, apply] of Object.entries(handlers)) {
    events.addEventListener(name, (event) => {
      try {
        apply(JSON.parse(event.data));
      } catch (err) {
        console.error('unreadable event', name, err);
        return;
      }
      renderSoon();
    });
  }
}

// ---- Rendering helpers --------------------------------------------------

// Builds an element; text is always set as text (names and log lines are
// user data and never parsed as HTML).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Replaces a container's content, keeping keyboard focus on the element
// with the same data-key (a re-render must not throw the user out).
function replace(container, ...children) {
  const focused = document.activeElement && container.contains(document.activeElement)
    ? document.activeElement.dataset.key : null;
  container.replaceChildren(...children.flat());
  if (focused) {
    const again = container.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

let renderTimer = null;
function renderSoon() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => { renderTimer = null; render(); }, 50);
}

function showNotice(message, ok) {
  const notice = document.getElementById('notice');
  notice.textContent = message;
  notice.className = ok ? 'notice ok' : 'notice';
  notice.hidden = false;
}
function clearNotice() { document.getElementById('notice').hidden = true; }
// Shown once the page it leads to is open (a page change clears notices).
let noticeAfterNavigation = null;

const mb = (n) => (n >= 1024 ? `${(n / 1024).toFixed(1)} GB` : `${n} MB`);
const nanosToMs = (n) => Math.floor(n / 1e6);
function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

function instancesOf(guid) {
  return [...state.actual.values()].filter((a) => a.process_guid === guid)
    .sort((a, b) => a.index - b.index);
}

function routeUrls(desired) {
  const routes = (desired.routes && desired.routes['cf-router']) || [];
  const address = state.info && state.info.router_address;
  const port = address ? address.slice(address.lastIndexOf(':') + 1) : '';
  const suffix = port && port !== '80' ? `:${port}` : '';
  return routes.flatMap((r) => r.hostnames).map((host) => `http://${host}${suffix}`);
}

function stateLabel(a) {
  if (a.state === 'UNCLAIMED' && a.placement_error) return 'UNPLACED';
  if (a.state === 'CLAIMED') return 'STARTING';
  return a.state;
}

function sortableHeader(table, key, label, numeric) {
  const sort = state.sort[table];
  const dir = sort.key === key ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none';
  return h('th', { scope: 'col', 'aria-sort': dir, class: numeric ? 'num' : null },
    h('button', {
      type: 'button', 'data-key': `sort-${table}-${key}`, 'data-sort': key,
      onclick: () => {
        sort.dir = sort.key === key ? -sort.dir : 1;
        sort.key = key;
        render();
      },
    }, label));
}

function sortRows(rows, sort) {
  return rows.sort((a, b) => {
    const x = a[sort.key]; const y = b[sort.key];
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return c * sort.dir;
  });
}

// ---- Pages --------------------------------------------------------------

function dot(a) {
  const label = `${a.process_guid} #${a.index}: ${stateLabel(a)}`;
  return h('a', {
    class: `dot s-${a.state}`, href: `#/apps/${encodeURIComponent(a.process_guid)}`,
    title: label, 'aria-label': label, 'data-key': `dot-${actualKey(a)}`,
    'data-app': a.process_guid, 'data-index': a.index, 'data-state': a.state,
  });
}

// Shows at most this many dots per cell; the rest are counted.
const MAX_DOTS = 300;
function dots(instances) {
  const shown = instances.slice(0, MAX_DOTS).map(dot);
  const more = instances.length > MAX_DOTS ? h('span', { class: 'muted' }, ` +${instances.length - MAX_DOTS} more`) : null;
  return h('div', { class: 'dots' }, shown, more);
}

function usageRow(label, used, total, format) {
  return [
    h('span', {}, label),
    h('meter', { min: 0, max: Math.max(total, 1), value: Math.min(used, total), 'aria-label': `${label} used` }),
    h('span', { class: used > total ? 'bad' : null }, `${format(used)} / ${format(total)}`),
  ];
}

function renderCluster(main) {
  const actual = [...state.actual.values()].sort((a, b) =>
    a.process_guid.localeCompare(b.process_guid) || a.index - b.index);
  const byCell = new Map();
  const unplaced = [];
  for (const a of actual) {
    if (!a.cell_id) { unplaced.push(a); continue; }
    if (!byCell.has(a.cell_id)) byCell.set(a.cell_id, []);
    byCell.get(a.cell_id).push(a);
  }
  // An instance on a cell not read yet: read the cells again, which tells
  // a cell that just joined from one that went away.
  for (const id of byCell.keys()) {
    if (!state.cells.has(id)) {
      state.cells.set(id, { cell: null, goneSince: 0 });
      refreshCellsSoon();
    }
  }
  const count = (s) => actual.filter((a) => a.state === s).length;
  const desiredTotal = [...state.desired.values()].reduce((n, d) => n + d.instances, 0);
  const live = [...state.cells.values()].filter((c) => !c.goneSince).length;
  const boxes = [...state.cells.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, entry]) => {
    const instances = byCell.get(id) || [];
    if (entry.goneSince && instances.length === 0 && Date.now() - entry.goneSince > 10 * 60 * 1000) return null;
    const cell = entry.cell;
    return h('section', { class: entry.goneSince ? 'cell gone' : 'cell', 'data-cell': id, 'aria-label': `cell ${id}` },
      h('h2', {}, id, cell && cell.zone ? h('span', { class: 'zone' }, ` · ${cell.zone}`) : null),
      entry.goneSince ? h('p', { class: 'bad' }, `cell went away at ${clock(entry.goneSince)}; its work is being placed elsewhere`) : null,
      cell ? h('div', { class: 'usage' },
        usageRow('memory', cell.allocated.memory_mb, cell.capacity.memory_mb, mb),
        usageRow('disk', cell.allocated.disk_mb, cell.capacity.disk_mb, mb),
        usageRow('containers', cell.allocated.containers, cell.capacity.containers, String)) : null,
      instances.length ? dots(instances) : h('p', { class: 'muted' }, 'no instances'));
  });
  const unplacedBox = unplaced.length ? h('section', { class: 'cell unplaced', 'data-cell': '', 'aria-label': 'instances not on a cell' },
    h('h2', {}, 'not placed'), dots(unplaced),
    [...new Set(unplaced.map((a) => a.placement_error).filter(Boolean))].map((e) =>
      h('p', { class: 'placement-error' }, `placement failed: ${e}`))) : null;
  replace(main,
    h('h1', {}, 'Cluster'),
    h('p', { class: 'summary', id: 'cluster-summary' },
      `${live} cell${live === 1 ? '' : 's'} · ${count('RUNNING')} of ${desiredTotal} instances running`,
      count('CRASHED') ? h('span', { class: 'bad' }, ` · ${count('CRASHED')} crashed`) : null,
      unplaced.length ? h('span', { class: 'bad' }, ` · ${unplaced.length} not placed`) : null),
    h('ul', { class: 'legend', 'aria-label': 'Legend' },
      [['RUNNING', 'running'], ['CLAIMED', 'starting'], ['CRASHED', 'crashed'], ['UNCLAIMED', 'waiting for a cell']]
        .map(([s, text]) => h('li', {}, h('span', { class: `dot s-${s}`, 'aria-hidden': 'true' }), text))),
    state.cells.size || unplaced.length
      ? h('div', { class: 'cells' }, boxes, unplacedBox)
      : h('p', { class: 'muted' }, 'No cells have joined this cluster yet.'));
}

function appRow(d) {
  const instances = instancesOf(d.process_guid);
  return {
    name: d.process_guid, domain: d.domain, desired: d.instances,
    running: instances.filter((a) => a.state === 'RUNNING').length,
    crashes: instances.reduce((n, a) => n + a.crash_count, 0),
    crashed: instances.filter((a) => a.state === 'CRASHED').length,
    unplaced: instances.filter((a) => a.state === 'UNCLAIMED' && a.placement_error).length,
    memory: d.memory_mb, disk: d.disk_mb, urls: routeUrls(d),
  };
}

function renderApps(main) {
  const rows = sortRows([...state.desired.values()].map(appRow), state.sort.apps);
  const table = h('table', { id: 'apps-table' },
    h('caption', { class: 'muted', style: null }, 'Select a column heading to sort.'),
    h('thead', {}, h('tr', {},
      sortableHeader('apps', 'name', 'App'), sortableHeader('apps', 'domain', 'Domain'),
      sortableHeader('apps', 'running', 'Instances', true), h('th', { scope: 'col' }, 'Routes'),
      sortableHeader('apps', 'memory', 'Memory', true), sortableHeader('apps', 'disk', 'Disk', true),
      sortableHeader('apps', 'crashes', 'Crashes', true))),
    h('tbody', {}, rows.map((r) => h('tr', { 'data-app': r.name },
      h('th', { scope: 'row' }, h('a', { href: `#/apps/${encodeURIComponent(r.name)}`, 'data-key': `app-${r.name}` }, r.name)),
      h('td', {}, r.domain),
      h('td', { class: 'num', 'data-col': 'instances' },
        h('span', { class: r.running < r.desired ? 'bad' : null }, `${r.running}/${r.desired}`),
        r.unplaced ? h('span', { class: 'bad' }, ` (${r.unplaced} not placed)`) : null),
      h('td', {}, r.urls.length ? h('ul', { class: 'routes' }, r.urls.map((u) => h('li', {}, h('a', { href: u }, u.replace('http://', ''))))) : h('span', { class: 'muted' }, 'none')),
      h('td', { class: 'num' }, mb(r.memory)),
      h('td', { class: 'num' }, r.disk ? mb(r.disk) : '–'),
      h('td', { class: 'num', 'data-col': 'crashes' },
        h('span', { class: r.crashed ? 'bad' : null }, String(r.crashes)),
        r.crashed ? h('span', { class: 'bad' }, ` (${r.crashed} down)`) : null)))));
  replace(main, h('h1', {}, 'Apps'),
    rows.length ? h('div', { class: 'scroll' }, table)
      : h('p', { class: 'muted' }, 'No apps. Create one with ', h('code', {}, 'ltc create NAME IMAGE'), '.'));
}

// The app page keeps its controls and log panel across renders (focus,
// typed text, scroll position); only the parts fed by events are redrawn.
let appView = null;

function buildAppView(main, guid) {
  closeLogs();
  const view = { guid, logs: [], stream: null, logGuid: null };
  view.title = h('h1', {}, guid);
  view.summary = h('p', { class: 'summary', id: 'app-summary' });
  view.routes = h('div', {});
  view.scaleInput = h('input', { type: 'number', id: 'scale-input', min: 0, required: true, 'aria-label': 'Desired instances' });
  const scaleForm = h('form', {
    id: 'scale-form', onsubmit: async (event) => {
      event.preventDefault();
      const n = Number(view.scaleInput.value);
      if (!Number.isInteger(n) || n < 0) { showNotice('instances must be a whole number, 0 or more'); return; }
      try {
        await api('PUT', `/v1/desired_lrps/${encodeURIComponent(guid)}`, { instances: n });
        showNotice(`${guid} scaled to ${n} instance${n === 1 ? '' : 's'}`, true);
      } catch (err) { showNotice(`cannot scale ${guid}: ${err.message}`); }
    },
  }, h('label', { for: 'scale-input' }, 'Instances'), view.scaleInput, h('button', { type: 'submit', id: 'scale-button' }, 'Scale'));
  const remove = h('button', {
    type: 'button', id: 'remove-button', class: 'danger',
    onclick: async () => {
      if (!window.confirm(`Remove ${guid} and stop all its instances?`)) return;
      try {
        await api('DELETE', `/v1/desired_lrps/${encodeURIComponent(guid)}`);
        noticeAfterNavigation = `${guid} removed`;
        location.hash = '#/apps';
      } catch (err) { showNotice(`cannot remove ${guid}: ${err.message}`); }
    },
  }, 'Remove…');
  view.instances = h('div', { class: 'scroll' });
  view.logBox = h('pre', { class: 'log', id: 'log', role: 'log', tabindex: 0, 'aria-label': 'Log lines, newest last' });
  view.sources = {};
  const sourceBoxes = ['APP', 'CELL', 'RTR', 'STG', 'HEALTH'].map((s) => {
    view.sources[s] = h('input', { type: 'checkbox', checked: true, id: `source-${s}`, onchange: () => renderLogs(view) });
    return h('label', {}, view.sources[s], ` ${s}`);
  });
  view.filter = h('input', { type: 'search', id: 'log-filter', placeholder: 'text in the line', oninput: () => renderLogs(view) });
  replace(main,
    h('p', {}, h('a', { href: '#/apps' }, '← Apps')),
    view.title, view.summary, view.routes,
    h('div', { class: 'controls' }, scaleForm, remove),
    h('h2', {}, 'Instances'), view.instances,
    h('h2', {}, 'Logs'),
    h('div', { class: 'logs-filter' },
      h('fieldset', {}, h('legend', {}, 'Sources'), sourceBoxes),
      h('label', {}, 'Filter ', view.filter)),
    view.logBox);
  appView = view;
  return view;
}

function renderApp(main, guid) {
  const view = appView && appView.guid === guid && main.contains(appView.title) ? appView : buildAppView(main, guid);
  const desired = state.desired.get(guid);
  if (!desired) {
    view.summary.replaceChildren(h('span', { class: 'bad' }, state.loaded ? 'This app does not exist (or was removed).' : 'loading…'));
    replace(view.instances);
    return;
  }
  if (view.logGuid !== (desired.log_guid || guid)) followLogs(view, desired.log_guid || guid);
  const instances = instancesOf(guid);
  const running = instances.filter((a) => a.state === 'RUNNING').length;
  // Follows the desired count unless the user is typing a new one.
  if (document.activeElement !== view.scaleInput) view.scaleInput.value = desired.instances;
  view.summary.replaceChildren(
    h('span', { id: 'running-count' }, `${running}/${desired.instances}`), ' instances running',
    ` · ${mb(desired.memory_mb)} memory each · domain ${desired.domain}`);
  const urls = routeUrls(desired);
  replace(view.routes, urls.length ? h('ul', { class: 'routes' }, urls.map((u) => h('li', {}, h('a', { href: u }, u)))) : null);
  const now = Date.now();
  replace(view.instances, instances.length ? h('table', { id: 'instances-table' },
    h('thead', {}, h('tr', {}, ['#', 'State', 'Cell', 'Address', 'Uptime', 'Crashes', 'Last crash / placement error']
      .map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, instances.map((a) => h('tr', { 'data-index': a.index, 'data-state': a.state },
      h('td', { class: 'num' }, a.index),
      h('td', {}, h('span', { class: `state s-${a.state}` }, stateLabel(a))),
      h('td', {}, a.cell_id ? [a.cell_id, state.cells.get(a.cell_id)?.goneSince ? h('span', { class: 'bad' }, ' (gone)') : null] : '–'),
      h('td', {}, a.address && a.ports && a.ports.length ? a.ports.map((p) => `${a.address}:${p.host_port}`).join(', ') : '–'),
      h('td', {}, a.state === 'RUNNING' ? duration(now - nanosToMs(a.since)) : '–'),
      h('td', { class: 'num', 'data-col': 'crashes' }, a.crash_count),
      h('td', { class: 'reason', 'data-col': 'reason' }, a.placement_error
        ? h('span', { class: 'bad' }, `placement failed: ${a.placement_error}`) : (a.crash_reason || '–'))))))
    : h('p', { class: 'muted' }, 'No instances.'));
}

// ---- Logs ---------------------------------------------------------------

// Lines kept per app page; older ones are dropped so a chatty app cannot
// grow the page without bound.
const MAX_LOG_LINES = 2000;

function closeLogs() {
  if (appView && appView.stream) appView.stream.close();
  if (appView) appView.stream = null;
}

function followLogs(view, logGuid) {
  if (view.stream) view.stream.close();
  view.logGuid = logGuid;
  view.logs = [];
  const open = (recent) => {
    const stream = new EventSource(url(`/v1/logs/${encodeURIComponent(logGuid)}?follow=true&recent=${recent}`));
    stream.addEventListener('log', (event) => {
      let line;
      try { line = JSON.parse(event.data); } catch (_) { return; }
      view.logs.push(line);
      if (view.logs.length > MAX_LOG_LINES) view.logs.splice(0, view.logs.length - MAX_LOG_LINES);
      appendLog(view, line);
    });
    // Reconnect ourselves, without the recent lines already shown.
    stream.onerror = () => {
      stream.close();
      if (view.stream !== stream) return;
      setTimeout(() => { if (view.stream === stream) { view.stream = open(false); } }, 1000);
    };
    return stream;
  };
  view.stream = open(true);
  renderLogs(view);
}

function logMatches(view, line) {
  const source = view.sources[line.source_type];
  if (source && !source.checked) return false;
  const text = view.filter.value.trim().toLowerCase();
  return !text || line.message.toLowerCase().includes(text);
}

function logLine(line) {
  const tag = line.source_instance ? `${line.source_type}/${line.source_instance}` : line.source_type;
  return h('div', { class: line.message_type === 'ERR' ? 'line err' : 'line', 'data-source': line.source_type },
    h('span', { class: 'time' }, clock(nanosToMs(line.timestamp)), ' '),
    h('span', { class: 'src' }, `[${tag}]`), ' ', line.message);
}

function appendLog(view, line) {
  if (!logMatches(view, line)) return;
  const box = view.logBox;
  const placeholder = box.querySelector('.empty');
  if (placeholder) placeholder.remove();
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 20;
  box.append(logLine(line));
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderLogs(view) {
  const lines = view.logs.filter((l) => logMatches(view, l)).map(logLine);
  const empty = view.logs.length ? 'no line matches the filter' : 'no lines yet';
  view.logBox.replaceChildren(...(lines.length ? lines : [h('span', { class: 'empty' }, empty)]));
  view.logBox.scrollTop = view.logBox.scrollHeight;
}

// ---- Tasks --------------------------------------------------------------

function taskState(t) {
  if (t.state === 'COMPLETED' || t.state === 'RESOLVING') return `${t.state}-${t.failed ? 'failed' : 'ok'}`;
  return t.state;
}

function renderTasks(main) {
  const rows = sortRows([...state.tasks.values()].map((t) => ({
    task: t, guid: t.task_guid, domain: t.domain, state: t.state, created: t.created_at, cell: t.cell_id,
  })), state.sort.tasks);
  const act = (label, title, cls, run) => h('button', { type: 'button', class: `action ${cls}`, title, 'data-key': title, onclick: run }, label);
  const table = h('table', { id: 'tasks-table' },
    h('thead', {}, h('tr', {},
      sortableHeader('tasks', 'guid', 'Task'), sortableHeader('tasks', 'domain', 'Domain'),
      sortableHeader('tasks', 'state', 'State'), sortableHeader('tasks', 'cell', 'Cell'),
      h('th', { scope: 'col' }, 'Result / failure reason'),
      sortableHeader('tasks', 'created', 'Created'), h('th', { scope: 'col' }, 'Actions'))),
    h('tbody', {}, rows.map(({ task: t }) => h('tr', { 'data-task': t.task_guid, 'data-state': t.state },
      h('th', { scope: 'row' }, t.task_guid),
      h('td', {}, t.domain),
      h('td', {}, h('span', { class: `state s-${taskState(t)}` }, t.state, t.state === 'COMPLETED' ? (t.failed ? ' (failed)' : ' (ok)') : '')),
      h('td', {}, t.cell_id || '–'),
      h('td', { class: 'reason', 'data-col': 'reason' }, t.failed ? h('span', { class: 'bad' }, t.failure_reason) : (t.result || '–')),
      h('td', {}, clock(nanosToMs(t.created_at))),
      h('td', {}, ['PENDING', 'CLAIMED', 'RUNNING'].includes(t.state)
        ? act('Cancel', `cancel ${t.task_guid}`, 'danger', async () => {
          try { await api('POST', `/v1/tasks/${encodeURIComponent(t.task_guid)}/cancel`); showNotice(`task ${t.task_guid} cancelled`, true); } catch (err) { showNotice(`cannot cancel ${t.task_guid}: ${err.message}`); }
        })
        : t.state === 'COMPLETED'
          ? act('Delete…', `delete ${t.task_guid}`, '', async () => {
            if (!window.confirm(`Delete task ${t.task_guid} and its result?`)) return;
            try { await api('DELETE', `/v1/tasks/${encodeURIComponent(t.task_guid)}`); showNotice(`task ${t.task_guid} deleted`, true); } catch (err) { showNotice(`cannot delete ${t.task_guid}: ${err.message}`); }
          })
          : '–')))));
  replace(main, h('h1', {}, 'Tasks'),
    rows.length ? h('div', { class: 'scroll' }, table) : h('p', { class: 'muted' }, 'No tasks.'));
}

// ---- Router -------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  if (parts[0] === 'apps' && parts[1]) return { page: 'app', guid: decodeURIComponent(parts[1]) };
  if (['apps', 'tasks'].includes(parts[0])) return { page: parts[0] };
  return { page: 'cluster' };
}

let lastPage = null;
function render() {
  const main = document.getElementById('main');
  const { page, guid } = route();
  const nav = page === 'app' ? 'apps' : page;
  for (const link of document.querySelectorAll('header nav a')) {
    if (link.dataset.page === nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const pageKey = `${page}/${guid || ''}`;
  if (page !== 'app') { closeLogs(); appView = null; }
  if (page === 'cluster') renderCluster(main);
  else if (page === 'apps') renderApps(main);
  else if (page === 'tasks') renderTasks(main);
  else renderApp(main, guid);
  if (lastPage !== pageKey) {
    document.title = `lattice · ${page === 'app' ? guid : page}`;
    if (lastPage !== null) main.focus();
    lastPage = pageKey;
  }
}

window.addEventListener('hashchange', () => {
  clearNotice();
  if (noticeAfterNavigation) showNotice(noticeAfterNavigation, true);
  noticeAfterNavigation = null;
  render();
});
document.addEventListener('DOMContentLoaded', () => {
  // The skip link must not change the hash: the hash is the page.
  document.querySelector('.skip').addEventListener('click', (event) => {
    event.preventDefault();
    document.getElementById('main').focus();
  });
  render();
  connectEvents();
  // Cells expire without an event; uptimes tick.
  setInterval(refreshCellsSoon, 3000);
  setInterval(() => { if (route().page === 'app') renderSoon(); }, 1000);
});
