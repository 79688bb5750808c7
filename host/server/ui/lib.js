// What every page shares: building DOM, calling the API (session cookie + CSRF header),
// showing problems, the confirmation dialog, live event streams and formatting.
//
// Everything that comes from the API is put in the page with textContent (through `h`),
// never parsed as HTML.

// ---------------------------------------------------------------------------------------
// DOM

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false || c === '') continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'style') throw new Error('inline styles are not allowed (CSP): use classes');
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) {
        if (dv !== null && dv !== undefined) el.dataset[dk] = String(dv);
      }
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

/** An HTML element: h('a', {href: '/x', class: 'link'}, 'text', child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, as `h`. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Replaces the children of `el` (strings, nodes, nested arrays, nulls skipped). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the page (the router intercepts it). */
export function link(href, ...children) {
  return h('a', { href }, ...children);
}

// ---------------------------------------------------------------------------------------
// Session and permissions

export const session = {
  loaded: false,
  auth: false,
  token: null,
  permissions: new Set(),
  csrf: '',
};

/** Whether the page may offer an action needing `permission`. */
export function can(permission) {
  if (!session.auth) return true;
  return session.permissions.has(permission);
}

/** Whether a token is signed in (with authentication on). */
export function signedIn() {
  return session.auth && session.token !== null && session.token !== undefined;
}

export function applySession(view) {
  session.loaded = true;
  session.auth = Boolean(view.auth);
  session.token = view.token ?? null;
  session.permissions = new Set(view.permissions || []);
  session.csrf = view.csrf || '';
}

/** Reads `GET /ui/session`; a 401 means nobody is signed in. */
export async function loadSession() {
  try {
    applySession(await api('/ui/session'));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      applySession({ auth: true, token: null, permissions: [], csrf: '' });
    } else {
      throw e;
    }
  }
  return session;
}

// ---------------------------------------------------------------------------------------
// The API

/** A refused or failed request: `detail` is the problem's sentence. */
export class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
    this.problem = problem || null;
  }
}

/** A problem's sentence, with the fields at fault and a missing permission when named. */
function problemDetail(status, problem, fallback) {
  if (!problem || typeof problem !== 'object') return fallback;
  let detail = typeof problem.detail === 'string' && problem.detail
    ? problem.detail
    : (problem.title || fallback);
  if (Array.isArray(problem.errors) && problem.errors.length) {
    const fields = problem.errors
      .map((e) => (e.pointer ? `${e.pointer}: ${e.detail}` : e.detail))
      .filter(Boolean);
    if (fields.length) detail += ` (${fields.join('; ')})`;
  }
  if (status === 403 && problem.missing_permission && !detail.includes(problem.missing_permission)) {
    detail += ` (missing permission ${problem.missing_permission})`;
  }
  return detail;
}

/**
 * Calls the API. `json` is sent as a JSON body, `body` as is (with `type` as its content
 * type). Changes carry the session's CSRF token. Answers the parsed JSON (or null for an
 * empty answer); throws ApiError for a refused request or an unreachable server.
 */
export async function api(path, opts = {}) {
  const method = (opts.method || 'GET').toUpperCase();
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    if (opts.type) headers['Content-Type'] = opts.type;
    body = opts.body;
  }
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) {
    headers['X-CSRF-Token'] = session.csrf;
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body,
      credentials: 'same-origin',
      cache: 'no-store',
      signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, `The server cannot be reached (${method} ${path}): ${e && e.message ? e.message : e}`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const fallback = `${method} ${path} answered ${res.status} ${res.statusText}`.trim();
    throw new ApiError(res.status, problemDetail(res.status, data, fallback), data);
  }
  if (opts.withStatus) return { status: res.status, data };
  return data;
}

/** A URL with a query string of the non-empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v));
  }
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

// ---------------------------------------------------------------------------------------
// Navigation (the router registers itself here)

let navigator = (url) => { window.location.assign(url); };

export function setNavigator(fn) {
  navigator = fn;
}

/** Goes to a page of the app; `replace` replaces the history entry. */
export function navigate(url, opts = {}) {
  navigator(url, opts);
}

