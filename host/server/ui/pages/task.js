// A task: its header and actions, its DAG drawn live from the task's SSE stream, the
// timeline of attempts, the execution context and why each unrun step is not ready.
//
// Events are queued and applied at the next animation frame (many events, one repaint);
// the task and its attempts are read again at most once a second after events, for what
// events do not carry (readiness, countdowns, the execution context, the timeline).

import {
  h, api, badge, timeEl, fmtDuration, fmtCountdown, templateHref, templateApi, openStream, refresher,
  can, confirmDialog, notice, handleError, jsonBlock, facts, card, navigate, STEP_STATES, stateLabel,
  empty, setTitle, s, fill,
} from '../lib.js';
import { drawDag, dagToolbar, legend } from '../dag.js';
import { drawTimeline, outcomeLegend } from '../timeline.js';

const TERMINAL_TASK = new Set(['complete', 'cancelled']);

/** The outcome of an attempt that ended in this step state (before the attempt is read). */
const OUTCOME_OF = {
  complete: 'completed',
  waiting_for_retry: 'failed',
  error: 'failed',
  cancelled: 'cancelled',
  pending: 'released',
};

/** The attempt a node shows: the one running, else the last that ran. */
const shownAttempt = (st) => (st.state === 'in_progress' ? st.attempts + 1 : st.attempts);
const MAX_READINESS_ROWS = 100;

function executionView(el, ex, task) {
  el.replaceChildren();
  if (!ex) {
    el.append(empty('No execution context.'));
    return;
  }
  const pct = Math.max(0, Math.min(100, Number(ex.completion_percentage) || 0));
  const fill = h('span', { class: 'progress-fill' });
  fill.style.width = `${pct}%`;
  const bar = h('div', { class: 'progress progress-large', 'data-state': task.state, role: 'progressbar', 'aria-valuenow': pct.toFixed(0), 'aria-valuemin': '0', 'aria-valuemax': '100' }, fill);
  const stat = (label, value, state) => h('div', { class: 'stat', 'data-state': state || null },
    h('span', { class: 'stat-value' }, String(value ?? 0)), h('span', { class: 'stat-label' }, label));
  el.append(
    h('div', { class: 'exec-top' },
      h('div', { class: 'exec-pct' }, h('strong', null, `${pct.toFixed(pct % 1 ? 1 : 0)}%`), h('span', { class: 'muted' }, ' complete')),
      h('div', { class: 'exec-pills' },
        h('span', { class: 'pill', 'data-kind': 'status', title: 'execution_status' }, h('span', { class: 'pill-key' }, 'status'), ex.execution_status),
        h('span', { class: 'pill', 'data-kind': 'health', 'data-health': ex.health_status, title: 'health_status' }, h('span', { class: 'pill-key' }, 'health'), ex.health_status),
        h('span', { class: 'pill', 'data-kind': 'action', title: 'recommended_action' }, h('span', { class: 'pill-key' }, 'next'), ex.recommended_action))),
    bar,
    h('div', { class: 'stats' },
      stat('steps', ex.total_steps),
      stat('pending', ex.pending_steps, 'pending'),
      stat('ready', ex.ready_steps, 'pending'),
      stat('in progress', ex.in_progress_steps, 'in_progress'),
      stat('waiting', ex.waiting_for_retry_steps, 'waiting_for_retry'),
      stat('complete', ex.completed_steps, 'complete'),
      stat('resolved', ex.resolved_steps, 'resolved_manually'),
      stat('failed', ex.failed_steps, 'error'),
      stat('cancelled', ex.cancelled_steps, 'cancelled')),
  );
}

