// The page's entry point: the router (History API), the navigation bar and session, and
// each page's lifecycle (what it opened is closed when the operator leaves it).

import {
  h, session, loadSession, applySession, signedIn, api, setNavigator, showError, clearError,
  handleError, withQuery, notice,
} from './lib.js';
import tasksPage from './pages/tasks.js';
import taskPage from './pages/task.js';
import stepPage from './pages/step.js';
import { templatesPage, templatePage } from './pages/templates.js';
import pluginsPage from './pages/plugins.js';
import hooksPage from './pages/hooks.js';
import healthPage from './pages/health.js';
import signInPage from './pages/sign-in.js';

const ROUTES = [
  [/^\/$/, tasksPage],
  [/^\/ui\/?$/, tasksPage],
  [/^\/ui\/tasks\/?$/, tasksPage],
  [/^\/ui\/tasks\/(\d+)\/?$/, taskPage, ['id']],
  [/^\/ui\/steps\/(\d+)\/?$/, stepPage, ['id']],
  [/^\/ui\/templates\/?$/, templatesPage],
  [/^\/ui\/templates\/([^/]+)\/([^/]+)\/([^/]+)\/?$/, templatePage, ['namespace', 'name', 'version']],
  [/^\/ui\/plugins\/?$/, pluginsPage],
  [/^\/ui\/hooks\/?$/, hooksPage],
  [/^\/ui\/health\/?$/, healthPage],
  [/^\/ui\/sign-in\/?$/, signInPage],
];

const notFoundPage = {
  page: 'not-found',
  title: 'Not found',
  async render({ main }) {
    main.append(h('div', { class: 'page-head' }, h('h1', null, 'No such page')),
      h('p', null, 'Go to the ', h('a', { href: '/ui/tasks' }, 'tasks'), '.'));
    showError(`There is no page at ${window.location.pathname}`);
  },
};

function match(pathname) {
  for (const [re, page, names] of ROUTES) {
    const m = re.exec(pathname);
    if (!m) continue;
    const params = {};
    (names || []).forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
    return { page, params };
  }
  return { page: notFoundPage, params: {} };
}

let current = null; // { ctrl, cleanups }
let here = ''; // the path and query of the page shown
let generation = 0;

function leave() {
  if (!current) return;
  current.ctrl.abort();
  for (const fn of current.cleanups.splice(0)) {
    try { fn(); } catch (e) { console.warn('cleanup failed', e); }
  }
  current = null;
}

async function route({ keepError = false } = {}) {
  leave();
  const gen = ++generation;
  const { pathname, search } = window.location;
  let { page, params } = match(pathname);
  if (!keepError) clearError();

  const body = document.body;
  body.dataset.ready = '0';

  // With tokens on and nobody signed in, every page but sign-in asks for a token.
  if (page !== signInPage && session.auth && !signedIn()) {
    const next = pathname + search;
    window.history.replaceState(null, '', withQuery('/ui/sign-in', { next }));
    page = signInPage;
    params = {};
  }

  here = window.location.pathname + window.location.search;
  body.dataset.page = page.page;
  document.title = page.title ? `${page.title} · Tasker` : 'Tasker';
  for (const a of document.querySelectorAll('[data-nav]')) {
    const on = a.dataset.nav === (page.nav || page.page);
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  renderSession();

  const main = document.getElementById('main');
  main.replaceChildren();
  const ctrl = new AbortController();
  const cleanups = [];
  current = { ctrl, cleanups };
  const ctx = {
    main,
    params,
    query: new URLSearchParams(window.location.search),
    signal: ctrl.signal,
    onLeave: (fn) => cleanups.push(fn),
    isCurrent: () => gen === generation,
  };
  try {
    await page.render(ctx);
  } catch (e) {
    if (gen === generation) handleError(e);
  }
  if (gen === generation) body.dataset.ready = '1';
}

function go(url, { replace = false, keepError = false } = {}) {
  const target = new URL(url, window.location.origin);
  const href = target.pathname + target.search + target.hash;
  if (replace) window.history.replaceState(null, '', href);
  else window.history.pushState(null, '', href);
  window.scrollTo(0, 0);
  route({ keepError });
}

function renderSession() {
  const box = document.getElementById('session');
  if (!box) return;
  box.replaceChildren();
  if (!session.auth) {
    box.append(h('span', { class: 'pill pill-muted', title: 'The server runs without authentication: every action is allowed' }, 'auth off'));
    return;
  }
  if (signedIn()) {
    box.append(
      h('span', { class: 'session-name', title: `Signed in with the token "${session.token}"` },
        h('span', { class: 'session-label' }, 'token'), ' ', h('strong', null, session.token)),
      h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'sign-out', onclick: signOut }, 'Sign out'),
    );
  } else {
    box.append(h('a', { class: 'btn btn-small', href: '/ui/sign-in' }, 'Sign in'));
  }
}

async function signOut() {
  try {
    await api('/ui/session', { method: 'DELETE' });
  } catch (e) {
    handleError(e);
    return;
  }
  // Signed out: nobody holds a token any more (no need to ask the server, which would
  // answer 401).
  applySession({ auth: true, token: null, permissions: [], csrf: '' });
  notice('Signed out.');
  go('/ui/sign-in', { replace: false, keepError: false });
}

function onClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (!href || !(href === '/' || href.startsWith('/ui/'))) return;
  if (href.startsWith('/ui/assets/')) return;
  e.preventDefault();
  go(href);
}

async function boot() {
  document.addEventListener('click', onClick);
  setNavigator(go);
  // A change of the fragment alone (a link to #attempt-2) stays on the page.
  window.addEventListener('popstate', () => {
    const now = window.location.pathname + window.location.search;
    if (now === here && window.location.hash) return;
    route();
  });
  const dismiss = document.querySelector('[data-dismiss="error"]');
  if (dismiss) dismiss.addEventListener('click', clearError);
  try {
    await loadSession();
  } catch (e) {
    // The session cannot be read: say why, and still show the page (its requests will
    // say the same).
    handleError(e);
    await route({ keepError: true });
    return;
  }
  await route();
}

boot();
