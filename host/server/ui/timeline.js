// The timeline of a task's attempts, as Temporal draws it: a row per step, a bar per
// attempt from its start to its end, coloured by outcome; a running attempt is a bar that
// grows to now.

import { h, stateLabel, fmtDuration, fmtClock, fmtTime } from './lib.js';

const MAX_ROWS = 100;

function niceStep(span, target = 6) {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-3)));
  for (const m of [1, 2, 5, 10]) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

function offsetLabel(ms) {
  if (ms === 0) return '0';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${+(ms / 1000).toFixed(ms % 1000 ? 1 : 0)} s`;
  if (ms < 3600000) {
    const m = Math.floor(ms / 60000);
    const sec = Math.round((ms % 60000) / 1000);
    return sec ? `${m}m${String(sec).padStart(2, '0')}s` : `${m} min`;
  }
  return `${+(ms / 3600000).toFixed(1)} h`;
}

/**
 * Draws the timeline into `el` (#timeline). `attempts`: the task's attempts (each with
 * step_id, step_name, attempt, outcome, error_kind, started_at, finished_at, wall_us);
 * `running`: [{step_id, step_name, attempt, since}] for attempts under way;
 * `start`/`end`: the task's instants (end null while it runs).
 */
export function drawTimeline(el, { attempts, running, start, end, now = Date.now() }) {
  el.replaceChildren();
  const bars = [];
  for (const a of attempts) {
    const s0 = new Date(a.started_at).getTime();
    const s1 = new Date(a.finished_at).getTime();
    if (Number.isNaN(s0)) continue;
    bars.push({ ...a, t0: s0, t1: Number.isNaN(s1) ? s0 : Math.max(s1, s0) });
  }
  for (const r of running) {
    const s0 = new Date(r.since).getTime();
    if (Number.isNaN(s0)) continue;
    bars.push({ step_id: r.step_id, step_name: r.step_name, attempt: r.attempt, outcome: 'in_progress', t0: s0, t1: Math.max(now, s0), running: true });
  }
  if (!bars.length) {
    el.append(h('div', { class: 'empty' }, 'No attempt has started yet.'));
    return;
  }

  let t0 = Math.min(...bars.map((b) => b.t0));
  const startMs = start ? new Date(start).getTime() : NaN;
  if (!Number.isNaN(startMs) && startMs < t0) t0 = startMs;
  let t1 = Math.max(...bars.map((b) => b.t1));
  const endMs = end ? new Date(end).getTime() : NaN;
  if (running.length) t1 = Math.max(t1, now);
  else if (!Number.isNaN(endMs)) t1 = Math.max(t1, endMs);
  const span = Math.max(t1 - t0, 1);
  const pct = (t) => ((t - t0) / span) * 100;

  // A row per step, in the order each first started.
  const rows = new Map();
  for (const b of bars.sort((x, y) => x.t0 - y.t0 || x.attempt - y.attempt)) {
    if (!rows.has(b.step_id)) rows.set(b.step_id, { id: b.step_id, name: b.step_name, bars: [] });
    rows.get(b.step_id).bars.push(b);
  }
  const all = [...rows.values()];
  const shown = all.slice(0, MAX_ROWS);

  const step = niceStep(span);
  const ticks = [];
  for (let t = 0; t <= span + 1e-6; t += step) ticks.push(t);

  const grid = h('div', { class: 'tl-grid', 'aria-hidden': 'true' },
    ticks.map((t) => {
      const line = h('div', { class: 'tl-gridline' });
      line.style.left = `${(t / span) * 100}%`;
      return line;
    }));
  grid.style.gridRow = `1 / ${shown.length + 2}`;

  const axis = h('div', { class: 'tl-axis' },
    ticks.map((t) => {
      const lab = h('span', { class: 'tl-tick' }, offsetLabel(t));
      lab.style.left = `${(t / span) * 100}%`;
      return lab;
    }));

  const children = [
    h('div', { class: 'tl-corner' }, h('span', { class: 'muted', title: new Date(t0).toISOString() }, `from ${fmtTime(new Date(t0).toISOString())}`)),
    axis,
    grid,
  ];
  shown.forEach((row, i) => {
    const track = h('div', { class: 'tl-track', 'data-row': row.name });
    track.style.gridRow = String(i + 2);
    for (const b of row.bars) {
      const dur = b.running ? now - b.t0 : (b.wall_us !== undefined && b.wall_us !== null ? b.wall_us / 1000 : b.t1 - b.t0);
      const kind = b.error_kind ? ` (${b.error_kind})` : '';
      const when = `${fmtClock(new Date(b.t0).toISOString())} → ${b.running ? 'now' : fmtClock(new Date(b.t1).toISOString())}`;
      const bar = h('a', {
        class: `tl-bar${b.running ? ' running' : ''}`,
        href: `/ui/steps/${b.step_id}`,
        'data-attempt': b.attempt,
        'data-step': b.step_name,
        'data-outcome': b.outcome,
        title: `${b.step_name} · attempt ${b.attempt} · ${stateLabel(b.outcome)}${kind}\n${fmtDuration(dur)}, ${when}`,
      }, h('span', { class: 'tl-bar-label' }, `#${b.attempt} ${fmtDuration(dur)}`));
      bar.style.left = `${pct(b.t0)}%`;
      bar.style.width = `${Math.max(0, pct(b.t1) - pct(b.t0))}%`;
      track.appendChild(bar);
    }
    const label = h('a', { class: 'tl-label', href: `/ui/steps/${row.id}`, title: row.name, 'data-row': row.name }, row.name);
    label.style.gridRow = String(i + 2);
    children.push(label, track);
  });
  el.append(h('div', { class: 'tl' }, children));
  if (all.length > shown.length) {
    el.append(h('p', { class: 'muted small' }, `Showing the first ${shown.length} of ${all.length} steps that ran.`));
  }
}

/** The outcomes' colours, in words. */
export function outcomeLegend() {
  return h('ul', { class: 'legend' },
    ['completed', 'failed', 'lease_lost', 'released', 'cancelled', 'in_progress'].map((o) =>
      h('li', { 'data-outcome': o }, h('span', { class: 'legend-swatch', 'aria-hidden': 'true' }), o === 'in_progress' ? 'Running' : stateLabel(o))));
}
