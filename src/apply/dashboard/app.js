// microscaler dashboard: plain JS, no framework, no build step.
//
// Everything shown comes from the controller's /v1 routes with the token the user typed (kept in
// this tab's sessionStorage). The page follows /v1/watch (newline-delimited JSON, read with
// fetch() streaming): no polling. A group's chart starts from /v1/history and grows with the
// group's changes on the stream. Every URL is relative, so the page also works behind a proxy
// that serves the controller under a path.
'use strict';

const TOKEN_KEY = 'microscaler-token';
const HOURS = [1, 3, 6];
const MAX_POINTS = 2000;

const S = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  who: null,
  store: emptyStore(),
  synced: false,
  conn: '',
  abort: null,
  retry: 1000,
  problems: null,
  lbs: [], // LoadBalancer objects (GET v1/lbs), read with the problems
  problemsAt: 0,
  hist: null, // { key, hours, items, error }
  hours: 1,
  skew: 0, // the controller's clock minus this computer's (from the history's `now`)
  filter: '',
  openSteps: new Set(), // the steps whose cause is shown
};

function emptyStore() {
  return { groups: new Map(), instances: new Map(), policies: new Map(), lcs: new Map() };
}

// ---- DOM helpers (text only: data never becomes markup) ----------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function s(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

const $ = (id) => document.getElementById(id);

// ---- Time, in the browser's zone --------------------------------------------------------

const fmtDateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'short', timeStyle: 'medium' });
const fmtClock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fmtClockSec = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, fmtDateTime.format(d));
}

function age(iso) {
  if (!iso) return '';
  let sec = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  const parts = [];
  for (const [unit, n] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (sec >= n || (unit === 's' && parts.length === 0)) {
      parts.push(Math.floor(sec / n) + unit);
      sec %= n;
    }
    if (parts.length === 2) break;
  }
  return h('time', { datetime: new Date(iso).toISOString(), title: fmtDateTime.format(new Date(iso)) }, parts.join(' '));
}

// ---- The API ----------------------------------------------------------------------------

function authHeaders() {
  return S.token ? { Authorization: 'Bearer ' + S.token } : {};
}

async function api(path) {
  const res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  if (res.status === 401) {
    const body = await res.json().catch(() => ({}));
    throw Object.assign(new Error(body.error || body.message || 'unauthorized'), { status: 401 });
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw Object.assign(new Error(body.error || body.message || res.statusText), { status: res.status });
  }
  return res.json();
}

const nsOf = (obj) => (obj.metadata && obj.metadata.namespace) || 'default';
const keyOf = (obj) => nsOf(obj) + '/' + obj.metadata.name;

// ---- Login ------------------------------------------------------------------------------

async function start() {
  $('tz').textContent = 'Times in ' + (Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time');
  $('login').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => logout(''));
  window.addEventListener('hashchange', () => { S.focusMain = true; render(); });
  setInterval(() => { if (S.synced) render(); }, 15000); // ages and the chart's "now" move on
  try {
    S.who = await api('v1/whoami');
    loggedIn();
  } catch (e) {
    showLogin(e.status === 401 ? (S.token ? 'This token is not known to the controller.' : '') : 'The controller does not answer: ' + e.message);
  }
}

function showLogin(message) {
  $('login').hidden = false;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('view').replaceChildren();
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  S.token = $('token').value.trim();
  try {
    S.who = await api('v1/whoami');
    sessionStorage.setItem(TOKEN_KEY, S.token);
    $('token').value = '';
    loggedIn();
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'This token is not known to the controller.' : e.message;
  }
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  S.token = '';
  if (S.abort) S.abort.abort();
  S.abort = null;
  S.store = emptyStore();
  S.synced = false;
  S.hist = null;
  S.problems = null;
  setConn('');
  showLogin(message);
}

function loggedIn() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = !S.who.tokenRequired;
  S.focusMain = true;
  follow();
  render();
}

// ---- The watch stream -------------------------------------------------------------------

function setConn(state, text) {
  S.conn = state;
  const el = $('conn');
  el.className = 'conn ' + state;
  el.textContent = text || '';
}