// ---------------------------------------------------------------------------------------
// Problems and notices

let noticeTimer = 0;

/** Shows a problem's detail in #error (empty: hides it). */
export function showError(detail) {
  const bar = document.getElementById('error-bar');
  const el = document.getElementById('error');
  if (!el || !bar) return;
  el.textContent = detail || '';
  bar.hidden = !detail;
}

export function clearError() {
  showError('');
}

/** A short confirmation of what an action did. */
export function notice(text) {
  const bar = document.getElementById('notice-bar');
  const el = document.getElementById('notice');
  if (!el || !bar) return;
  el.textContent = text || '';
  bar.hidden = !text;
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => { bar.hidden = true; }, 6000);
}

/**
 * What a page does with a failed request: ignored when the page was left, the sign-in page
 * for a 401, the problem's detail in #error otherwise.
 */
export function handleError(e) {
  if (!e) return;
  if (e.name === 'AbortError') return;
  if (e instanceof ApiError) {
    if (e.status === 401) {
      const here = window.location.pathname + window.location.search;
      const next = here.startsWith('/ui/sign-in') ? '/ui/tasks' : here;
      navigate(withQuery('/ui/sign-in', { next }), { keepError: true });
      showError(e.detail);
      return;
    }
    showError(e.detail);
    return;
  }
  showError(String(e && e.message ? e.message : e));
}

// ---------------------------------------------------------------------------------------
// Confirmation

/**
 * Opens dialog#confirm; resolves true when the operator says yes.
 * `yes` labels the confirming button (e.g. "Cancel task").
 */
export function confirmDialog({ title, message, yes = 'Confirm', danger = false }) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-message').textContent = message || '';
  const yesBtn = dialog.querySelector('[data-confirm="yes"]');
  const noBtn = dialog.querySelector('[data-confirm="no"]');
  yesBtn.textContent = yes;
  noBtn.textContent = 'Go back';
  yesBtn.classList.toggle('btn-danger', danger);
  yesBtn.classList.toggle('btn-primary', !danger);
  dialog.returnValue = '';
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener('close', done);
      resolve(dialog.returnValue === 'yes');
    };
    dialog.addEventListener('close', done);
    dialog.showModal();
    noBtn.focus();
  });
}

// ---------------------------------------------------------------------------------------
// Live events: Server-Sent Events read with fetch, so that every event name (custom.* too)
// reaches the page, the stream can be closed at once, and a reconnection resumes with
// Last-Event-ID.

/**
 * Follows an SSE URL. `onEvent({id, event, data})` gets each event (data parsed as JSON).
 * Reconnects after a dropped connection (from the last id) unless `reconnect()` says not
 * to; `onEnd()` when it stops for good. Answers `{close()}`.
 */
export function openStream(url, { onEvent, onOpen, onEnd, reconnect = () => true, onError } = {}) {
  const ctrl = new AbortController();
  let lastId = null;
  let closed = false;
  let retryMs = 1000;

  const close = () => {
    if (closed) return;
    closed = true;
    ctrl.abort();
  };

  const dispatch = (ev) => {
    if (ev.id !== null) lastId = ev.id;
    if (!ev.data && !ev.event) return;
    let data = null;
    try {
      data = ev.data ? JSON.parse(ev.data) : null;
    } catch {
      data = { raw: ev.data };
    }
    onEvent && onEvent({ id: ev.id ?? lastId, event: ev.event || 'message', data });
  };

  const run = async () => {
    while (!closed) {
      const headers = { Accept: 'text/event-stream' };
      if (lastId) headers['Last-Event-ID'] = lastId;
      let res;
      try {
        res = await fetch(url, { headers, credentials: 'same-origin', cache: 'no-store', signal: ctrl.signal });
      } catch (e) {
        if (closed || (e && e.name === 'AbortError')) break;
        await sleep(retryMs, ctrl.signal);
        continue;
      }
      if (!res.ok) {
        let problem = null;
        try { problem = await res.json(); } catch { /* not JSON */ }
        const err = new ApiError(res.status, problemDetail(res.status, problem, `${url} answered ${res.status}`), problem);
        if (res.status >= 400 && res.status < 500) {
          closed = true;
          (onError || handleError)(err);
          break;
        }
        await sleep(retryMs * 3, ctrl.signal);
        continue;
      }
      onOpen && onOpen();
      try {
        await readEvents(res.body, dispatch, (ms) => { retryMs = ms; });
      } catch (e) {
        if (closed || (e && e.name === 'AbortError')) break;
      }
      if (closed || !reconnect()) break;
      await sleep(retryMs, ctrl.signal);
    }
    closed = true;
    onEnd && onEnd();
  };
  run();
  return { close, get closed() { return closed; } };
}

