// A step: its state, every attempt with what it cost, what each attempt said (logs,
// stdout, stderr), its events (the task's stream, filtered on the step), its result, its
// definition in the template, and a form to resolve it by hand.

import {
  h, api, badge, timeEl, fmtMicros, fmtBytes, fmtCount, fmtInt, hashEl, jsonBlock, facts, card,
  openStream, refresher, can, confirmDialog, notice, handleError, showError, stateLabel, templateApi,
  templateHref, empty, setTitle, fmtClock, fmtDuration,
} from '../lib.js';

const RESOLVABLE = new Set(['pending', 'waiting_for_retry', 'error']);

function attemptsTable(el, step) {
  el.replaceChildren();
  const rows = step.attempt_history.map((a) => h('tr', { 'data-attempt': a.attempt, 'data-outcome': a.outcome },
    h('td', { class: 'num' }, h('a', { href: `#attempt-${a.attempt}`, title: 'Its logs' }, String(a.attempt))),
    h('td', null, badge(a.outcome)),
    h('td', null, a.error_kind ? h('code', null, a.error_kind) : h('span', { class: 'muted' }, '—')),
    h('td', { class: 'message' }, a.message || h('span', { class: 'muted' }, '—')),
    h('td', null, a.decision ? h('span', { class: 'decision', 'data-decision': a.decision }, a.decision) : h('span', { class: 'muted' }, '—'),
      a.next_ready_at ? h('div', { class: 'muted small' }, 'next ', timeEl(a.next_ready_at, { clock: true })) : null),
    h('td', { class: 'small' }, a.decided_by || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num', title: a.fuel !== undefined ? `${fmtInt(a.fuel)} units of fuel` : '' }, a.fuel !== undefined ? fmtCount(a.fuel) : '—'),
    h('td', { class: 'num', title: a.peak_memory_bytes !== undefined ? `${fmtInt(a.peak_memory_bytes)} bytes` : '' }, a.peak_memory_bytes !== undefined ? fmtBytes(a.peak_memory_bytes) : '—'),
    h('td', { class: 'num', title: a.wall_us !== undefined ? `${fmtInt(a.wall_us)} µs` : '' }, fmtMicros(a.wall_us)),
    h('td', null, hashEl(a.plugin_hash)),
    h('td', { class: 'small mono' }, a.worker || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'nowrap small' }, timeEl(a.started_at, { clock: true })),
    h('td', { class: 'nowrap small' }, timeEl(a.finished_at, { clock: true })),
  ));
  if (!rows.length) {
    el.append(empty(step.state === 'in_progress' ? 'The first attempt is running.' : 'No attempt yet.'));
    return;
  }
  el.append(h('div', { class: 'table-wrap' }, h('table', { class: 'table table-dense' },
    h('thead', null, h('tr', null,
      ['#', 'Outcome', 'Error kind', 'Message', 'Decision', 'Decided by', 'Fuel', 'Peak memory', 'Wall time', 'Plugin', 'Worker', 'Started', 'Finished']
        .map((c, i) => h('th', { class: i === 0 || (i >= 6 && i <= 8) ? 'num' : null }, c)))),
    h('tbody', null, rows))));
}

// The attempt's outbound HTTP requests (granted and refused), as the host recorded them.
function httpTable(calls) {
  const rows = calls.map((c) => h('tr', { class: c.refused ? 'http-refused' : null, 'data-http-status': c.status ?? '' },
    h('td', { class: 'num' }, `+${fmtDuration(c.at_us / 1000)}`),
    h('td', null, c.method),
    h('td', null, h('code', null, c.url)),
    h('td', { class: 'num' }, c.status ?? '-'),
    h('td', { class: 'num' }, fmtBytes(c.request_bytes)),
    h('td', { class: 'num' }, fmtBytes(c.response_bytes)),
    h('td', { class: 'num' }, fmtDuration(c.duration_us / 1000)),
    h('td', null, c.refused ? `refused${c.error ? `: ${c.error}` : ''}` : (c.error || ''))));
  return h('div', { class: 'http-calls' },
    h('div', { class: 'stdio-name' }, 'HTTP requests'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-dense' },
      h('thead', null, h('tr', null, ['At', 'Method', 'URL', 'Status', 'Sent', 'Received', 'Took', 'Note']
        .map((c, i) => h('th', { class: [0, 3, 4, 5, 6].includes(i) ? 'num' : null }, c)))),
      h('tbody', null, rows))));
}