async function follow() {
  if (S.abort) S.abort.abort();
  const abort = new AbortController();
  S.abort = abort;
  const q = '?reloads=true' + (S.who.allNamespaces ? '' : '&namespace=' + encodeURIComponent(S.who.namespaces.join(',')));
  setConn('', 'connecting…');
  try {
    const res = await fetch('v1/watch' + q, { headers: authHeaders(), signal: abort.signal, cache: 'no-store' });
    if (res.status === 401) return logout('The token is no longer accepted.');
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let fresh = emptyStore();
    let synced = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === 'SYNCED') {
          synced = true;
          S.store = fresh;
          S.synced = true;
          S.retry = 1000;
          setConn('live', 'live');
          // After a break: what the stream does not carry is read again.
          refreshProblemsSoon();
          S.hist = null;
          changed(null);
        } else if (ev.type === 'RELOADED') {
          // The manifests were loaded again: a broken file changes no object, only the problems.
          if (synced) refreshProblemsSoon();
        } else if (ev.type === 'ERROR') {
          throw new Error(ev.message);
        } else {
          const key = applyEvent(synced ? S.store : fresh, ev);
          if (synced) changed(key);
        }
      }
    }
    throw new Error('the stream ended');
  } catch (e) {
    if (abort.signal.aborted) return;
    const wait = S.retry;
    S.retry = Math.min(S.retry * 2, 30000);
    setConn('down', 'disconnected (' + e.message + '); again in ' + Math.round(wait / 1000) + ' s');
    setTimeout(() => { if (S.abort === abort) follow(); }, wait);
  }
}

// Applies one ADDED/MODIFIED/DELETED event; returns the group key it concerns.
function applyEvent(store, ev) {
  const o = ev.object;
  let map, key, group;
  switch (ev.kind) {
    case 'AutoScalingGroup': map = store.groups; key = keyOf(o); group = key; break;
    case 'Instance': map = store.instances; key = o.namespace + '/' + o.name; group = o.namespace + '/' + o.group; break;
    case 'ScalingPolicy': map = store.policies; key = keyOf(o); group = nsOf(o) + '/' + o.spec.autoScalingGroup; break;
    case 'LaunchConfiguration': map = store.lcs; key = keyOf(o); break;
    default: return null;
  }
  if (ev.type === 'DELETED') map.delete(key);
  else map.set(key, o);
  return group || null;
}

// A change arrived: the open group's chart grows, the view is redrawn.
function changed(groupKey) {
  if (S.hist && groupKey === S.hist.key) {
    const g = S.store.groups.get(groupKey);
    // In the controller's time (the history's samples are), not this computer's.
    if (g && g.status) addSample(S.hist.items, sampleOf(g.status, new Date(Date.now() + S.skew).toISOString()));
  }
  render();
}

function sampleOf(st, time) {
  const m = st.metrics || {};
  return {
    time, desired: st.desiredCapacity, current: st.current, ready: st.ready,
    cpuPercent: m.cpuPercent, memoryPercent: m.memoryPercent, pushed: m.pushed || {},
    setBy: st.desiredCapacitySetBy,
    decision: st.lastDecision && st.lastDecision.desired === st.desiredCapacity ? st.lastDecision.message : undefined,
  };
}

function addSample(items, smp) {
  const last = items[items.length - 1];
  // As the controller records it: a capacity keeps the cause it was set with.
  if (last && last.desired === smp.desired) { smp.decision = last.decision; smp.setBy = last.setBy; }
  const same = (a, b) => a.desired === b.desired && a.current === b.current && a.ready === b.ready &&
    a.cpuPercent === b.cpuPercent && a.memoryPercent === b.memoryPercent &&
    JSON.stringify(a.pushed || {}) === JSON.stringify(b.pushed || {});
  if (last && same(last, smp)) return;
  // As the controller keeps them: within 2 s of the one before, the latest values replace it.
  const gap = last ? new Date(smp.time).getTime() - new Date(last.time).getTime() : Infinity;
  if (gap >= 0 && gap < 2000) items[items.length - 1] = { ...smp, time: last.time };
  else items.push(smp);
  if (items.length > MAX_POINTS) items.splice(0, items.length - MAX_POINTS);
}

let problemsTimer = null;
function refreshProblemsSoon() {
  if (problemsTimer) return;
  problemsTimer = setTimeout(async () => {
    problemsTimer = null;
    try { S.problems = await api('v1/problems'); } catch (e) { S.problems = { error: e.message }; }
    // Load balancers are not on the watch stream: read with the problems, at each reload of the
    // manifests (a controller without them answers 404: none).
    try { S.lbs = (await api('v1/lbs')).items || []; } catch (e) { S.lbs = []; }
    render();
  }, 200);
}

async function loadHistory(key, hours) {
  S.hist = { key, hours, items: [], loading: true };
  try {
    const [ns, name] = key.split('/');
    const body = await api('v1/history/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name) + '?hours=' + hours);
    if (!S.hist || S.hist.key !== key) return;
    S.skew = new Date(body.now).getTime() - Date.now();
    S.hist.items = body.items;
    // What the stream showed meanwhile comes after the history.
    const g = S.store.groups.get(key);
    if (g && g.status) addSample(S.hist.items, sampleOf(g.status, body.now));
  } catch (e) {
    if (S.hist && S.hist.key === key) S.hist.error = e.message;
  }
  if (S.hist && S.hist.key === key) S.hist.loading = false;
  render();
}

// ---- Rendering --------------------------------------------------------------------------

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; draw(); });
}

