// Sign-in: a token sent once to POST /ui/session, which keeps it in an HttpOnly,
// SameSite=Strict cookie; the page never stores it.

import { h, api, session, applySession, navigate, handleError, clearError, showError, setTitle } from '../lib.js';

export default {
  page: 'sign-in',
  title: 'Sign in',
  async render(ctx) {
    const { main, query } = ctx;
    setTitle('Sign in');
    const next = query.get('next');
    const safeNext = next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/ui/sign-in') ? next : '/ui/tasks';

    if (!session.auth) {
      main.append(h('div', { class: 'signin' }, h('section', { class: 'card signin-card' },
        h('h1', null, 'No sign-in needed'),
        h('p', null, 'This server runs without authentication: every page and action is open.'),
        h('a', { class: 'btn btn-primary', href: safeNext }, 'Go to the tasks'))));
      return;
    }

    const already = session.token
      ? h('p', { class: 'pill signed-in-as' }, 'Signed in as ', h('strong', null, session.token), '; another token replaces it.')
      : null;
    const input = h('input', { type: 'password', name: 'token', id: 'token', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'tkr_…' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', 'data-action': 'sign-in' }, 'Sign in');
    const form = h('form', { id: 'sign-in', class: 'signin-form' },
      h('label', { class: 'field', for: 'token' }, h('span', { class: 'field-label' }, 'Token'), input),
      submit);
    main.append(h('div', { class: 'signin' }, h('section', { class: 'card signin-card' },
      h('h1', null, 'Sign in to Tasker'),
      already,
      h('p', { class: 'muted' }, 'Paste an API token. It is kept in an HttpOnly cookie for this site only; the page can do what the token may do, nothing more.'),
      form,
      h('p', { class: 'muted small' }, 'Create one with ', h('code', null, 'tasker tokens create --name me --permissions tasks:read,steps:read'), '.'))));
    input.focus();

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearError();
      const token = input.value.trim();
      if (!token) return;
      submit.disabled = true;
      try {
        const view = await api('/ui/session', { method: 'POST', json: { token } });
        applySession(view);
        input.value = '';
        navigate(safeNext, { replace: true });
      } catch (err) {
        // A wrong token is a 401 here, not a reason to come back to this page.
        if (err && err.status === 401) {
          showError(err.detail);
        } else {
          handleError(err);
        }
        submit.disabled = false;
        input.select();
      }
    });
  },
};