function logsView(el, logs) {
  el.replaceChildren();
  if (!logs.attempts.length) {
    el.append(empty('No attempt has said anything (an attempt that logs nothing stores nothing).'));
    return;
  }
  const silent = [];
  for (const a of [...logs.attempts].reverse()) {
    const http = a.http || [];
    const said = a.lines.length || a.stdout || a.stderr || http.length;
    const dropped = a.dropped && (a.dropped.lines || a.dropped.stdout_bytes || a.dropped.stderr_bytes)
      ? h('p', { class: 'warn small' }, `Dropped by the attempt's bounds: ${a.dropped.lines} lines, ${fmtBytes(a.dropped.stdout_bytes)} of stdout, ${fmtBytes(a.dropped.stderr_bytes)} of stderr.`)
      : null;
    if (!said && !dropped) {
      silent.push(a);
      continue;
    }
    const lines = a.lines.map((l) => h('div', { class: 'log-line', 'data-level': l.level },
      h('span', { class: 'log-at' }, `+${fmtDuration(l.at_us / 1000)}`),
      h('span', { class: 'log-level' }, l.level),
      h('span', { class: 'log-msg' }, l.message)));
    const stream = (name, text) => (text
      ? h('div', { class: 'stdio' }, h('div', { class: 'stdio-name' }, name), h('pre', { class: `stdio-text stdio-${name}` }, text))
      : null);
    el.append(h('section', { class: 'log-attempt', id: `attempt-${a.attempt}`, 'data-attempt': a.attempt },
      h('header', { class: 'log-head' },
        h('strong', null, `Attempt ${a.attempt}`), ' ', badge(a.outcome),
        h('span', { class: 'muted small' }, ' ', timeEl(a.started_at, { clock: true }), ' → ', timeEl(a.finished_at, { clock: true }))),
      lines.length ? h('div', { class: 'log-lines' }, lines) : null,
      http.length ? httpTable(http) : null,
      stream('stdout', a.stdout),
      stream('stderr', a.stderr),
      dropped));
  }
  if (silent.length) {
    const nums = silent.map((a) => a.attempt).sort((x, y) => x - y);
    el.append(h('p', { class: 'muted small silent', 'data-silent-attempts': nums.join(',') },
      `${nums.length === 1 ? 'Attempt' : 'Attempts'} ${nums.join(', ')} logged nothing and wrote nothing to stdout or stderr.`));
  }
}

function eventRow(ev) {
  const d = ev.data || {};
  const what = d.from_state || d.to_state
    ? h('span', null, d.from_state ? badge(d.from_state) : null, d.from_state ? h('span', { class: 'arrow' }, ' → ') : null, d.to_state ? badge(d.to_state) : null)
    : null;
  const payload = d.payload && typeof d.payload === 'object' && Object.keys(d.payload).length
    ? h('code', { class: 'payload' }, JSON.stringify(d.payload))
    : null;
  return h('li', { class: 'event', 'data-event': ev.event, 'data-event-id': ev.id || '' },
    h('span', { class: 'event-at', title: d.at || '' }, fmtClock(d.at)),
    h('span', { class: 'event-name' }, ev.event),
    what,
    d.attempt ? h('span', { class: 'muted small' }, `attempt ${d.attempt}`) : null,
    payload);
}

