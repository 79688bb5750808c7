// Templates: every namespace/name with its versions; a version's graph and definition.

import {
  h, api, withQuery, fmtRelative, jsonBlock, facts, card, empty, setTitle, s, templateHref,
} from '../lib.js';
import { drawDag, dagToolbar } from '../dag.js';

/** Semver-ish ordering, newest first. */
function compareVersions(a, b) {
  const pa = a.split(/[.+-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  const pb = b.split(/[.+-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  for (let i = 0; i < Math.max(pa.length, pb.length); i += 1) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return 1;
    if (y === undefined) return -1;
    if (x === y) continue;
    if (typeof x === 'number' && typeof y === 'number') return y - x;
    return String(y).localeCompare(String(x));
  }
  return 0;
}

async function allTemplates(signal) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < 20; i += 1) {
    const page = await api(withQuery('/v1/templates', { limit: 500, cursor }), { signal });
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

export const templatesPage = {
  page: 'templates',
  title: 'Templates',
  async render(ctx) {
    const { main, signal } = ctx;
    setTitle('Templates');
    const items = await allTemplates(signal);
    if (!ctx.isCurrent()) return;
    const groups = new Map();
    for (const t of items) {
      const k = `${t.namespace}/${t.name}`;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(t);
    }
    const rows = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, versions]) => {
      versions.sort((a, b) => compareVersions(a.version, b.version));
      const latest = versions[0];
      return h('tr', { 'data-template': k },
        h('td', null, h('span', { class: 'muted' }, `${latest.namespace}/`), h('a', { href: templateHref(latest.key), class: 'strong' }, latest.name)),
        h('td', { class: 'desc' }, latest.description || h('span', { class: 'muted' }, '—')),
        h('td', null, versions.map((v) => h('a', { href: templateHref(v.key), class: 'version-chip', 'data-version': v.version, title: `registered ${v.created_at}` }, v.version))),
        h('td', { class: 'num' }, String(latest.step_count)),
        h('td', { class: 'nowrap', title: latest.created_at }, fmtRelative(latest.created_at)),
        h('td', null, h('a', { href: withQuery('/ui/tasks', { template: k }), class: 'small' }, 'Tasks →')));
    });
    main.append(
      h('div', { class: 'page-head' },
        h('div', null, h('h1', null, 'Templates'), h('p', { class: 'subtitle' }, `${groups.size} template${groups.size === 1 ? '' : 's'}, ${items.length} version${items.length === 1 ? '' : 's'}. Register one with \`tasker templates register FILE\`.`))),
      h('section', { class: 'card card-flush' },
        rows.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'templates' },
            h('thead', null, h('tr', null, h('th', null, 'Template'), h('th', null, 'Description'), h('th', null, 'Versions (newest first)'),
              h('th', { class: 'num' }, 'Steps'), h('th', null, 'Latest registered'), h('th', null, ''))),
            h('tbody', null, rows)))
          : empty('No template is registered.')),
    );
  },
};

function stepsTable(def) {
  const rows = (def.steps || []).map((st) => {
    const deps = Array.isArray(st.depends_on) ? st.depends_on : (st.depends_on ? [st.depends_on] : []);
    const extra = { ...st };
    delete extra.name; delete extra.handler; delete extra.depends_on;
    return h('tr', { 'data-step': st.name },
      h('td', { class: 'strong' }, st.name),
      h('td', null, h('code', null, typeof st.handler === 'string' ? st.handler : JSON.stringify(st.handler))),
      h('td', null, deps.length ? deps.map((d) => h('span', { class: 'tag' }, d)) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'small' }, Object.keys(extra).length ? h('code', { class: 'payload' }, JSON.stringify(extra)) : h('span', { class: 'muted' }, '—')));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table table-dense' },
    h('thead', null, h('tr', null, h('th', null, 'Step'), h('th', null, 'Handler'), h('th', null, 'Depends on'), h('th', null, 'Settings'))),
    h('tbody', null, rows)));
}

export const templatePage = {
  page: 'template',
  nav: 'templates',
  title: 'Template',
  async render(ctx) {
    const { main, params, signal } = ctx;
    const { namespace, name, version } = params;
    const key = `${namespace}/${name}@${version}`;
    setTitle(key);
    const path = `/v1/templates/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}/${encodeURIComponent(version)}`;
    const tpl = await api(path, { signal });
    if (!ctx.isCurrent()) return;
    const def = tpl.definition;

    // Other versions, for links.
    const versionsBox = h('span', { class: 'versions' });
    const svg = s('svg', { id: 'dag', class: 'dag', role: 'img', 'aria-label': `The graph of ${key}` });
    const toolbar = dagToolbar();
    main.append(
      h('div', { class: 'page-head' },
        h('div', null,
          h('div', { class: 'crumbs' }, h('a', { href: '/ui/templates' }, 'Templates'), ' / ', `${namespace}/${name}`),
          h('h1', null, `${namespace}/${name} `, h('span', { class: 'version-chip current' }, version)),
          h('p', { class: 'subtitle' }, def.description || '')),
        h('div', { class: 'actions' }, h('a', { class: 'btn', href: withQuery('/ui/tasks', { template: key }) }, 'Its tasks'))),
      h('div', { class: 'grid-2' },
        card('Template', null, facts([
          ['Key', h('code', null, tpl.key)],
          ['Steps', String((def.steps || []).length)],
          ['Levels', String((tpl.graph.levels || []).length)],
          ['Edges', String((tpl.graph.edges || []).length)],
          ['Hooks', (def.hooks || []).length ? String(def.hooks.length) : null],
          ['Retry policy', def.retry_policy ? h('code', null, typeof def.retry_policy === 'string' ? def.retry_policy : JSON.stringify(def.retry_policy)) : null],
          ['Versions', versionsBox],
        ])),
        card('Context schema', null, def.context_schema ? jsonBlock(def.context_schema) : empty('Any JSON object.'))),
      card('Graph', { actions: toolbar.el, cls: 'card-dag' }, h('div', { class: 'dag-frame' }, svg)),
      card('Steps', null, stepsTable(def)),
      card('Definition', null, h('details', null, h('summary', null, 'The whole definition (JSON)'), jsonBlock(def, { id: 'definition' }))),
    );
    const dag = drawDag(svg, {
      nodes: tpl.graph.nodes.map((n) => ({ name: n.name, level: n.level, handler: n.handler })),
      edges: tpl.graph.edges,
      states: false,
      toolbar,
    });
    ctx.onLeave(() => dag.destroy());

    try {
      const all = await allTemplates(signal);
      const versions = all.filter((t) => t.namespace === namespace && t.name === name)
        .sort((a, b) => compareVersions(a.version, b.version));
      versionsBox.replaceChildren(...versions.map((v) => h('a', {
        href: templateHref(v.key), class: `version-chip${v.version === version ? ' current' : ''}`, title: `registered ${v.created_at}`,
      }, v.version)));
    } catch (e) {
      if (e.name === 'AbortError') return;
      versionsBox.replaceChildren(h('span', { class: 'muted' }, version));
    }
  },
};
