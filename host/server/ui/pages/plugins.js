// Plugins: the components of the server's plugin directory, and an upload form.

import {
  h, api, withQuery, fmtBytes, fmtInt, timeEl, hashEl, can, notice, handleError, showError, clearError,
  empty, setTitle, card,
} from '../lib.js';

/** `name@version.wasm` → {name, version}. */
function fromFileName(file) {
  const base = file.replace(/\.wasm$/i, '');
  const at = base.lastIndexOf('@');
  if (at > 0) return { name: base.slice(0, at), version: base.slice(at + 1) };
  const m = /^(.+?)[-_]v?(\d+\.\d+\.\d+(?:[-+][\w.]+)?)$/.exec(base);
  if (m) return { name: m[1], version: m[2] };
  return { name: base, version: '' };
}

function pluginRow(p) {
  return h('tr', { 'data-plugin-hash': p.hash, 'data-plugin': `${p.name}@${p.version}` },
    h('td', { class: 'strong' }, p.name),
    h('td', null, h('span', { class: 'version-chip' }, p.version)),
    h('td', null, h('span', { class: 'world', 'data-world': p.world }, p.world)),
    h('td', null, hashEl(p.hash)),
    h('td', { class: 'num', title: `${fmtInt(p.size_bytes)} bytes` }, fmtBytes(p.size_bytes)),
    h('td', null, p.loaded
      ? h('span', { class: 'loaded yes', title: 'Compiled and ready to run' }, 'loaded')
      : h('span', { class: 'loaded no', title: 'Compiled on first use' }, 'on first use')),
    h('td', { class: 'mono small' }, p.file),
    h('td', { class: 'nowrap small' }, timeEl(p.found_at)));
}

export default {
  page: 'plugins',
  title: 'Plugins',
  async render(ctx) {
    const { main, signal } = ctx;
    setTitle('Plugins');
    const tbody = h('tbody');
    const count = h('p', { class: 'subtitle' });
    const listEl = h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'plugins' },
      h('thead', null, h('tr', null, ['Name', 'Version', 'World', 'Hash', 'Size', 'Loaded', 'File', 'Found'].map((c, i) => h('th', { class: i === 4 ? 'num' : null }, c)))),
      tbody));

    const load = async () => {
      const plugins = await api('/v1/plugins', { signal });
      if (!ctx.isCurrent()) return;
      tbody.replaceChildren(...plugins.map(pluginRow));
      if (!plugins.length) tbody.append(h('tr', null, h('td', { colspan: '8' }, empty('The plugin directory holds no component.'))));
      const names = new Set(plugins.map((p) => p.name));
      count.textContent = `${plugins.length} component${plugins.length === 1 ? '' : 's'} of ${names.size} plugin${names.size === 1 ? '' : 's'}, identified by their blake3 hash.`;
    };

    let form = null;
    if (can('plugins:write')) {
      const fileIn = h('input', { type: 'file', name: 'plugin', accept: '.wasm,application/wasm', required: true });
      const nameIn = h('input', { type: 'text', name: 'name', placeholder: 'from the file name', pattern: '[A-Za-z0-9_\\-]+', autocomplete: 'off' });
      const versionIn = h('input', { type: 'text', name: 'version', placeholder: '0.1.0', autocomplete: 'off' });
      const uploadBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-action': 'upload' }, 'Upload');
      const field = (label, input, cls = '') => h('label', { class: `field ${cls}`.trim() }, h('span', { class: 'field-label' }, label), input);
      form = h('form', { id: 'plugin-upload', class: 'upload-form' },
        field('Component (.wasm)', fileIn, 'field-wide'),
        field('Name', nameIn),
        field('Version', versionIn, 'field-narrow'),
        h('div', { class: 'filter-actions' }, uploadBtn));
      fileIn.addEventListener('change', () => {
        const f = fileIn.files && fileIn.files[0];
        if (!f) return;
        const guess = fromFileName(f.name);
        if (!nameIn.value) nameIn.value = guess.name;
        if (!versionIn.value) versionIn.value = guess.version;
      });
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        clearError();
        const f = fileIn.files && fileIn.files[0];
        if (!f) { showError('Choose a .wasm component to upload.'); return; }
        const guess = fromFileName(f.name);
        const name = nameIn.value.trim() || guess.name;
        const version = versionIn.value.trim() || guess.version;
        if (!name || !version) {
          showError('Give the plugin a name and a version (or name the file name@version.wasm).');
          return;
        }
        uploadBtn.disabled = true;
        uploadBtn.textContent = 'Uploading…';
        try {
          const { status, data } = await api(withQuery('/v1/plugins', { name, version }), {
            method: 'POST', body: f, type: 'application/wasm', withStatus: true, signal,
          });
          notice(status === 201
            ? `Installed ${data.name}@${data.version} (${data.world}, ${fmtBytes(data.size_bytes)}).`
            : `${data.name}@${data.version} was already installed with these bytes.`);
          form.reset();
          await load();
        } catch (err) {
          handleError(err);
        } finally {
          uploadBtn.disabled = false;
          uploadBtn.textContent = 'Upload';
        }
      });
    }

    main.append(
      h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Plugins'), count)),
      form ? card('Upload a component', null,
        h('p', { class: 'muted small' }, 'It is checked (it compiles, every import is provided, it exports a world of this host), written atomically into the plugin directory and hot-loaded by every worker watching it. name@version is immutable once installed.'),
        form) : null,
      h('section', { class: 'card card-flush' }, listEl),
    );
    await load();
  },
};