async function readEvents(body, dispatch, setRetry) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let ev = { id: null, event: '', data: '' };
  let hasData = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      const skip = buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1;
      // A lone \r at the end of the buffer may be the first half of \r\n.
      if (buf[nl] === '\r' && nl + 1 === buf.length) break;
      buf = buf.slice(nl + skip);
      if (line === '') {
        if (hasData || ev.event) dispatch(ev);
        ev = { id: null, event: '', data: '' };
        hasData = false;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') {
        ev.data = hasData ? `${ev.data}\n${val}` : val;
        hasData = true;
      } else if (field === 'event') {
        ev.event = val;
      } else if (field === 'id') {
        ev.id = val;
      } else if (field === 'retry' && /^\d+$/.test(val)) {
        setRetry(Number(val));
      }
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Runs `fn` (async) when poked, at most once per `ms`: pokes during a run or inside the
 * interval fold into one run at the end of it. Answers {poke(), stop()}.
 */
export function refresher(fn, ms = 1000) {
  let last = 0;
  let running = false;
  let pending = false;
  let timer = 0;
  let stopped = false;
  const start = async () => {
    timer = 0;
    if (stopped) return;
    running = true;
    pending = false;
    last = performance.now();
    try {
      await fn();
    } catch (e) {
      handleError(e);
    }
    running = false;
    if (pending) schedule();
  };
  const schedule = () => {
    if (stopped || timer) return;
    if (running) { pending = true; return; }
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(start, wait);
  };
  return {
    poke: schedule,
    stop() { stopped = true; clearTimeout(timer); },
  };
}

// ---------------------------------------------------------------------------------------
// States

export const STEP_STATES = ['pending', 'in_progress', 'waiting_for_retry', 'complete', 'error', 'cancelled', 'resolved_manually'];
export const TASK_STATES = ['pending', 'in_progress', 'complete', 'error', 'cancelled'];

const LABELS = {
  pending: 'Pending',
  in_progress: 'In progress',
  waiting_for_retry: 'Waiting for retry',
  complete: 'Complete',
  error: 'Error',
  cancelled: 'Cancelled',
  resolved_manually: 'Resolved manually',
  completed: 'Completed',
  failed: 'Failed',
  lease_lost: 'Lease lost',
  released: 'Released',
  delivered: 'Delivered',
  dead: 'Dead letter',
};

export function stateLabel(state) {
  if (!state) return '—';
  return LABELS[state] || String(state).replace(/_/g, ' ');
}

/** A coloured badge that also says the state in words. */
export function badge(state, attrs = {}) {
  return h('span', { class: 'badge', 'data-state': state, title: state, ...attrs },
    h('span', { class: 'badge-dot', 'aria-hidden': 'true' }), stateLabel(state));
}

// ---------------------------------------------------------------------------------------
// Formatting

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** A local wall-clock instant: 2026-12-03 16:06:05. */
export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The time of day with milliseconds: 16:06:05.123. */
export function fmtClock(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** "3 min ago", "in 5 s". */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const diff = (t - now) / 1000;
  const a = Math.abs(diff);
  let text;
  if (a < 1) return 'just now';
  if (a < 60) text = `${Math.round(a)} s`;
  else if (a < 3600) text = `${Math.round(a / 60)} min`;
  else if (a < 86400) text = `${Math.round(a / 3600)} h`;
  else text = `${Math.round(a / 86400)} d`;
  return diff < 0 ? `${text} ago` : `in ${text}`;
}