function readinessView(el, steps) {
  const unrun = steps
    .filter((st) => st.readiness && st.readiness.reason)
    .sort((a, b) => a.level - b.level || a.name.localeCompare(b.name));
  // Drawn again only when something in it changed.
  const sig = `${unrun.length}|${unrun.slice(0, MAX_READINESS_ROWS).map((st) => `${st.id}:${st.state}:${st.attempts}:${st.readiness.reason}:${st.readiness.next_retry_at || ''}`).join(',')}`;
  if (el.dataset.sig === sig) return;
  el.dataset.sig = sig;
  el.replaceChildren();
  if (!unrun.length) {
    el.append(empty('Every step has run or is running.'));
    return;
  }
  const rows = unrun.slice(0, MAX_READINESS_ROWS).map((st) => {
    const r = st.readiness;
    const retry = r.next_retry_at
      ? h('span', { class: 'countdown', 'data-at': r.next_retry_at, title: r.next_retry_at }, fmtCountdown(r.next_retry_at))
      : h('span', { class: 'muted' }, '—');
    return h('tr', { 'data-step': st.name, 'data-step-id': st.id, 'data-ready': r.ready ? '1' : '0' },
      h('td', null, h('a', { href: `/ui/steps/${st.id}` }, st.name)),
      h('td', null, badge(st.state)),
      h('td', { class: 'reason' }, r.ready ? h('span', { class: 'ready-yes' }, r.reason) : r.reason),
      h('td', { class: 'num' }, `${r.completed_parents}/${r.total_parents}`),
      h('td', { class: 'num' }, `${st.attempts}/${st.max_attempts}`),
      h('td', { class: 'nowrap' }, retry));
  });
  el.append(h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'Step'), h('th', null, 'State'), h('th', null, 'Why not running'),
      h('th', { class: 'num' }, 'Parents done'), h('th', { class: 'num' }, 'Attempts'), h('th', null, 'Retry in'))),
    h('tbody', null, rows))));
  if (unrun.length > rows.length) el.append(h('p', { class: 'muted small' }, `And ${unrun.length - rows.length} more.`));
}

function stepsTable(steps) {
  const rows = [...steps].sort((a, b) => a.level - b.level || a.name.localeCompare(b.name)).map((st) =>
    h('tr', { 'data-step-row': st.name },
      h('td', { class: 'num' }, String(st.level)),
      h('td', null, h('a', { href: `/ui/steps/${st.id}` }, st.name)),
      h('td', null, badge(st.state)),
      h('td', { class: 'num' }, `${st.attempts}/${st.max_attempts}`),
      h('td', null, st.last_error_kind ? h('code', null, st.last_error_kind) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'nowrap' }, timeEl(st.finished_at))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
    h('thead', null, h('tr', null, h('th', { class: 'num' }, 'Level'), h('th', null, 'Step'), h('th', null, 'State'),
      h('th', { class: 'num' }, 'Attempts'), h('th', null, 'Last error'), h('th', null, 'Finished'))),
    h('tbody', null, rows)));
}

