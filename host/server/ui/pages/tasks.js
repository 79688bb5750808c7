// Tasks: filters (state, template, tag, creation time range), search by id or identity
// key, counts by state, pages, and live updates from GET /v1/events.

import {
  h, api, withQuery, badge, timeEl, fmtDuration, fmtRelative, templateHref, openStream,
  refresher, TASK_STATES, stateLabel, can, handleError, clearError, ApiError, showError, empty, setTitle,
} from '../lib.js';

const FIELDS = ['state', 'template', 'tag', 'created_after', 'created_before', 'q'];

/** A datetime-local value as RFC 3339 (the browser's time zone). */
function toRfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** An RFC 3339 instant as a datetime-local value. */
function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function progress(t) {
  const total = t.step_count || 0;
  const done = total - (t.unfinished_steps || 0);
  const bar = h('span', { class: 'progress', 'aria-hidden': 'true' }, h('span', { class: 'progress-fill' }));
  const pct = total ? (done / total) * 100 : 0;
  bar.firstChild.style.width = `${pct}%`;
  bar.dataset.state = t.state;
  return h('span', { class: 'progress-cell', title: `${done} of ${total} steps finished${t.error_steps ? `, ${t.error_steps} in error` : ''}` },
    bar,
    h('span', { class: 'progress-text' }, `${done}/${total}`),
    t.error_steps ? h('span', { class: 'err-count' }, ` · ${t.error_steps} err`) : null);
}

function duration(t) {
  if (!t.started_at) return h('span', { class: 'muted' }, '—');
  const end = t.finished_at ? new Date(t.finished_at).getTime() : Date.now();
  const ms = end - new Date(t.started_at).getTime();
  return h('span', { title: t.finished_at ? 'from its first claim to its end' : 'running' }, fmtDuration(ms), t.finished_at ? '' : ' …');
}

function taskRow(t) {
  const href = templateHref(t.template);
  return h('tr', { 'data-task-id': t.id, 'data-state': t.state },
    h('td', { class: 'num' }, h('a', { href: `/ui/tasks/${t.id}`, class: 'id-link' }, `#${t.id}`)),
    h('td', null, href ? h('a', { href, class: 'template-link' }, t.template) : t.template),
    h('td', null, badge(t.state)),
    h('td', null, progress(t)),
    h('td', { class: 'mono small' }, t.identity_key || h('span', { class: 'muted' }, '—')),
    h('td', null, (t.tags || []).map((g) => h('span', { class: 'tag' }, g))),
    h('td', { class: 'nowrap created' }, h('div', { title: t.created_at }, fmtRelative(t.created_at)), h('div', { class: 'muted small' }, timeEl(t.created_at))),
    h('td', { class: 'nowrap num' }, duration(t)),
  );
}

