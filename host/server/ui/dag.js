// A DAG drawn as SVG, layered left to right: a column per level, nodes ordered within a
// column by a barycenter heuristic (a few sweeps down and up) to reduce edge crossings.
// The whole drawing is built in one DocumentFragment with positions computed here, so a
// 1,000-step task renders without reading the layout per node. Pan by dragging, zoom with
// the wheel or the buttons; both move the SVG's viewBox.

import { h, s, stateLabel, fmtCountdown } from './lib.js';

const NODE_W = 200;
const NODE_H = 48;
const GAP_X = 64;
const GAP_Y = 14;
const PAD = 24;
const PITCH_X = NODE_W + GAP_X;
const PITCH_Y = NODE_H + GAP_Y;
const DUMMY_PITCH = 18;
const FAR_SCALE = 0.4;
const NAME_CHARS = 24;
const META_CHARS = 27;

const SHORT = {
  pending: 'pending',
  in_progress: 'running',
  waiting_for_retry: 'retrying',
  complete: 'complete',
  error: 'error',
  cancelled: 'cancelled',
  resolved_manually: 'resolved',
};

const FINISHED = new Set(['complete', 'resolved_manually']);

function clip(text, n) {
  const t = String(text);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/**
 * Positions for `nodes` ({name, level}) and `edges` ({from, to}): a column per level, and
 * in each column an order that puts a node near the mean position of its neighbours. An
 * edge that spans several levels goes through a waypoint in each column it crosses (a
 * "dummy" node, narrower than a real one), so that it is ordered like a node and routed
 * around the nodes of those columns. Answers {pos, routes, width, height}: `routes` maps
 * an edge's index to its waypoints.
 */
export function layout(nodes, edges) {
  const byName = new Map();
  let maxLevel = 0;
  for (const n of nodes) {
    byName.set(n.name, n);
    if (n.level > maxLevel) maxLevel = n.level;
  }
  const levels = Array.from({ length: maxLevel + 1 }, () => []);
  for (const n of nodes) levels[n.level].push(n.name);

  const parents = new Map();
  const children = new Map();
  for (const n of nodes) { parents.set(n.name, []); children.set(n.name, []); }
  const dummies = new Set();
  const chains = new Map(); // edge index → waypoint names
  const link = (a, b) => { parents.get(b).push(a); children.get(a).push(b); };
  edges.forEach((e, i) => {
    const a = byName.get(e.from);
    const b = byName.get(e.to);
    if (!a || !b) return;
    let prev = e.from;
    const chain = [];
    for (let l = a.level + 1; l < b.level; l += 1) {
      const d = `\u0000${i}:${l}`;
      dummies.add(d);
      parents.set(d, []);
      children.set(d, []);
      levels[l].push(d);
      link(prev, d);
      chain.push(d);
      prev = d;
    }
    link(prev, e.to);
    if (chain.length) chains.set(i, chain);
  });

  // A node's coordinate within its column, centred so that columns of different sizes
  // line up around the middle.
  const coord = new Map();
  const place = (col) => {
    const mid = (col.length - 1) / 2;
    col.forEach((name, i) => coord.set(name, i - mid));
  };
  levels.forEach(place);

  const sweep = (col, neighbours) => {
    const keyed = col.map((name, i) => {
      const ns = neighbours.get(name);
      if (!ns.length) return { name, key: coord.get(name), i };
      let sum = 0;
      for (const m of ns) sum += coord.get(m);
      return { name, key: sum / ns.length, i };
    });
    keyed.sort((x, y) => (x.key - y.key) || (x.i - y.i));
    const out = keyed.map((k) => k.name);
    place(out);
    return out;
  };

  const SWEEPS = 4;
  for (let it = 0; it < SWEEPS; it += 1) {
    for (let l = 1; l <= maxLevel; l += 1) levels[l] = sweep(levels[l], parents);
    for (let l = maxLevel - 1; l >= 0; l -= 1) levels[l] = sweep(levels[l], children);
  }
  for (let l = 1; l <= maxLevel; l += 1) levels[l] = sweep(levels[l], parents);

  // Heights: a node takes a row, a waypoint a narrow lane.
  const slot = (name) => (dummies.has(name) ? DUMMY_PITCH : PITCH_Y);
  const colHeight = (col) => col.reduce((sum, name) => sum + slot(name), 0) - (col.length ? GAP_Y : 0);
  const tallest = levels.reduce((m, col) => Math.max(m, colHeight(col)), NODE_H);
  const height = tallest + 2 * PAD;
  const width = (maxLevel + 1) * PITCH_X - GAP_X + 2 * PAD;
  const pos = new Map();
  levels.forEach((col, l) => {
    let y = PAD + (tallest - colHeight(col)) / 2;
    for (const name of col) {
      if (dummies.has(name)) {
        // The lane's centre line is where the edge runs.
        pos.set(name, { x: PAD + l * PITCH_X, y: y + DUMMY_PITCH / 2 - NODE_H / 2 });
      } else {
        pos.set(name, { x: PAD + l * PITCH_X, y });
      }
      y += slot(name);
    }
  });
  const routes = new Map();
  for (const [i, chain] of chains) routes.set(i, chain.map((d) => pos.get(d)));
  return { pos, routes, width, height };
}

function countdownText(iso, now = Date.now()) {
  const c = fmtCountdown(iso, now);
  return c === 'due now' ? 'due' : `in ${c}`;
}

/** From the right of `a` to the left of `b`, through each waypoint's lane. */
function edgePath(a, b, via = []) {
  let x1 = a.x + NODE_W;
  let y1 = a.y + NODE_H / 2;
  let d = `M${x1} ${y1}`;
  const curve = (x2, y2) => {
    const dx = Math.max(24, (x2 - x1) / 2);
    d += `C${x1 + dx} ${y1} ${x2 - dx} ${y2} ${x2} ${y2}`;
  };
  for (const w of via) {
    const y = w.y + NODE_H / 2;
    curve(w.x, y);
    d += `L${w.x + NODE_W} ${y}`;
    x1 = w.x + NODE_W;
    y1 = y;
  }
  curve(b.x - 4, b.y + NODE_H / 2);
  return d;
}

/**
 * Draws a DAG in `svg`. `nodes`: [{name, level, id?, state?, attempts?, max_attempts?,
 * handler?}]; `edges`: [{from, to}]. With `states` the nodes show their state (a task),
 * otherwise their handler (a template). `onOpen(node)` is called when a node is clicked.
 * Answers a controller: setState(id, state, attempt), setCountdown(id, iso|null), tick(),
 * fit(), zoom(f).
 */
export function drawDag(svg, { nodes, edges, states = false, onOpen = null, toolbar = null }) {
  performance.mark('tasker:dag-start');
  const { pos, routes, width, height } = layout(nodes, edges);
  performance.mark('tasker:dag-laid-out');
  svg.replaceChildren();
  svg.removeAttribute('data-rendered');

  // The drawing's box on screen (read once, before anything is drawn in it).
  const viewH = Math.max(220, Math.min(height, 620));
  svg.style.height = `${viewH}px`;
  const box = svg.getBoundingClientRect();
  let cw = Math.max(1, box.width || 800);
  let ch = Math.max(1, box.height || viewH);

  const frag = document.createDocumentFragment();
  const defs = s('defs', null,
    s('marker', { id: 'dag-arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
      s('path', { d: 'M0 0L10 5L0 10z', class: 'edge-arrow' })));
  frag.appendChild(defs);

  const edgeLayer = s('g', { class: 'edges' });
  const nodeLayer = s('g', { class: 'nodes' });
  const outEdges = new Map();
  edges.forEach((e, i) => {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) return;
    const p = s('path', { class: 'edge', d: edgePath(a, b, routes.get(i)), 'data-from': e.from, 'data-to': e.to, 'marker-end': 'url(#dag-arrow)' });
    edgeLayer.appendChild(p);
    if (!outEdges.has(e.from)) outEdges.set(e.from, []);
    outEdges.get(e.from).push(p);
  });

  const records = new Map(); // id (or name) → record
  for (const n of nodes) {
    const p = pos.get(n.name);
    const attrs = {
      class: 'node',
      transform: `translate(${p.x} ${p.y})`,
      'data-step': n.name,
    };
    if (n.id !== undefined && n.id !== null) attrs['data-step-id'] = n.id;
    if (states) attrs['data-state'] = n.state || 'pending';
    if (onOpen) { attrs.tabindex = '0'; attrs.role = 'link'; }
    const g = s('g', attrs);
    const title = s('title');
    const metaState = s('tspan', { class: 'node-state' });
    const metaRest = s('tspan', { class: 'node-attempt' });
    g.append(
      title,
      s('rect', { class: 'node-bg', width: NODE_W, height: NODE_H, rx: '8' }),
      s('rect', { class: 'node-bar', width: '5', height: NODE_H - 12, x: '6', y: '6', rx: '2.5' }),
      s('text', { class: 'node-name', x: '19', y: '20' }, clip(n.name, NAME_CHARS)),
      s('text', { class: 'node-meta', x: '19', y: '37' }, metaState, metaRest),
    );
    const rec = {
      id: n.id, name: n.name, g, title, metaState, metaRest,
      state: n.state || 'pending', attempt: n.attempts || 0, max: n.max_attempts || 0,
      handler: n.handler || '', countdown: null, countdownAt: null,
    };
    if (states) {
      paintState(rec);
    } else {
      metaState.textContent = clip(n.handler || '', META_CHARS);
      title.textContent = `${n.name}\n${n.handler || ''}`;
    }
    records.set(n.id ?? n.name, rec);
    nodeLayer.appendChild(g);
  }
  frag.append(edgeLayer, nodeLayer);
  svg.appendChild(frag);

  function paintState(rec) {
    rec.metaState.textContent = SHORT[rec.state] || rec.state;
    const of = rec.max ? `/${rec.max}` : '';
    // A waiting node also shows its countdown: the attempt is said shortly.
    const att = rec.attempt > 0 ? (rec.state === 'waiting_for_retry' ? ` · #${rec.attempt}${of}` : ` · attempt ${rec.attempt}${of}`) : '';
    rec.metaRest.textContent = att;
    rec.title.textContent = `${rec.name}\n${stateLabel(rec.state)}${rec.attempt ? `, attempt ${rec.attempt}${rec.max ? ` of ${rec.max}` : ''}` : ''}${rec.handler ? `\n${rec.handler}` : ''}`;
    const done = FINISHED.has(rec.state);
    for (const p of outEdges.get(rec.name) || []) p.classList.toggle('done', done);
  }

  // Edges of finished parents are drawn darker.
  if (states) for (const rec of records.values()) paintState(rec);

  // --- view: pan and zoom through the viewBox ------------------------------------------
  const vb = { x: 0, y: 0, w: width, h: height };
  const minW = 160;
  const maxW = () => Math.max(width, height * (cw / ch)) * 3;
  let far = null;
  const apply = () => {
    svg.setAttribute('viewBox', `${vb.x.toFixed(1)} ${vb.y.toFixed(1)} ${vb.w.toFixed(1)} ${vb.h.toFixed(1)}`);
    // Zoomed far out, text is too small to read and costs most of a repaint: the nodes
    // are drawn as coloured boxes until the operator zooms in.
    const isFar = cw / vb.w < FAR_SCALE;
    if (isFar !== far) {
      far = isFar;
      svg.classList.toggle('far', isFar);
    }
    if (toolbar && toolbar.zoomLabel) toolbar.zoomLabel.textContent = `${Math.round((cw / vb.w) * 100)}%`;
  };
  const fit = () => {
    // The whole drawing, never larger than life.
    const scale = Math.min(1, cw / width, ch / height);
    vb.w = cw / scale;
    vb.h = ch / scale;
    vb.x = (width - vb.w) / 2;
    vb.y = (height - vb.h) / 2;
    apply();
  };
  const zoomAt = (f, px = cw / 2, py = ch / 2) => {
    const w = Math.min(maxW(), Math.max(minW, vb.w / f));
    const k = w / vb.w;
    const ux = vb.x + (px / cw) * vb.w;
    const uy = vb.y + (py / ch) * vb.h;
    vb.w = w;
    vb.h = vb.h * k;
    vb.x = ux - (px / cw) * vb.w;
    vb.y = uy - (py / ch) * vb.h;
    apply();
  };
  svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
  fit();

  const onWheel = (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect();
    const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    zoomAt(f, e.clientX - r.left, e.clientY - r.top);
  };
  svg.addEventListener('wheel', onWheel, { passive: false });

  let drag = null;
  let dragged = false;
  svg.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, vx: vb.x, vy: vb.y, id: e.pointerId, moving: false };
    dragged = false;
  });
  svg.addEventListener('pointermove', (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (!drag.moving && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moving) {
      drag.moving = true;
      svg.setPointerCapture(e.pointerId);
      svg.classList.add('panning');
    }
    const k = vb.w / cw;
    vb.x = drag.vx - dx * k;
    vb.y = drag.vy - dy * k;
    apply();
  });
  const endDrag = (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    if (drag.moving) {
      dragged = true;
      svg.classList.remove('panning');
      if (svg.hasPointerCapture(e.pointerId)) svg.releasePointerCapture(e.pointerId);
    }
    drag = null;
  };
  svg.addEventListener('pointerup', endDrag);
  svg.addEventListener('pointercancel', endDrag);

  if (onOpen) {
    const open = (g) => {
      const rec = records.get(g.dataset.stepId ? Number(g.dataset.stepId) : g.dataset.step);
      if (rec) onOpen(rec);
    };
    svg.addEventListener('click', (e) => {
      if (dragged) { dragged = false; return; }
      const g = e.target.closest && e.target.closest('g.node');
      if (g) open(g);
    });
    svg.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter' && e.key !== ' ') return;
      const g = e.target.closest && e.target.closest('g.node');
      if (g) { e.preventDefault(); open(g); }
    });
  }

  const resize = new ResizeObserver((entries) => {
    for (const en of entries) {
      const w = en.contentRect.width;
      const hh = en.contentRect.height;
      if (w < 1 || hh < 1 || (Math.abs(w - cw) < 0.5 && Math.abs(hh - ch) < 0.5)) continue;
      // Keep the scale and the centre; show more or less around it.
      const k = vb.w / cw;
      const cx = vb.x + vb.w / 2;
      const cy = vb.y + vb.h / 2;
      cw = w; ch = hh;
      vb.w = cw * k; vb.h = ch * k;
      vb.x = cx - vb.w / 2; vb.y = cy - vb.h / 2;
      apply();
    }
  });
  resize.observe(svg);

  if (toolbar) {
    toolbar.zoomIn && toolbar.zoomIn.addEventListener('click', () => zoomAt(1.25));
    toolbar.zoomOut && toolbar.zoomOut.addEventListener('click', () => zoomAt(0.8));
    toolbar.fit && toolbar.fit.addEventListener('click', fit);
  }

  svg.setAttribute('data-rendered', '1');
  performance.mark('tasker:dag-rendered');
  requestAnimationFrame(() => setTimeout(() => performance.mark('tasker:dag-painted'), 0));

  return {
    records,
    /** A step's new state (and attempt): one attribute and two texts. */
    setState(id, state, attempt) {
      const rec = records.get(id);
      if (!rec) return;
      let changed = false;
      if (state && state !== rec.state) {
        rec.state = state;
        rec.g.setAttribute('data-state', state);
        if (state !== 'waiting_for_retry') this.setCountdown(id, null);
        changed = true;
      }
      if (attempt !== undefined && attempt !== null && attempt !== rec.attempt) {
        rec.attempt = attempt;
        changed = true;
      }
      if (changed) paintState(rec);
    },
    setMax(id, max) {
      const rec = records.get(id);
      if (rec && max && rec.max !== max) { rec.max = max; paintState(rec); }
    },
    /** Shows (or removes, with null) the countdown to a waiting step's retry. */
    setCountdown(id, iso) {
      const rec = records.get(id);
      if (!rec) return;
      if (!iso) {
        if (rec.countdown) { rec.countdown.remove(); rec.countdown = null; rec.countdownAt = null; }
        return;
      }
      if (!rec.countdown) {
        rec.countdown = s('text', { class: 'countdown', x: NODE_W - 9, y: '37', 'text-anchor': 'end' });
        rec.g.appendChild(rec.countdown);
      }
      rec.countdownAt = iso;
      rec.countdown.textContent = countdownText(iso);
    },
    /** Moves every countdown on. */
    tick(now = Date.now()) {
      for (const rec of records.values()) {
        if (rec.countdown) rec.countdown.textContent = countdownText(rec.countdownAt, now);
      }
    },
    fit,
    zoom: zoomAt,
    destroy() { resize.disconnect(); svg.removeEventListener('wheel', onWheel); },
  };
}

/** The zoom buttons above a drawing. */
export function dagToolbar() {
  const zoomOut = h('button', { type: 'button', class: 'btn btn-icon', 'data-action': 'zoom-out', title: 'Zoom out', 'aria-label': 'Zoom out' }, '−');
  const zoomLabel = h('span', { class: 'zoom-label', 'aria-live': 'polite' }, '100%');
  const zoomIn = h('button', { type: 'button', class: 'btn btn-icon', 'data-action': 'zoom-in', title: 'Zoom in', 'aria-label': 'Zoom in' }, '+');
  const fit = h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'fit', title: 'Show the whole graph' }, 'Fit');
  const el = h('div', { class: 'dag-toolbar' }, zoomOut, zoomLabel, zoomIn, fit);
  return { el, zoomIn, zoomOut, fit, zoomLabel };
}

/** The colours of the states, in words. */
export function legend(states) {
  return h('ul', { class: 'legend', 'aria-label': 'States' },
    states.map((st) => h('li', { 'data-state': st }, h('span', { class: 'legend-swatch', 'aria-hidden': 'true' }), stateLabel(st))));
}