function draw() {
  if (!S.who) return;
  const route = parseRoute();
  // Keep the keyboard's place: the element with the same data-k gets the focus back.
  const active = document.activeElement;
  const focusKey = active && active.dataset ? active.dataset.k : null;
  const sel = active && active.tagName === 'INPUT' ? [active.selectionStart, active.selectionEnd] : null;
  for (const a of document.querySelectorAll('nav a')) {
    const here = (route.view === 'problems') === (a.getAttribute('href') === '#/problems');
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  let view;
  if (!S.synced) view = h('p', { class: 'muted' }, 'Loading…');
  else if (route.view === 'group') view = groupView(route.key);
  else if (route.view === 'problems') view = problemsView();
  else view = groupsView();
  $('view').replaceChildren(view);
  const count = problemCount();
  $('problem-count').textContent = count ? '(' + count + ')' : '';
  if (focusKey) {
    const el = document.querySelector('[data-k="' + CSS.escape(focusKey) + '"]');
    if (el && el !== document.activeElement) {
      el.focus();
      if (sel && el.setSelectionRange) el.setSelectionRange(sel[0], sel[1]);
    }
  }
  if (S.focusMain) {
    S.focusMain = false;
    const h1 = document.querySelector('#view h1');
    if (h1) h1.focus();
  }
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'g' && parts.length >= 3) return { view: 'group', key: parts[1] + '/' + parts[2] };
  if (parts[0] === 'problems') return { view: 'problems' };
  return { view: 'groups' };
}

function groupHref(key) {
  const [ns, name] = key.split('/');
  return '#/g/' + encodeURIComponent(ns) + '/' + encodeURIComponent(name);
}

function cond(st, type) {
  return ((st && st.conditions) || []).find((c) => c.type === type);
}

function stateBadge(g) {
  const st = g.status;
  if (g.spec.state === 'Stopped') return h('span', { class: 'badge info' }, 'Stopped');
  if (!st) return h('span', { class: 'badge info' }, 'Pending');
  for (const [type, cls] of [['Invalid', 'bad'], ['Degraded', 'bad'], ['DeletionHeld', 'warn']]) {
    const c = cond(st, type);
    if (c && c.status === 'True') return h('span', { class: 'badge ' + cls, title: c.message }, type);
  }
  const prog = cond(st, 'Progressing');
  if (prog && prog.status === 'True') return h('span', { class: 'badge warn', title: prog.message }, 'Progressing');
  const ready = cond(st, 'Ready');
  if (ready) return h('span', { class: 'badge ' + (ready.status === 'True' ? 'ok' : 'warn'), title: ready.message }, ready.status === 'True' ? 'Ready' : 'Not ready');
  return h('span', { class: 'badge info' }, 'Pending');
}

function conditionBadges(st) {
  return ((st && st.conditions) || []).map((c) => {
    const good = (c.type === 'Ready') === (c.status === 'True');
    const cls = good ? 'ok' : c.type === 'Progressing' ? 'warn' : 'bad';
    return h('span', { class: 'badge ' + cls, title: c.reason + ': ' + c.message }, c.type + '=' + c.status);
  });
}

function policiesOf(key) {
  const [ns, name] = key.split('/');
  return [...S.store.policies.values()].filter((p) => nsOf(p) === ns && p.spec.autoScalingGroup === name);
}

function metricName(p) {
  return p.spec.pushedMetric || p.spec.metric || '';
}

function policyText(p) {
  const sp = p.spec;
  const type = sp.type || 'Step';
  const metric = metricName(p);
  const unit = sp.pushedMetric ? '' : '%';
  if (type === 'TargetTracking') return `${p.metadata.name}: ${metric} target ${sp.targetValue}${unit}`;
  if (type === 'Scheduled') return `${p.metadata.name}: ${(sp.schedule || []).length} scheduled action(s)`;
  return `${p.metadata.name}: ${metric} ${sp.lowerThreshold ?? '–'}–${sp.upperThreshold ?? '–'}${unit}`;
}