export default {
  page: 'task',
  nav: 'tasks',
  title: 'Task',
  async render(ctx) {
    const { main, params, signal } = ctx;
    const id = Number(params.id);
    setTitle(`Task #${id}`);

    let task = await api(`/v1/tasks/${id}`, { signal });
    if (!ctx.isCurrent()) return;

    // --- header and actions -----------------------------------------------------------
    const stateBadge = badge(task.state, { id: 'task-state' });
    const actions = h('div', { class: 'actions' });
    let cancelBtn = null;
    let retryBtn = null;
    if (can('tasks:retry')) {
      retryBtn = h('button', { type: 'button', class: 'btn btn-primary', 'data-action': 'retry', title: 'Give the failed steps a fresh attempt budget' }, 'Retry');
      actions.append(retryBtn);
    }
    if (can('tasks:cancel')) {
      cancelBtn = h('button', { type: 'button', class: 'btn btn-danger-outline', 'data-action': 'cancel', title: 'Cancel the task and its unfinished steps' }, 'Cancel');
      actions.append(cancelBtn);
    }
    const subtitle = h('p', { class: 'subtitle' });
    const head = h('div', { class: 'page-head' },
      h('div', null,
        h('div', { class: 'crumbs' }, h('a', { href: '/ui/tasks' }, 'Tasks'), ' / ', `#${id}`),
        h('h1', null, `Task #${id} `, stateBadge),
        subtitle),
      actions);
    const factsBox = h('div');
    const execEl = h('div', { id: 'execution', class: 'execution' });
    const readinessEl = h('div', { id: 'readiness' });
    const timelineEl = h('div', { id: 'timeline', class: 'timeline' });
    const svg = s('svg', { id: 'dag', class: 'dag', role: 'img', 'aria-label': `The steps of task ${id}` });
    const toolbar = dagToolbar();
    const live = h('span', { class: 'live', title: 'The graph follows the task as it runs' }, h('span', { class: 'live-dot' }), 'Live');
    const contextBox = h('div');
    const stepsBox = h('details', { class: 'steps-details' }, h('summary', null, `All steps (${task.steps.length})`));

    main.append(
      head,
      card('Graph', { actions: [live, toolbar.el], cls: 'card-dag' },
        h('div', { class: 'dag-frame' }, svg),
        legend(STEP_STATES)),
      h('div', { class: 'grid-2' },
        card('Task', { cls: 'card-facts' }, factsBox),
        card('Execution', { cls: 'card-exec' }, execEl)),
      card('Timeline', { actions: outcomeLegend() }, timelineEl),
      card('Not running, and why', null, readinessEl),
      card('Steps', null, stepsBox),
      card('Context', null, contextBox),
    );

    const drawHeader = () => {
      stateBadge.dataset.state = task.state;
      stateBadge.title = task.state;
      stateBadge.lastChild.textContent = stateLabel(task.state);
      if (retryBtn) retryBtn.disabled = task.state !== 'error';
      if (cancelBtn) cancelBtn.disabled = TERMINAL_TASK.has(task.state);
      const tplHref = templateHref(task.template);
      fill(subtitle,
        tplHref ? h('a', { href: tplHref }, task.template) : task.template,
        task.identity_key ? [' · ', h('span', { class: 'mono' }, task.identity_key)] : null,
        (task.tags || []).map((t) => [' ', h('span', { class: 'tag' }, t)]));
      const took = task.started_at
        ? fmtDuration((task.finished_at ? new Date(task.finished_at).getTime() : Date.now()) - new Date(task.started_at).getTime())
        : null;
      factsBox.replaceChildren(facts([
        ['Template', tplHref ? h('a', { href: tplHref }, task.template) : task.template],
        ['State', badge(task.state)],
        ['Identity key', task.identity_key ? h('code', null, task.identity_key) : null],
        ['Tags', (task.tags || []).length ? task.tags.map((t) => h('span', { class: 'tag' }, t)) : null],
        ['Steps', `${task.step_count - task.unfinished_steps} of ${task.step_count} finished${task.error_steps ? `, ${task.error_steps} in error` : ''}`],
        ['Created', timeEl(task.created_at)],
        ['Started', timeEl(task.started_at)],
        ['Finished', timeEl(task.finished_at)],
        ['Duration', took ? `${took}${task.finished_at ? '' : ' so far'}` : null],
        task.initiator ? ['Initiator', task.initiator] : null,
        task.source_system ? ['Source', task.source_system] : null,
        task.reason ? ['Reason', task.reason] : null,
        ['Traceparent', task.traceparent ? h('code', { class: 'traceparent' }, task.traceparent) : null],
      ]));
    };
    drawHeader();
    executionView(execEl, task.execution, task);
    readinessView(readinessEl, task.steps);
    contextBox.replaceChildren(h('details', null, h('summary', null, 'The task\'s context (JSON)'), jsonBlock(task.context, { id: 'task-context' })));
    stepsBox.addEventListener('toggle', () => {
      if (stepsBox.open) stepsBox.replaceChildren(stepsBox.firstChild, stepsTable(task.steps));
    });

    // --- the graph --------------------------------------------------------------------
    // The attempts are read while the graph is drawn.
    const attemptsP = api(`/v1/tasks/${id}/attempts`, { signal }).catch((e) => e);
    let edges = [];
    let handlers = new Map();
    const tplApi = templateApi(task.template);
    if (tplApi) {
      try {
        const tpl = await api(tplApi, { signal });
        edges = tpl.graph.edges || [];
        handlers = new Map((tpl.graph.nodes || []).map((n) => [n.name, n.handler]));
      } catch (e) {
        if (e.name === 'AbortError') return;
        // Without the template (templates:read), the graph has its levels but no edges.
        svg.setAttribute('aria-description', 'edges unavailable');
        notice(`The graph's edges need the template: ${e.detail || e.message}`);
      }
    }
    if (!ctx.isCurrent()) return;
    const byId = new Map(task.steps.map((st) => [st.id, st]));
    const dag = drawDag(svg, {
      nodes: task.steps.map((st) => ({
        id: st.id, name: st.name, level: st.level, state: st.state,
        attempts: shownAttempt(st), max_attempts: st.max_attempts, handler: handlers.get(st.name),
      })),
      edges,
      states: true,
      toolbar,
      onOpen: (rec) => navigate(`/ui/steps/${rec.id}`),
    });
    const setCountdowns = () => {
      for (const st of task.steps) {
        const r = st.readiness;
        dag.setCountdown(st.id, st.state === 'waiting_for_retry' && r && r.next_retry_at ? r.next_retry_at : null);
      }
    };
    setCountdowns();
    ctx.onLeave(() => dag.destroy());

    // --- the timeline -----------------------------------------------------------------
    const running = new Map(); // step id → {step_id, step_name, attempt, since}
    // Attempts that ended by the events but are not yet in the attempts read.
    const ended = new Map(); // "step:attempt" → an attempt as the timeline draws it
    let attempts = [];
    let tlDirty = false;
    const drawTl = () => {
      tlDirty = false;
      const known = new Set(attempts.map((a) => `${a.step_id}:${a.attempt}`));
      for (const k of ended.keys()) if (known.has(k)) ended.delete(k);
      drawTimeline(timelineEl, {
        attempts: ended.size ? attempts.concat([...ended.values()]) : attempts,
        running: [...running.values()].filter((r) => byId.get(r.step_id)?.state === 'in_progress'),
        start: task.started_at || task.created_at,
        end: task.finished_at,
      });
    };
    const att = await attemptsP;
    if (!ctx.isCurrent()) return;
    if (att instanceof Error) {
      if (att.name === 'AbortError') return;
      handleError(att);
    } else {
      attempts = att.attempts || [];
    }
    drawTl();

    // --- live: events at the next frame, a re-read at most once a second ---------------
    const queue = [];
    let frame = 0;
    let seq = 0;                 // counts applied events
    const touched = new Map();   // step id → seq of the last event applied to it
    let taskTouched = 0;

    const flush = () => {
      frame = 0;
      const batch = queue.splice(0);
      for (const ev of batch) {
        const d = ev.data;
        if (!d) continue;
        if (ev.event === 'step.transition' && d.step_id !== null && d.step_id !== undefined) {
          const st = byId.get(d.step_id);
          if (!st) continue;
          // An event applies to the state it leaves: the history replayed at the start of
          // the stream (already in the task we read) changes nothing.
          if (d.from_state !== st.state) continue;
          st.state = d.to_state;
          // `attempts` counts the attempts of the step's budget that ended (an event names
          // an attempt by its number over every budget, which a task retry renews).
          if (d.from_state === 'in_progress' && d.to_state !== 'cancelled') st.attempts += 1;
          seq += 1;
          touched.set(d.step_id, seq);
          dag.setState(d.step_id, d.to_state, shownAttempt(st));
        } else if (ev.event === 'task.transition') {
          if (d.from_state !== task.state) continue;
          task.state = d.to_state;
          seq += 1;
          taskTouched = seq;
          drawHeader();
        }
      }
    };

    const onEvent = (ev) => {
      const d = ev.data;
      if (d && ev.event === 'step.transition' && d.step_id !== null && d.step_id !== undefined) {
        if (d.to_state === 'in_progress') {
          running.set(d.step_id, { step_id: d.step_id, step_name: d.step_name || byId.get(d.step_id)?.name || '', attempt: d.attempt || 0, since: d.at });
          tlDirty = true;
        } else if (d.from_state === 'in_progress') {
          const r = running.get(d.step_id);
          running.delete(d.step_id);
          if (r) {
            ended.set(`${d.step_id}:${r.attempt}`, {
              step_id: d.step_id, step_name: r.step_name, attempt: r.attempt,
              outcome: OUTCOME_OF[d.to_state] || 'released', started_at: r.since, finished_at: d.at,
            });
          }
          tlDirty = true;
        }
      }
      queue.push(ev);
      if (!frame) frame = requestAnimationFrame(flush);
      reread.poke();
    };

    const reread = refresher(async () => {
      const startSeq = seq;
      const [fresh, att] = await Promise.all([
        api(`/v1/tasks/${id}`, { signal }),
        api(`/v1/tasks/${id}/attempts`, { signal }),
      ]);
      if (!ctx.isCurrent()) return;
      // What came by events since the read started is newer than the read.
      for (const st of fresh.steps) {
        const mine = byId.get(st.id);
        if (!mine) continue;
        if ((touched.get(st.id) || 0) > startSeq) {
          st.state = mine.state;
          st.attempts = mine.attempts;
        }
        Object.assign(mine, st);
        dag.setMax(st.id, st.max_attempts);
        dag.setState(st.id, st.state, shownAttempt(st));
      }
      const keepState = taskTouched > startSeq ? task.state : null;
      task = { ...fresh, steps: task.steps };
      if (keepState) task.state = keepState;
      attempts = att.attempts || [];
      drawHeader();
      executionView(execEl, fresh.execution, task);
      readinessView(readinessEl, task.steps);
      setCountdowns();
      drawTl();
      if (stepsBox.open) stepsBox.replaceChildren(stepsBox.firstChild, stepsTable(task.steps));
    }, 1000);

    const stream = openStream(`/v1/tasks/${id}/events`, {
      onOpen: () => live.classList.add('on'),
      onEvent,
      // The stream ends after the task completes or is cancelled: nothing more will come.
      reconnect: () => !TERMINAL_TASK.has(task.state),
      onEnd: () => { live.classList.remove('on'); reread.poke(); },
    });

    // Countdowns move every quarter second; a running attempt's bar grows every second.
    let ticks = 0;
    const timer = setInterval(() => {
      const now = Date.now();
      dag.tick(now);
      for (const el of readinessEl.querySelectorAll('.countdown[data-at]')) el.textContent = fmtCountdown(el.dataset.at, now);
      ticks += 1;
      if (tlDirty || (ticks % 4 === 0 && [...running.values()].some((r) => byId.get(r.step_id)?.state === 'in_progress'))) drawTl();
    }, 250);

    ctx.onLeave(() => {
      stream.close();
      reread.stop();
      clearInterval(timer);
      if (frame) cancelAnimationFrame(frame);
    });

    // --- actions ----------------------------------------------------------------------
    const act = async (what) => {
      const yes = await confirmDialog(what === 'cancel'
        ? { title: `Cancel task #${id}?`, message: 'The task and every unfinished step are cancelled. Running attempts are not waited for.', yes: 'Cancel task', danger: true }
        : { title: `Retry task #${id}?`, message: 'Its failed steps get a fresh attempt budget and run again.', yes: 'Retry task' });
      if (!yes || !ctx.isCurrent()) return;
      const btn = what === 'cancel' ? cancelBtn : retryBtn;
      btn.disabled = true;
      try {
        const out = await api(`/v1/tasks/${id}/${what}`, { method: 'POST', signal });
        notice(what === 'cancel'
          ? (out.cancelled ? `Task #${id} cancelled (${out.steps_cancelled} step${out.steps_cancelled === 1 ? '' : 's'}).` : `Task #${id} was already cancelled.`)
          : `Task #${id} retried: ${out.steps_reset} step${out.steps_reset === 1 ? '' : 's'} reset.`);
        if (what === 'retry' && stream.closed) {
          // Reopened by navigating again: simplest way to follow the new run.
          navigate(`/ui/tasks/${id}`, { replace: true });
          return;
        }
      } catch (e) {
        handleError(e);
      }
      drawHeader();
      reread.poke();
    };
    if (cancelBtn) cancelBtn.addEventListener('click', () => act('cancel'));
    if (retryBtn) retryBtn.addEventListener('click', () => act('retry'));
  },
};