/** A <time> element: local time, the exact instant and how long ago as a tooltip. */
export function timeEl(iso, { clock = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: `${iso} (${fmtRelative(iso)})` }, clock ? fmtClock(iso) : fmtTime(iso));
}

/** A duration in milliseconds: 850 ms, 12.3 s, 4 min 05 s. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 0) ms = 0;
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec < 10 ? sec.toFixed(2) : sec.toFixed(1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(sec % 60))} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${pad(m % 60)} min`;
}

export function fmtMicros(us) {
  if (us === null || us === undefined) return '—';
  return fmtDuration(us / 1000);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 1234567 → "1.23 M" (the exact figure is for a tooltip). */
export function fmtCount(n) {
  if (n === null || n === undefined) return '—';
  const v = Number(n);
  if (Math.abs(v) < 10000) return v.toLocaleString('en-US');
  const units = [['G', 1e9], ['M', 1e6], ['k', 1e3]];
  for (const [u, f] of units) {
    if (Math.abs(v) >= f) return `${(v / f).toFixed(v / f < 10 ? 2 : 1)} ${u}`;
  }
  return String(v);
}

export function fmtInt(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

/** A countdown to an instant: "3.2 s", "1 min 05 s", "due". */
export function fmtCountdown(iso, now = Date.now()) {
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const ms = t - now;
  if (ms <= 0) return 'due now';
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  return fmtDuration(ms);
}

/** A blake3 hash shortened for a table: blake3:1a2b3c4d…; the whole in a tooltip. */
export function hashEl(hash) {
  if (!hash) return h('span', { class: 'muted' }, '—');
  const hex = hash.startsWith('blake3:') ? hash.slice(7) : hash;
  return h('code', { class: 'hash', title: hash }, `${hex.slice(0, 12)}…`);
}

/** Pretty JSON in a <pre>. */
export function jsonBlock(value, attrs = {}) {
  const text = value === undefined ? '' : JSON.stringify(value, null, 2);
  return h('pre', { class: 'json', ...attrs }, text === undefined ? 'null' : text);
}

/** A section card with a title and optional actions on the right. */
export function card(title, opts, ...children) {
  const { actions = null, id = null, cls = '' } = opts || {};
  return h('section', { class: `card ${cls}`.trim(), id },
    title ? h('header', { class: 'card-head' }, h('h2', null, title), actions ? h('div', { class: 'card-actions' }, actions) : null) : null,
    ...children);
}

/** A key/value list. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [
    h('dt', null, k),
    h('dd', null, v === null || v === undefined || v === '' ? h('span', { class: 'muted' }, '—') : v),
  ]));
}

/** A table from column headers and row elements. */
export function table(headers, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table', ...attrs },
      h('thead', null, h('tr', null, headers.map((c) => h('th', typeof c === 'object' && c !== null && !(c instanceof Node) ? c.attrs : null, typeof c === 'object' && c !== null && !(c instanceof Node) ? c.label : c)))),
      h('tbody', null, rows)));
}

export function empty(text) {
  return h('div', { class: 'empty' }, text);
}

/** The template page of a template key `ns/name@version`. */
export function templateHref(key) {
  const at = key.lastIndexOf('@');
  const slash = key.indexOf('/');
  if (at < 0 || slash < 0) return null;
  const ns = key.slice(0, slash);
  const name = key.slice(slash + 1, at);
  const version = key.slice(at + 1);
  return `/ui/templates/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/${encodeURIComponent(version)}`;
}

/** `GET /v1/templates/{ns}/{name}/{version}` for a template key. */
export function templateApi(key) {
  const href = templateHref(key);
  return href ? href.replace('/ui/templates/', '/v1/templates/') : null;
}

/** A page title in the tab. */
export function setTitle(text) {
  document.title = text ? `${text} · Tasker` : 'Tasker';
}
