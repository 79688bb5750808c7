// Health: what the store holds (tasks and steps by state), the ready and retry backlogs,
// expired leases and the connection pool; read again every few seconds.

import { h, api, stateLabel, fmtInt, fmtDuration, setTitle, card, TASK_STATES, STEP_STATES } from '../lib.js';

function bars(counts, states) {
  const total = counts.total || 0;
  const stack = h('div', { class: 'stack', 'aria-hidden': 'true' });
  for (const st of states) {
    const n = counts[st] || 0;
    if (!n || !total) continue;
    const seg = h('span', { class: 'stack-seg', 'data-state': st, title: `${stateLabel(st)}: ${n}` });
    seg.style.width = `${(n / total) * 100}%`;
    stack.append(seg);
  }
  return h('div', null,
    stack,
    h('ul', { class: 'count-list' }, states.map((st) => h('li', { 'data-state': st },
      h('span', { class: 'badge-dot', 'aria-hidden': 'true' }),
      h('span', { class: 'count-list-label' }, stateLabel(st)),
      h('span', { class: 'count-list-value' }, fmtInt(counts[st] || 0))))));
}

export default {
  page: 'health',
  title: 'Health',
  async render(ctx) {
    const { main, signal } = ctx;
    setTitle('Health');
    const body = h('div', { id: 'health' });
    const ready = h('span', { class: 'pill', id: 'health-ready' }, '…');
    const updated = h('span', { class: 'muted small' });
    main.append(
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, 'Health'), h('p', { class: 'subtitle' }, 'What the store holds and how busy it is.')),
        h('div', { class: 'actions' }, ready, updated)),
      body);

    const load = async () => {
      const [st, rd] = await Promise.all([
        api('/health/status', { signal }),
        api('/health/ready', { signal }).then((r) => ({ ok: true, r })).catch((e) => {
          if (e.name === 'AbortError') throw e;
          return { ok: false, detail: e.detail || e.message };
        }),
      ]);
      if (!ctx.isCurrent()) return;
      ready.dataset.health = rd.ok ? 'healthy' : 'unhealthy';
      ready.textContent = rd.ok ? `store ready (${rd.r.store})` : `store not ready: ${rd.detail}`;
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      const poolPct = st.pool.max ? (st.pool.active / st.pool.max) * 100 : 0;
      const poolFill = h('span', { class: 'progress-fill' });
      poolFill.style.width = `${poolPct}%`;
      const metric = (label, value, hint, attrs = {}) => h('div', { class: 'metric', ...attrs },
        h('div', { class: 'metric-value' }, value), h('div', { class: 'metric-label' }, label), hint ? h('div', { class: 'metric-hint' }, hint) : null);
      body.replaceChildren(
        h('div', { class: 'metrics' },
          metric('store', st.store, null, { 'data-metric': 'store' }),
          metric('ready backlog', fmtInt(st.ready_backlog), 'steps claimable now', { 'data-metric': 'ready_backlog' }),
          metric('oldest ready step', st.oldest_ready_age_seconds ? fmtDuration(st.oldest_ready_age_seconds * 1000) : '—', 'how long it has waited', { 'data-metric': 'oldest_ready_age_seconds' }),
          metric('retry backlog', fmtInt(st.retry_backlog), 'steps waiting for a retry instant', { 'data-metric': 'retry_backlog' }),
          metric('expired leases', fmtInt(st.expired_leases), 'held by workers that stopped answering', { 'data-metric': 'expired_leases', class: st.expired_leases ? 'metric warn' : 'metric' }),
          metric('pool', `${st.pool.active} / ${st.pool.max}`, h('span', { class: 'progress' }, poolFill), { 'data-metric': 'pool' })),
        h('div', { class: 'grid-2' },
          card(`Tasks · ${fmtInt(st.tasks.total)}`, null, bars(st.tasks, TASK_STATES)),
          card(`Steps · ${fmtInt(st.steps.total)}`, null, bars(st.steps, STEP_STATES))),
      );
    };
    await load();
    const timer = setInterval(() => { load().catch(() => { /* shown on the next success */ }); }, 5000);
    ctx.onLeave(() => clearInterval(timer));
  },
};