export default {
  page: 'step',
  nav: 'tasks',
  title: 'Step',
  async render(ctx) {
    const { main, params, signal } = ctx;
    const id = Number(params.id);
    setTitle(`Step #${id}`);
    let step = await api(`/v1/steps/${id}`, { signal });
    if (!ctx.isCurrent()) return;
    setTitle(`${step.name} · step #${id}`);

    const stateBadge = badge(step.state, { id: 'step-state' });
    const taskLink = h('a', { href: `/ui/tasks/${step.task_id}` }, `Task #${step.task_id}`);
    const factsBox = h('div');
    const attemptsEl = h('div', { id: 'attempts' });
    const logsEl = h('div', { id: 'logs', class: 'logs' });
    const eventsList = h('ol', { class: 'events' });
    const eventsEl = h('div', { id: 'events' }, eventsList);
    const resultEl = h('div', { id: 'result' });
    const configEl = h('div', { id: 'config' });
    const tplLink = h('span');

    let form = null;
    let resolveBtn = null;
    let textarea = null;
    if (can('steps:resolve')) {
      textarea = h('textarea', { name: 'result', rows: '5', spellcheck: 'false', placeholder: '{"shipped": true}', 'aria-label': 'Result (JSON)' });
      resolveBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-action': 'resolve' }, 'Resolve step');
      form = h('form', { id: 'resolve-form', class: 'resolve-form' },
        h('p', { class: 'muted small' }, 'Mark the step done by hand: its children run with this result (JSON, optional).'),
        textarea,
        h('div', { class: 'form-actions' }, resolveBtn));
    }

    main.append(
      h('div', { class: 'page-head' },
        h('div', null,
          h('div', { class: 'crumbs' }, h('a', { href: '/ui/tasks' }, 'Tasks'), ' / ', taskLink, ' / ', step.name),
          h('h1', null, `${step.name} `, stateBadge),
          h('p', { class: 'subtitle' }, `Step #${id} of `, h('a', { href: `/ui/tasks/${step.task_id}` }, `task #${step.task_id}`), tplLink))),
      h('div', { class: 'grid-2' },
        card('Step', null, factsBox),
        card('Result', null, resultEl)),
      card('Attempts', null, attemptsEl),
      card('Logs', null, logsEl),
      h('div', { class: 'grid-2' },
        card('Events', null, eventsEl),
        card('Config', null, configEl)),
      form ? card('Resolve by hand', { id: 'resolve-card' }, form) : null,
    );

    const draw = () => {
      stateBadge.dataset.state = step.state;
      stateBadge.title = step.state;
      stateBadge.lastChild.textContent = stateLabel(step.state);
      if (resolveBtn) {
        resolveBtn.disabled = !RESOLVABLE.has(step.state);
        resolveBtn.title = resolveBtn.disabled ? `A ${stateLabel(step.state).toLowerCase()} step cannot be resolved` : '';
      }
      factsBox.replaceChildren(facts([
        ['State', badge(step.state)],
        ['Task', h('a', { href: `/ui/tasks/${step.task_id}` }, `#${step.task_id}`)],
        ['Attempts', `${step.attempts} of ${step.max_attempts}`],
        ['Retryable', step.retryable ? 'yes' : 'no'],
        ['Lease losses', String(step.lease_losses)],
        ['Last error', step.last_error_kind ? h('code', null, step.last_error_kind) : null],
        ['Worker', step.worker ? h('code', null, step.worker) : null],
        ['Ready at', timeEl(step.ready_at)],
        ['Finished', timeEl(step.finished_at)],
      ]));
      resultEl.replaceChildren(step.result !== undefined
        ? jsonBlock(step.result)
        : h('p', { class: 'muted' }, step.state === 'complete' ? 'The step returned nothing.' : 'No result yet.'));
      attemptsTable(attemptsEl, step);
    };
    draw();

    const readLogs = async () => {
      try {
        logsView(logsEl, await api(`/v1/steps/${id}/logs`, { signal }));
      } catch (e) {
        if (e.name === 'AbortError') return;
        logsEl.replaceChildren(empty(`Logs unavailable: ${e.detail || e.message}`));
      }
    };

    // The step's definition in its template.
    const readConfig = async () => {
      try {
        const task = await api(`/v1/tasks/${step.task_id}`, { signal });
        const href = templateHref(task.template);
        tplLink.replaceChildren(' · ', href ? h('a', { href }, task.template) : task.template);
        const tpl = await api(templateApi(task.template), { signal });
        const def = (tpl.definition.steps || []).find((x) => x.name === step.name);
        configEl.replaceChildren(def ? jsonBlock(def) : empty('This step is not in its template.'));
      } catch (e) {
        if (e.name === 'AbortError') return;
        configEl.replaceChildren(empty(`The definition is unavailable: ${e.detail || e.message}`));
      }
    };
    await Promise.all([readLogs(), readConfig()]);
    if (!ctx.isCurrent()) return;

    // --- events, live -----------------------------------------------------------------
    const noEvents = h('li', { class: 'empty' }, 'No event yet.');
    eventsList.append(noEvents);
    const again = refresher(async () => {
      step = await api(`/v1/steps/${id}`, { signal });
      if (!ctx.isCurrent()) return;
      draw();
      await readLogs();
    }, 1000);
    let pending = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      if (!pending.length) return;
      if (noEvents.isConnected) noEvents.remove();
      eventsList.append(...pending.map(eventRow));
      pending = [];
    };
    let taskOver = false;
    const stream = openStream(`/v1/tasks/${step.task_id}/events`, {
      onEvent: (ev) => {
        const d = ev.data || {};
        if (ev.event === 'task.transition' && (d.to_state === 'complete' || d.to_state === 'cancelled')) taskOver = true;
        if (d.step_id !== id) return;
        pending.push(ev);
        if (!frame) frame = requestAnimationFrame(flush);
        if (ev.event === 'step.transition') {
          // Shown at once; the step is read again (at most once a second) for the rest.
          if (d.from_state === step.state && d.to_state) {
            step.state = d.to_state;
            draw();
          }
          again.poke();
        }
      },
      reconnect: () => !taskOver,
    });
    ctx.onLeave(() => { stream.close(); again.stop(); if (frame) cancelAnimationFrame(frame); });

    // --- resolve ----------------------------------------------------------------------
    if (form) {
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const text = textarea.value.trim();
        let body = {};
        if (text) {
          try {
            body = { result: JSON.parse(text) };
          } catch (err) {
            showError(`The result is not JSON: ${err.message}`);
            textarea.focus();
            return;
          }
        }
        const yes = await confirmDialog({
          title: `Resolve ${step.name}?`,
          message: text ? 'The step counts as done with this result; its children may run.' : 'The step counts as done with no result; its children may run.',
          yes: 'Resolve step',
        });
        if (!yes || !ctx.isCurrent()) return;
        resolveBtn.disabled = true;
        try {
          const out = await api(`/v1/steps/${id}/resolve`, { method: 'POST', json: body, signal });
          notice(`${step.name} resolved: ${out.ready_children} child step${out.ready_children === 1 ? '' : 's'} ready; the task is ${stateLabel(out.task_state).toLowerCase()}.`);
        } catch (err) {
          handleError(err);
        }
        again.poke();
        draw();
      });
    }
  },
};