export default {
  page: 'tasks',
  title: 'Tasks',
  async render(ctx) {
    const { main, query, signal } = ctx;
    setTitle('Tasks');
    const initial = Object.fromEntries(FIELDS.map((f) => [f, query.get(f) || '']));
    let cursor = query.get('cursor') || null;
    const newerCursors = []; // cursors of the newer pages

    // --- the filters ------------------------------------------------------------------
    // A text input with suggestions: one state, or several separated by commas.
    const stateSel = h('input', { name: 'state', id: 'f-state', type: 'text', list: 'state-options', placeholder: 'any state', title: 'A task state, or several separated by commas', autocomplete: 'off', value: initial.state });
    const stateList = h('datalist', { id: 'state-options' }, TASK_STATES.map((st) => h('option', { value: st }, stateLabel(st))));
    const templateIn = h('input', { name: 'template', id: 'f-template', type: 'text', placeholder: 'ns/name[@version]', list: 'template-options', autocomplete: 'off', value: initial.template });
    const tagIn = h('input', { name: 'tag', id: 'f-tag', type: 'text', placeholder: 'tag', value: initial.tag });
    const afterIn = h('input', { name: 'created_after', id: 'f-after', type: 'datetime-local', value: toLocalInput(initial.created_after) });
    const beforeIn = h('input', { name: 'created_before', id: 'f-before', type: 'datetime-local', value: toLocalInput(initial.created_before) });
    const qIn = h('input', { name: 'q', id: 'f-q', type: 'search', placeholder: 'Task id or identity key', value: initial.q, autocomplete: 'off' });
    const datalist = h('datalist', { id: 'template-options' });

    const field = (label, input, cls = '') => h('label', { class: `field ${cls}`.trim() }, h('span', { class: 'field-label' }, label), input);
    const form = h('form', { id: 'task-filters', class: 'filters', role: 'search' },
      field('Search', qIn, 'field-wide'),
      field('State', stateSel),
      field('Template', templateIn),
      field('Tag', tagIn, 'field-narrow'),
      field('Created after', afterIn),
      field('Created before', beforeIn),
      h('div', { class: 'filter-actions' },
        h('button', { type: 'submit', class: 'btn btn-primary', 'data-action': 'filter' }, 'Apply'),
        h('button', { type: 'button', class: 'btn', 'data-action': 'clear-filters' }, 'Clear')),
      datalist, stateList);

    // --- counts, table, pager ---------------------------------------------------------
    const counts = h('div', { id: 'task-counts', class: 'counts' });
    const countChip = (st, label) => {
      const chip = h('button', { type: 'button', class: 'count-chip', 'data-count': st, title: st === 'total' ? 'Every state' : `Only ${stateLabel(st).toLowerCase()} tasks` },
        h('span', { class: 'count-label' }, st !== 'total' ? h('span', { class: 'badge-dot', 'aria-hidden': 'true' }) : null, label),
        h('span', { class: 'count-value', 'data-state': st }, '–'));
      chip.addEventListener('click', () => {
        stateSel.value = st === 'total' ? '' : st;
        cursor = null;
        newerCursors.length = 0;
        apply();
      });
      return chip;
    };
    counts.append(countChip('total', 'All'), ...TASK_STATES.map((st) => countChip(st, stateLabel(st))));

    const tbody = h('tbody');
    const tableEl = h('table', { class: 'table', id: 'tasks' },
      h('thead', null, h('tr', null,
        h('th', { class: 'num' }, 'Task'), h('th', null, 'Template'), h('th', null, 'State'), h('th', null, 'Steps'),
        h('th', null, 'Identity key'), h('th', null, 'Tags'), h('th', null, 'Created'), h('th', { class: 'num' }, 'Duration'))),
      tbody);
    const newer = h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'newer', disabled: true }, '← Newer');
    const older = h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'older', disabled: true }, 'Older →');
    const pageInfo = h('span', { class: 'muted small' });
    const live = h('span', { class: 'live', title: 'Updates as tasks change' }, h('span', { class: 'live-dot' }), 'Live');

    main.append(
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, 'Tasks'), h('p', { class: 'subtitle' }, 'Every run of a template, newest first.')),
        live),
      counts,
      h('section', { class: 'card' }, form),
      h('section', { class: 'card card-flush' },
        h('div', { class: 'table-wrap' }, tableEl),
        h('div', { class: 'pager' }, pageInfo, h('div', { class: 'pager-buttons' }, newer, older))),
    );

    // --- reading ----------------------------------------------------------------------
    const filters = () => ({
      state: stateSel.value.replace(/\s+/g, ''),
      template: templateIn.value.trim(),
      tag: tagIn.value.trim(),
      created_after: toRfc3339(afterIn.value),
      created_before: toRfc3339(beforeIn.value),
      q: qIn.value.trim(),
    });

    let nextCursor = null;
    let loads = 0;
    const load = async () => {
      const mine = ++loads;
      const f = filters();
      const common = { template: f.template, tag: f.tag, created_after: f.created_after, created_before: f.created_before };
      const isId = /^#?\d+$/.test(f.q);
      if (f.q && !isId) common.identity_key = f.q;
      const countsP = api(withQuery('/v1/tasks/counts', common), { signal });
      let rows;
      let next = null;
      if (isId) {
        const id = f.q.replace('#', '');
        try {
          rows = [await api(`/v1/tasks/${id}`, { signal })];
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) {
            rows = [];
            showError(e.detail);
          } else throw e;
        }
      } else {
        const page = await api(withQuery('/v1/tasks', { ...common, state: f.state, cursor, limit: 50 }), { signal });
        rows = page.items;
        next = page.next_cursor || null;
      }
      const c = await countsP;
      // Only the latest reading is drawn (filters may change while one is under way).
      if (!ctx.isCurrent() || mine !== loads) return;
      for (const el of counts.querySelectorAll('[data-state]')) {
        const v = c[el.dataset.state];
        el.textContent = v === undefined ? '–' : String(v);
      }
      for (const chip of counts.querySelectorAll('.count-chip')) {
        chip.classList.toggle('active', (chip.dataset.count === 'total' && !f.state) || chip.dataset.count === f.state);
      }
      nextCursor = next;
      tbody.replaceChildren(...rows.map(taskRow));
      if (!rows.length) {
        const anyFilter = FIELDS.some((k) => f[k]);
        tbody.append(h('tr', { class: 'empty-row' }, h('td', { colspan: '8' },
          empty(anyFilter ? 'No task matches these filters.' : 'No tasks yet. Submit one with `tasker submit <template> --context @file.json`.'))));
      }
      newer.disabled = newerCursors.length === 0;
      older.disabled = !nextCursor;
      const pageNo = newerCursors.length + 1;
      pageInfo.textContent = isId ? 'Found by id' : `Page ${pageNo}${rows.length ? ` · ${rows.length} task${rows.length === 1 ? '' : 's'}` : ''}`;
    };

    const syncUrl = () => {
      const f = filters();
      const url = withQuery('/ui/tasks', { ...f, cursor });
      window.history.replaceState(null, '', url);
    };

    const apply = async () => {
      clearError();
      syncUrl();
      try {
        await load();
      } catch (e) {
        handleError(e);
      }
    };

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      cursor = null;
      newerCursors.length = 0;
      apply();
    });
    for (const input of [stateSel, templateIn, tagIn, qIn, afterIn, beforeIn]) {
      input.addEventListener('change', () => { cursor = null; newerCursors.length = 0; apply(); });
    }
    form.querySelector('[data-action="clear-filters"]').addEventListener('click', () => {
      for (const input of [stateSel, templateIn, tagIn, afterIn, beforeIn, qIn]) input.value = '';
      cursor = null;
      newerCursors.length = 0;
      apply();
    });
    older.addEventListener('click', () => {
      if (!nextCursor) return;
      newerCursors.push(cursor);
      cursor = nextCursor;
      apply();
    });
    newer.addEventListener('click', () => {
      if (!newerCursors.length) return;
      cursor = newerCursors.pop();
      apply();
    });

    if (can('templates:read')) {
      api('/v1/templates?limit=500', { signal }).then((page) => {
        const seen = new Set();
        for (const t of page.items || []) {
          for (const v of [`${t.namespace}/${t.name}`, t.key]) {
            if (seen.has(v)) continue;
            seen.add(v);
            datalist.append(h('option', { value: v }));
          }
        }
      }).catch(() => { /* suggestions only */ });
    }

    await load();

    // --- live -------------------------------------------------------------------------
    const again = refresher(load, 1000);
    const stream = openStream('/v1/events', {
      onOpen: () => live.classList.add('on'),
      onEvent: () => again.poke(),
      onEnd: () => live.classList.remove('on'),
    });
    // Without events, "3 s ago" still moves on.
    const timer = setInterval(() => again.poke(), 15000);
    ctx.onLeave(() => { stream.close(); again.stop(); clearInterval(timer); });
  },
};