// The addresses of the group's load balancers (`LoadBalancer` objects that name it, or that its
// spec names), as `ms get asgs -o wide` shows them; the names alone while none is known.
function lbLinks(g) {
  const ns = nsOf(g);
  const name = g.metadata.name;
  const names = new Set(g.spec.loadBalancers || []);
  const out = [];
  for (const lb of S.lbs) {
    const st = lb.status || {};
    if (nsOf(lb) !== ns || !(names.has(lb.metadata.name) || (st.groups || []).includes(name))) continue;
    names.delete(lb.metadata.name);
    const sp = lb.spec || {};
    const host = sp.listen || '127.0.0.1';
    const url = st.url || `${sp.mode || 'http'}://${host.includes(':') ? '[' + host + ']' : host}:${sp.port}`;
    out.push(/^https?:\/\//.test(url) ? h('a', { href: url, rel: 'noreferrer', 'data-k': 'lb:' + url }, url) : h('span', { class: 'mono' }, url), ' ');
  }
  for (const n of names) out.push(h('span', { class: 'badge info' }, n));
  return out;
}

// The capacity the manifest asks for, when the group has not taken it yet: a `ms scale` shows
// at once, before the reconciler's pass has looked at it (that pass publishes the new capacity
// before it launches anything).
function asked(g, policies) {
  const sp = g.spec;
  const st = g.status;
  if (!st || sp.state === 'Stopped' || policies.length) return null;
  const want = Math.min(Math.max(sp.desiredCapacity ?? sp.minSize, sp.minSize), Math.max(sp.maxSize, sp.minSize));
  if (want === st.desiredCapacity) return null;
  return h('span', { class: 'pending', 'data-manifest': want, title: `the manifest asks for ${want}; converging` }, ' → ' + want);
}

// Each group's policies, found once per redraw (not once per group).
function policiesByGroup() {
  const out = new Map();
  for (const p of S.store.policies.values()) {
    const key = nsOf(p) + '/' + p.spec.autoScalingGroup;
    if (!out.has(key)) out.set(key, []);
    out.get(key).push(p);
  }
  return out;
}

// A group's row, built again only when the group, its policies or the load balancers changed
// (the stream replaces an object on each change): a redraw of 1,000 groups rebuilds the few
// that changed.
const rowCache = new Map();
function groupRow(key, g, pols) {
  const c = rowCache.get(key);
  if (c && c.g === g && c.lbs === S.lbs && c.pols.length === pols.length && c.pols.every((p, i) => p === pols[i])) return c.row;
  const st = g.status || {};
  const sp = g.spec;
  const row = h('tr', { 'data-group': key },
    h('td', { class: 'hide-narrow' }, nsOf(g)),
    h('td', {}, h('a', { href: groupHref(key), 'data-k': 'g:' + key }, g.metadata.name)),
    h('td', {}, stateBadge(g)),
    h('td', { class: 'hide-narrow' }, (st.zones || sp.availabilityZones || []).join(', ')),
    h('td', { class: 'num hide-narrow' }, sp.minSize),
    h('td', { class: 'num hide-narrow' }, sp.maxSize),
    h('td', { class: 'num', 'data-col': 'desired' }, h('span', { 'data-v': '' }, st.desiredCapacity ?? ''), asked(g, pols)),
    h('td', { class: 'num', 'data-col': 'current' }, st.current ?? ''),
    h('td', { class: 'num', 'data-col': 'ready' }, st.ready ?? ''),
    h('td', { class: 'hide-narrow' }, conditionBadges(st)),
    h('td', { class: 'hide-narrow' }, pols.map((p) => h('div', {}, policyText(p)))),
    h('td', { class: 'hide-narrow' }, lbLinks(g)),
  );
  rowCache.set(key, { g, pols, lbs: S.lbs, row });
  return row;
}

function groupsView() {
  const groups = [...S.store.groups.entries()].sort((a, b) => a[0].localeCompare(b[0]));
  const f = S.filter.toLowerCase();
  const shown = groups.filter(([k]) => !f || k.toLowerCase().includes(f));
  const input = h('input', {
    type: 'search', id: 'filter', 'data-k': 'filter', placeholder: 'namespace/name', value: S.filter,
    'aria-label': 'Filter groups by namespace or name',
    oninput: (e) => { S.filter = e.target.value; render(); },
  });
  const byGroup = policiesByGroup();
  for (const key of rowCache.keys()) if (!S.store.groups.has(key)) rowCache.delete(key);
  const rows = shown.map(([key, g]) => groupRow(key, g, byGroup.get(key) || []));
  return h('section', {},
    h('h1', { tabindex: -1 }, 'Auto scaling groups'),
    h('div', { class: 'toolbar' }, input,
      h('span', { class: 'muted' }, `${shown.length} of ${groups.length} groups · namespaces: ${S.who.allNamespaces ? 'all' : S.who.namespaces.join(', ')}`)),
    groups.length === 0
      ? h('p', { class: 'muted' }, 'No groups yet. ms apply -f a manifest, and it shows here at once.')
      : h('div', { class: 'table-wrap' }, h('table', { id: 'groups' },
        h('caption', { class: 'skip' }, 'Groups, their capacity and conditions'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', class: 'hide-narrow' }, 'Namespace'), h('th', { scope: 'col' }, 'Name'),
          h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Zones'),
          h('th', { scope: 'col', class: 'num hide-narrow' }, 'Min'), h('th', { scope: 'col', class: 'num hide-narrow' }, 'Max'),
          h('th', { scope: 'col', class: 'num' }, 'Desired'), h('th', { scope: 'col', class: 'num' }, 'Current'),
          h('th', { scope: 'col', class: 'num' }, 'Ready'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Conditions'),
          h('th', { scope: 'col', class: 'hide-narrow' }, 'Policies'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Load balancer'))),
        h('tbody', {}, rows))),
  );
}

function groupView(key) {
  const g = S.store.groups.get(key);
  if (!g) {
    return h('section', {}, h('h1', { tabindex: -1 }, key),
      h('p', {}, 'No such group in the namespaces of this token. ', h('a', { href: '#/' }, 'All groups')));
  }
  if (!S.hist || S.hist.key !== key || S.hist.hours !== S.hours) loadHistory(key, S.hours);
  const st = g.status || {};
  const sp = g.spec;
  const policies = policiesOf(key);
  const instances = [...S.store.instances.values()]
    .filter((i) => i.namespace + '/' + i.group === key)
    .sort((a, b) => a.zone.localeCompare(b.zone) || a.name.localeCompare(b.name));
  const zones = [...new Set([...(st.zones || []), ...instances.map((i) => i.zone)])];
  const d = st.lastDecision;
  return h('section', {},
    h('p', {}, h('a', { href: '#/', 'data-k': 'back' }, '← All groups')),
    h('h1', { tabindex: -1 }, g.metadata.name, ' ', h('span', { class: 'muted' }, nsOf(g)), ' ', stateBadge(g)),
    h('ul', { class: 'summary', 'aria-label': 'Capacity' },
      [['desired', st.desiredCapacity], ['current', st.current], ['ready', st.ready], ['up to date', st.updated],
        ['min', sp.minSize], ['max', sp.maxSize]].map(([label, v]) =>
        h('li', { 'data-col': label }, h('b', {}, v ?? '–'), ' ', label, label === 'desired' ? asked(g, policies) : null))),
    st.desiredCapacitySetBy ? h('p', { class: 'muted' }, 'Capacity set by ', h('code', {}, st.desiredCapacitySetBy)) : null,
    lbLinks(g).length ? h('p', {}, 'Load balancer: ', lbLinks(g)) : null,
    h('h2', {}, 'Capacity and metrics'),
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Time range' },
      HOURS.map((n) => h('button', {
        type: 'button', 'aria-pressed': String(S.hours === n), 'data-k': 'hours:' + n,
        onclick: () => { S.hours = n; render(); },
      }, 'last ' + n + ' h')),
      S.hist && S.hist.loading ? h('span', { class: 'muted' }, 'loading…') : null,
      S.hist && S.hist.error ? h('span', { class: 'error' }, S.hist.error) : null),
    h('div', { class: 'charts' }, charts(g, policies)),
    stepsList(g),
    h('h2', {}, 'Conditions'),
    conditionsList(st),
    h('h2', {}, 'Latest decision'),
    d ? decisionView(d) : h('p', { class: 'muted' }, policies.length ? 'No policy evaluation yet.' : 'No scaling policy.'),
    h('h2', {}, `Instances (${instances.length})`),
    zones.length === 0 ? h('p', { class: 'muted' }, 'No instances.') : zones.map((z) => instancesTable(z, instances.filter((i) => i.zone === z), st)),
    h('h2', {}, 'Activities'),
    activitiesTable(st.activities || []),
  );
}

function conditionsList(st) {
  const list = (st.conditions || []);
  if (!list.length) return h('p', { class: 'muted' }, 'None yet.');
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Type', 'Status', 'Reason', 'Message', 'Since'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.map((c) => h('tr', {},
      h('td', {}, c.type), h('td', {}, c.status), h('td', {}, c.reason), h('td', {}, c.message),
      h('td', {}, when(c.lastTransitionTime)))))));
}

