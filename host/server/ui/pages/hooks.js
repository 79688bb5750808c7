// Hooks: every hook with its deliveries by state, a hook's deliveries (dead letters with
// their last error), and redelivery of dead letters.

import {
  h, api, withQuery, badge, timeEl, can, confirmDialog, notice, handleError, empty, setTitle, card,
} from '../lib.js';

const DELIVERY_STATES = ['dead', 'pending', 'delivered'];

export default {
  page: 'hooks',
  title: 'Hooks',
  async render(ctx) {
    const { main, query, signal } = ctx;
    setTitle('Hooks');
    let selected = query.get('hook') ? Number(query.get('hook')) : null;
    let stateFilter = query.get('state') ?? null;
    let cursor = null;
    const prevCursors = [];

    const tbody = h('tbody');
    const hooksTable = h('table', { class: 'table', id: 'hooks' },
      h('thead', null, h('tr', null, h('th', { class: 'num' }, 'Hook'), h('th', null, 'Component'),
        h('th', { class: 'num' }, 'Pending'), h('th', { class: 'num' }, 'Delivered'), h('th', { class: 'num' }, 'Dead letters'), h('th', null, ''))),
      tbody);
    const deliveriesTitle = h('span');
    const stateTabs = h('div', { class: 'tabs', role: 'tablist' });
    const deliveriesEl = h('div', { id: 'deliveries' });
    const pager = h('div', { class: 'pager' });
    const deliveriesCard = card(null, { cls: 'card-flush' },
      h('header', { class: 'card-head' }, h('h2', null, deliveriesTitle), stateTabs),
      deliveriesEl, pager);
    deliveriesCard.hidden = true;

    main.append(
      h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Hooks'),
        h('p', { class: 'subtitle' }, 'Event hooks of the registered templates, and how their deliveries went. A delivery that failed every attempt is a dead letter.'))),
      h('section', { class: 'card card-flush' }, h('div', { class: 'table-wrap' }, hooksTable)),
      deliveriesCard,
    );

    let hooks = [];
    const syncUrl = () => window.history.replaceState(null, '', withQuery('/ui/hooks', { hook: selected, state: stateFilter }));

    const redeliver = async (hook, ids) => {
      const n = ids ? ids.length : hook.dead;
      const yes = await confirmDialog({
        title: ids ? `Redeliver dead letter ${ids.join(', ')}?` : `Redeliver the dead letters of hook ${hook.hook_id}?`,
        message: `${n} dead letter${n === 1 ? '' : 's'} of ${hook.component} go back to the end of their queue with a fresh attempt budget.`,
        yes: 'Redeliver',
      });
      if (!yes || !ctx.isCurrent()) return;
      try {
        const out = await api(`/v1/hooks/${hook.hook_id}/redeliver`, { method: 'POST', json: ids ? { ids } : {}, signal });
        notice(`${out.length} dead letter${out.length === 1 ? '' : 's'} sent again.`);
      } catch (e) {
        handleError(e);
      }
      await loadHooks();
    };

    const drawHooks = () => {
      tbody.replaceChildren(...hooks.map((hk) => {
        const actions = [h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'deliveries', onclick: () => select(hk.hook_id, hk.dead ? 'dead' : '') }, 'Deliveries')];
        if (can('hooks:redeliver')) {
          actions.push(h('button', {
            type: 'button', class: 'btn btn-small btn-primary', 'data-action': 'redeliver', disabled: hk.dead === 0,
            title: hk.dead ? 'Send every dead letter of this hook again' : 'No dead letter', onclick: () => redeliver(hk, null),
          }, 'Redeliver dead'));
        }
        return h('tr', { 'data-hook-id': hk.hook_id, class: hk.hook_id === selected ? 'selected' : null },
          h('td', { class: 'num' }, String(hk.hook_id)),
          h('td', null, h('code', null, hk.component)),
          h('td', { class: 'num' }, String(hk.pending)),
          h('td', { class: 'num' }, String(hk.delivered)),
          h('td', { class: 'num' }, hk.dead ? h('span', { class: 'dead-count' }, String(hk.dead)) : '0'),
          h('td', { class: 'row-actions' }, actions));
      }));
      if (!hooks.length) tbody.append(h('tr', null, h('td', { colspan: '6' }, empty('No hook has had anything to deliver yet.'))));
    };

    const loadDeliveries = async () => {
      const hk = hooks.find((x) => x.hook_id === selected);
      if (!hk) { deliveriesCard.hidden = true; return; }
      deliveriesCard.hidden = false;
      deliveriesTitle.textContent = `Deliveries of hook ${hk.hook_id} · ${hk.component}`;
      stateTabs.replaceChildren(...['', ...DELIVERY_STATES].map((st) => h('button', {
        type: 'button', role: 'tab', class: `tab${(stateFilter || '') === st ? ' active' : ''}`, 'aria-selected': (stateFilter || '') === st ? 'true' : 'false',
        'data-filter': st || 'all',
        onclick: () => { stateFilter = st; cursor = null; prevCursors.length = 0; syncUrl(); loadDeliveries().catch(handleError); },
      }, st ? (st === 'dead' ? `Dead letters (${hk.dead})` : `${st[0].toUpperCase()}${st.slice(1)} (${hk[st]})`) : 'All')));
      const page = await api(withQuery(`/v1/hooks/${hk.hook_id}/deliveries`, { state: stateFilter, cursor, limit: 50 }), { signal });
      if (!ctx.isCurrent()) return;
      const rows = page.items.map((d) => h('tr', { 'data-delivery-id': d.id, 'data-state': d.state },
        h('td', { class: 'num' }, String(d.id)),
        h('td', null, h('a', { href: `/ui/tasks/${d.task_id}` }, `#${d.task_id}`)),
        h('td', null, d.step_id ? h('a', { href: `/ui/steps/${d.step_id}` }, d.step_name || `#${d.step_id}`) : h('span', { class: 'muted' }, '—')),
        h('td', null, h('code', null, d.event)),
        h('td', null, badge(d.state)),
        h('td', { class: 'num' }, String(d.attempts)),
        h('td', { class: 'message' }, d.last_error || h('span', { class: 'muted' }, '—')),
        h('td', { class: 'nowrap small' }, timeEl(d.event_at)),
        h('td', { class: 'nowrap small' }, d.state === 'pending' ? timeEl(d.next_attempt_at) : timeEl(d.finished_at)),
        h('td', null, d.state === 'dead' && can('hooks:redeliver')
          ? h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'redeliver-one', onclick: () => redeliver(hk, [d.id]) }, 'Redeliver')
          : null)));
      deliveriesEl.replaceChildren(rows.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'table table-dense' },
          h('thead', null, h('tr', null, ['#', 'Task', 'Step', 'Event', 'State', 'Attempts', 'Last error', 'Event at', 'Next / finished', ''].map((c) => h('th', null, c)))),
          h('tbody', null, rows)))
        : empty(stateFilter === 'dead' ? 'No dead letter.' : 'No delivery.'));
      pager.replaceChildren(
        h('button', { type: 'button', class: 'btn btn-small', disabled: !prevCursors.length, onclick: () => { cursor = prevCursors.pop(); loadDeliveries().catch(handleError); } }, '← Previous'),
        h('button', { type: 'button', class: 'btn btn-small', disabled: !page.next_cursor, onclick: () => { prevCursors.push(cursor); cursor = page.next_cursor; loadDeliveries().catch(handleError); } }, 'Next →'));
    };

    const select = (id, st) => {
      selected = id;
      stateFilter = st ?? stateFilter;
      cursor = null;
      prevCursors.length = 0;
      syncUrl();
      drawHooks();
      loadDeliveries().catch(handleError);
    };

    const loadHooks = async () => {
      hooks = await api('/v1/hooks', { signal });
      if (!ctx.isCurrent()) return;
      if (selected === null && hooks.length) {
        const withDead = hooks.find((x) => x.dead > 0);
        selected = (withDead || hooks[0]).hook_id;
        if (stateFilter === null) stateFilter = withDead ? 'dead' : '';
      }
      drawHooks();
      await loadDeliveries();
    };
    await loadHooks();
    // Deliveries move on by themselves: read again every few seconds.
    const timer = setInterval(() => { loadHooks().catch(() => { /* the next read says */ }); }, 4000);
    ctx.onLeave(() => clearInterval(timer));
  },
};
