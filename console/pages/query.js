// The query console: any twin or device-job query (POST /devices/query), paged, shown as a
// table or as the raw JSON.

import { h, fill, table, errorSlot, compact, pretty } from '../ui.js';

const EXAMPLES = [
  'SELECT * FROM devices',
  "SELECT deviceId, connectionState, lastActivityTime FROM devices WHERE connectionState = 'Connected'",
  'SELECT COUNT() AS devices FROM devices',
  'SELECT status, COUNT() AS n FROM devices GROUP BY status',
  'SELECT * FROM devices.jobs',
];

let lastQuery = EXAMPLES[0];

export function mount(root, ctx) {
  const { api } = ctx;
  const errors = errorSlot();
  const text = h('textarea', { class: 'code query-text', rows: 4, name: 'query', spellcheck: 'false', value: lastQuery, 'aria-label': 'Query' });
  const pageSize = h('select', { name: 'query-page-size', 'aria-label': 'Page size' },
    [10, 50, 100, 500, 1000].map((n) => h('option', { value: String(n), selected: n === 100 }, `${n} per page`)));
  const viewTable = h('input', { type: 'radio', name: 'view', value: 'table', checked: true });
  const viewJson = h('input', { type: 'radio', name: 'view', value: 'json' });
  const results = h('div', { class: 'results', 'data-testid': 'query-results' });
  const meta = h('div', { class: 'result-meta', 'data-testid': 'query-meta' });
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Next page →');
  const run = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Run query');
  let rows = [];
  let itemType = '';
  let continuation = null;
  let pageNumber = 0;

  function render() {
    if (viewJson.checked) {
      fill(results, h('pre', { class: 'code', 'data-testid': 'query-json' }, pretty(rows)));
    } else {
      const keys = [];
      for (const row of rows) for (const k of Object.keys(row ?? {})) if (!keys.includes(k)) keys.push(k);
      const columns = keys.map((k) => ({ title: k, cell: (r) => h('span', { class: 'clip' }, compact(r?.[k])) }));
      fill(results, table(columns, rows, { empty: 'No rows.', testid: 'query-table' }));
    }
    fill(meta, `${rows.length} row${rows.length === 1 ? '' : 's'} on page ${pageNumber}`, itemType ? ` · item type ${itemType}` : '',
      continuation ? ' · more pages' : '');
    more.hidden = !continuation;
  }
  for (const radio of [viewTable, viewJson]) radio.addEventListener('change', render);

  async function fetchPage(token) {
    errors.clear();
    run.disabled = true;
    try {
      const page = await api.query(text.value.trim(), { pageSize: Number(pageSize.value), continuation: token, signal: ctx.signal });
      rows = page.items;
      itemType = page.itemType;
      continuation = page.continuation;
      pageNumber = token ? pageNumber + 1 : 1;
      render();
    } catch (err) {
      if (err.name !== 'AbortError') errors.show(err);
    } finally {
      run.disabled = false;
    }
  }
  more.addEventListener('click', () => fetchPage(continuation));

  fill(root,
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Query'), h('span', { class: 'muted' }, 'The IoT Hub query language over twins and job rows'))),
    h('div', { class: 'card' }, h('div', { class: 'card-body' },
      h('form', {
        class: 'stack',
        onsubmit: (e) => { e.preventDefault(); lastQuery = text.value; fetchPage(null); },
      },
      text,
      h('div', { class: 'toolbar flush' },
        run, pageSize,
        h('div', { class: 'radios' }, h('label', {}, viewTable, ' Table'), h('label', {}, viewJson, ' JSON')),
        h('span', { class: 'spacer' }),
        h('select', {
          'aria-label': 'Examples', class: 'examples',
          onchange: (e) => { if (e.target.value) { text.value = e.target.value; e.target.value = ''; } },
        }, h('option', { value: '' }, 'Examples…'), EXAMPLES.map((q) => h('option', { value: q }, q))))))),
    errors.el,
    h('div', { class: 'card' }, h('div', { class: 'card-body' }, meta, results, h('div', { class: 'pager' }, more))));
  text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run.click(); } });
}