function decisionView(d) {
  const inputs = Object.entries(d.inputs || {}).map(([k, v]) => `${k} ${v}`).join(', ');
  return h('dl', { class: 'kv', id: 'decision' },
    h('dt', {}, 'When'), h('dd', {}, when(d.time)),
    h('dt', {}, 'Outcome'), h('dd', {}, d.message),
    h('dt', {}, 'Capacity'), h('dd', {}, `${d.capacity} → ${d.desired}`, d.guard ? ` (guard: ${d.guard})` : ''),
    inputs ? [h('dt', {}, 'Inputs'), h('dd', {}, inputs)] : null,
    d.policy ? [h('dt', {}, 'Policy'), h('dd', {}, d.policy)] : null,
    (d.reasons || []).length ? [h('dt', {}, 'Why'), h('dd', {}, h('ul', { class: 'plain' }, d.reasons.map((r) => h('li', {}, r))))] : null);
}

function instancesTable(zone, list, st) {
  const unreachable = (st.unreachableZones || []).includes(zone);
  return h('div', {},
    h('h3', {}, 'Zone ', zone, ' ', unreachable ? h('span', { class: 'badge bad' }, 'unreachable') : null),
    list.length === 0 ? h('p', { class: 'muted' }, 'No instances in this zone.') :
      h('div', { class: 'table-wrap' }, h('table', { class: 'instances', 'data-zone': zone },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'State'), h('th', { scope: 'col' }, 'Health'),
          h('th', { scope: 'col' }, 'Age'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Ports'),
          h('th', { scope: 'col' }, 'Up to date'), h('th', { scope: 'col', class: 'hide-narrow' }, 'Container'))),
        h('tbody', {}, list.map((i) => h('tr', {},
          h('td', { class: 'mono' }, i.name),
          h('td', {}, h('span', { class: 'badge ' + stateClass(i.state) }, i.state)),
          h('td', {}, health(i)),
          h('td', {}, age(i.startedAt)),
          h('td', { class: 'mono hide-narrow' }, (i.ports || []).join(', ')),
          h('td', {}, i.upToDate ? 'yes' : h('span', { class: 'badge warn' }, 'no')),
          h('td', { class: 'mono hide-narrow', title: i.imageId || '' }, i.containerId)))))));
}

function stateClass(state) {
  if (state === 'running') return 'ok';
  if (['draining', 'created', 'restarting', 'starting'].includes(state)) return 'warn';
  return 'bad';
}

function health(i) {
  const parts = [];
  if (i.ready === true) parts.push(h('span', { class: 'badge ok' }, 'ready'));
  else if (i.ready === false) parts.push(h('span', { class: 'badge warn' }, 'not ready'));
  if (i.health) parts.push(' ', h('span', { class: 'muted' }, i.health));
  if (i.protectedUntil) parts.push(' ', h('span', { class: 'badge info' }, 'protected until '), when(i.protectedUntil));
  return parts.length ? parts : h('span', { class: 'muted' }, '–');
}

function activitiesTable(list) {
  if (!list.length) return h('p', { class: 'muted' }, 'No activities yet.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'activities' },
    h('thead', {}, h('tr', {}, ['Time', 'Action', 'Instance', 'Zone', 'Cause'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.map((a) => h('tr', {},
      h('td', {}, when(a.time)),
      h('td', {}, h('span', { class: 'badge ' + (a.action === 'Launch' ? 'ok' : a.action === 'Terminate' ? 'info' : 'bad') }, a.action)),
      h('td', { class: 'mono' }, a.instance), h('td', {}, a.zone), h('td', {}, a.cause))))));
}

// ---- Charts: inline SVG, steps (a value holds until the next sample) ----------------------

function charts(g, policies) {
  const items = (S.hist && S.hist.key === keyOf(g) && S.hist.items) || [];
  const t1 = Date.now() + S.skew;
  // The window is the hours asked for, or less while the history is younger (a restarted
  // controller's first minutes fill the chart instead of its right edge).
  const first = items.length ? new Date(items[0].time).getTime() : t1;
  const t0 = Math.max(t1 - S.hours * 3600 * 1000, Math.min(first, t1 - 60e3) - 5e3);
  const pick = (f) => items.map((x) => [new Date(x.time).getTime(), f(x)]).filter(([, v]) => typeof v === 'number');
  const steps = new Set(capacitySteps(items).map((x) => new Date(x.time).getTime()));
  const out = [chart({
    id: 'chart-capacity', title: 'Capacity', t0, t1, unit: '', integer: true,
    marks: { series: 'desired', times: steps, onclick: openStep },
    series: [
      { name: 'desired', cls: 's-desired', points: pick((x) => x.desired) },
      { name: 'current', cls: 's-current', points: pick((x) => x.current) },
      { name: 'ready', cls: 's-ready', points: pick((x) => x.ready) },
    ],
    refs: [{ name: 'max', value: g.spec.maxSize }, { name: 'min', value: g.spec.minSize }],
  })];
  for (const p of policies) {
    const sp = p.spec;
    if ((sp.type || 'Step') === 'Scheduled') continue;
    const tt = sp.type === 'TargetTracking';
    let name, f, unit = '%';
    if (sp.pushedMetric) {
      unit = '';
      // A pushed value is the group's total: target tracking compares it per instance.
      name = sp.pushedMetric + (tt ? ' per instance' : '');
      f = (x) => {
        const v = (x.pushed || {})[sp.pushedMetric];
        return typeof v !== 'number' ? undefined : tt ? v / Math.max(1, x.desired) : v;
      };
    } else if (sp.metric === 'Memory') { name = 'memory %'; f = (x) => x.memoryPercent; }
    else { name = 'CPU %'; f = (x) => x.cpuPercent; }
    const refs = tt
      ? [{ name: 'target', value: sp.targetValue }]
      : [{ name: 'upper', value: sp.upperThreshold }, { name: 'lower', value: sp.lowerThreshold }];
    out.push(chart({
      id: 'chart-' + p.metadata.name, title: `${name} (policy ${p.metadata.name})`, t0, t1, unit,
      series: [{ name, cls: 's-metric', points: pick(f) }],
      refs: refs.filter((r) => typeof r.value === 'number'),
    }));
  }
  return out;
}

function chart({ id, title, t0, t1, unit, series, refs, integer, marks }) {
  const W = 600, H = 220, L = 44, R = 30, T = 10, B = 26;
  const x = (t) => L + ((Math.max(t0, Math.min(t1, t)) - t0) / (t1 - t0)) * (W - L - R);
  let max = 0;
  for (const se of series) for (const [, v] of se.points) max = Math.max(max, v);
  for (const r of refs) max = Math.max(max, r.value);
  max = integer ? Math.max(4, Math.ceil(max / 4) * 4) : niceMax(max);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const svg = s('svg', { class: 'chart', id, viewBox: `0 0 ${W} ${H}`, role: 'group', 'aria-label': chartLabel(title, series, unit) });
  // Grid and axes.
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtNum(v) + unit));
  }
  const span = t1 - t0;
  const step = [15e3, 30e3, 60e3, 2 * 60e3, 5 * 60e3, 10 * 60e3, 30 * 60e3, 3600e3].find((st) => span / st <= 6) || 3600e3;
  const clock = step < 60e3 ? fmtClockSec : fmtClock;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    svg.append(s('line', { class: 'grid', x1: x(t), x2: x(t), y1: T, y2: H - B }),
      s('text', { class: 'axis', x: x(t), y: H - 8, 'text-anchor': 'middle' }, clock.format(new Date(t))));
  }
  for (const r of refs) {
    svg.append(s('line', { class: 'ref', x1: L, x2: W - R, y1: y(r.value), y2: y(r.value) }),
      s('text', { class: 'ref-label', x: W - R - 2, y: y(r.value) - 3, 'text-anchor': 'end' }, `${r.name} ${fmtNum(r.value)}${unit}`));
  }
  let any = false;
  for (const se of series) {
    // The value before the window holds at its start; the last one holds until now.
    const pts = se.points.filter(([t]) => t <= t1);
    if (!pts.length) continue;
    any = true;
    let d = '';
    pts.forEach(([t, v], i) => {
      d += i === 0 ? `M${x(t).toFixed(1)},${y(v).toFixed(1)}` : `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
    });
    d += `H${x(t1).toFixed(1)}`;
    svg.append(s('path', { class: 'series ' + se.cls, d, 'data-series': se.name, 'data-points': pts.length }));
    for (const [t, v] of pts.slice(-300)) {
      if (t < t0) continue;
      const label = `${fmtClockSec.format(new Date(t))}: ${se.name} ${fmtNum(v)}${unit}`;
      // A step of the capacity is a button: it opens the step's cause below the chart.
      const mark = marks && marks.series === se.name && marks.times.has(t);
      svg.append(s('circle', {
        class: 'pt ' + se.cls + (mark ? ' step' : ''), cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: mark ? 5 : 2.5,
        tabindex: mark ? 0 : null, role: mark ? 'button' : null, 'data-k': mark ? 'mark:' + t : null,
        'aria-label': mark ? label + ', show why' : null,
        onclick: mark ? () => marks.onclick(t) : null,
        onkeydown: mark ? (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); marks.onclick(t); } } : null,
      }, s('title', {}, label + (mark ? ' (click: why)' : ''))));
    }
  }
  if (!any) svg.append(s('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
  const legend = h('ul', { class: 'legend' },
    series.map((se) => {
      const last = se.points[se.points.length - 1];
      return h('li', { class: se.cls }, h('span', {}, se.name + (last ? ' ' + fmtNum(last[1]) + unit : '')));
    }),
    refs.map((r) => h('li', { class: 'ref' }, h('span', {}, `${r.name} ${fmtNum(r.value)}${unit}`))));
  return h('figure', {}, h('figcaption', {}, title), svg, legend);
}

// The samples where the desired capacity changed.
function capacitySteps(items) {
  const out = [];
  for (let i = 1; i < items.length; i++) if (items[i].desired !== items[i - 1].desired) out.push({ ...items[i], from: items[i - 1].desired });
  return out;
}

function openStep(t) {
  S.openSteps.add(t);
  draw();
  const el = document.querySelector('[data-k="step:' + t + '"] summary');
  if (el) { el.focus(); el.scrollIntoView({ block: 'nearest' }); }
}

// Each step of the capacity with its cause: who set it, the policy's decision in words, and the
// launches and terminations around it.
function stepsList(g) {
  const items = (S.hist && S.hist.key === keyOf(g) && S.hist.items) || [];
  const steps = capacitySteps(items).slice(-20).reverse();
  if (!steps.length) return null;
  const acts = (g.status && g.status.activities) || [];
  return h('div', {},
    h('h3', {}, 'Capacity steps'),
    h('ul', { class: 'plain steps', id: 'steps' }, steps.map((x, i) => {
      const t = new Date(x.time).getTime();
      // Its activities: those from it until the next step (a pass publishes the new capacity
      // before it launches or removes anything), for the newest step the 5 minutes after it.
      // Activity times are whole seconds.
      const sec = (ms) => Math.floor(ms / 1000) * 1000;
      const end = i > 0 ? sec(new Date(steps[i - 1].time).getTime()) : t + 300e3;
      const near = acts.filter((a) => { const at = new Date(a.time).getTime(); return at >= sec(t) && at < end; });
      const who = !x.setBy || x.setBy === 'user' ? 'the manifest (spec.desiredCapacity, e.g. ms scale)' : x.setBy;
      return h('li', {}, h('details', {
        'data-k': 'step:' + t, open: S.openSteps.has(t),
        ontoggle: (e) => { if (e.target.open) S.openSteps.add(t); else S.openSteps.delete(t); },
      },
      h('summary', {}, when(x.time), ` desired ${x.from} → ${x.desired}`),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Set by'), h('dd', {}, who),
        x.decision ? [h('dt', {}, 'Decision'), h('dd', {}, x.decision)] : null,
        near.length ? [h('dt', {}, 'Activities'), h('dd', {}, h('ul', { class: 'plain' },
          near.map((a) => h('li', {}, `${a.action} ${a.instance} (${a.zone}): ${a.cause}`))))] : null)));
    })));
}

function chartLabel(title, series, unit) {
  const now = series.map((se) => {
    const last = se.points[se.points.length - 1];
    return last ? `${se.name} ${fmtNum(last[1])}${unit}` : `${se.name} no data`;
  });
  return `${title}: ${now.join(', ')}`;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtNum(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1).replace(/\.?0+$/, '');
}

// ---- Problems ---------------------------------------------------------------------------

function unhealthyGroups() {
  return [...S.store.groups.entries()].filter(([, g]) => {
    const st = g.status;
    if (!st) return false;
    return ['Invalid', 'Degraded', 'DeletionHeld'].some((t) => (cond(st, t) || {}).status === 'True');
  });
}

function problemCount() {
  const p = S.problems && !S.problems.error ? S.problems : {};
  return (p.fileErrors || []).length + (p.conflicts || []).length + (p.held || []).length +
    (p.statusErrors || []).length + (p.loadBalancers || []).length + unhealthyGroups().length;
}

function problemsView() {
  if (S.problemsFor !== location.hash) {
    // Read again on each visit (the stream says when the manifests change, not when a status
    // file stops taking its status).
    S.problemsFor = location.hash;
    refreshProblemsSoon();
  }
  const p = S.problems || {};
  const section = (title, list, row) => [
    h('h2', {}, `${title} (${list.length})`),
    list.length ? h('ul', { class: 'plain' }, list.map((x) => h('li', {}, row(x)))) : h('p', { class: 'muted' }, 'None.'),
  ];
  return h('section', { id: 'problems' },
    h('h1', { tabindex: -1 }, 'Problems'),
    p.error ? h('p', { class: 'error' }, p.error) : null,
    !S.problems ? h('p', { class: 'muted' }, 'Loading…') : [
      section('Manifest errors', p.fileErrors || [], (e) => [
        h('code', {}, `${e.file}:${e.line}:${e.column}`), ': ', e.field ? h('code', {}, e.field) : null, e.field ? ': ' : null, e.message]),
      section('Conflicts', p.conflicts || [], (c) => [
        h('code', {}, c.key), ' is defined in ', h('code', {}, c.winner), ' and ', h('code', {}, c.ignored), ' (ignored)']),
      section('Deletions held', p.held || [], (x) => [h('code', {}, `${x.namespace}/${x.name}`), ': ', x.message]),
      section('Status not written', p.statusErrors || [], (x) => [h('code', {}, x.file), ': ', x.message, ' (since ', when(x.since), ')']),
      p.loadBalancers ? section('Load balancers', p.loadBalancers, (x) => [h('code', {}, `${x.namespace}/${x.name}`), ': ', x.message]) : null,
    ],
    section('Groups with trouble', unhealthyGroups(), ([key, g]) => [
      h('a', { href: groupHref(key), 'data-k': 'p:' + key }, key), ' ', stateBadge(g), ' ',
      ((g.status.conditions || []).filter((c) => c.type !== 'Ready' && c.status === 'True').map((c) => c.message).join('; '))]),
  );
}

start();
