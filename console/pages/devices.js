// Devices: a searchable, paged list driven by a twin query (POST /devices/query with
// x-ms-max-item-count / x-ms-continuation), with create, enable/disable and delete.

import { h, fill, badge, time, ago, table, errorSlot, toast, quote, compact } from '../ui.js';

const REFRESH_MS = 5000;

export function mount(root, ctx) {
  const { api } = ctx;
  const state = { search: '', filter: '', pageSize: 25, pages: [null], page: 0, next: null, total: null };
  const errors = errorSlot();

  const idInput = h('input', { type: 'text', name: 'new-device-id', placeholder: 'new-device-id', 'aria-label': 'New device id', maxlength: 128, required: true });
  const createForm = h('form', {
    class: 'inline-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const id = idInput.value.trim();
      if (!id) return;
      try {
        await api.createDevice(id);
        toast(`Device ${id} created`);
        ctx.navigate(`#/devices/${encodeURIComponent(id)}`);
      } catch (err) {
        errors.show(err);
      }
    },
  }, idInput, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create device'));

  const searchInput = h('input', { type: 'search', name: 'search', placeholder: 'Search by device id prefix', 'aria-label': 'Search devices' });
  let searchTimer;
  searchInput.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = searchInput.value.trim(); restart(); }, 250);
  });
  const filterSelect = h('select', { name: 'filter', 'aria-label': 'Filter', onchange: () => { state.filter = filterSelect.value; restart(); } },
    h('option', { value: '' }, 'All devices'),
    h('option', { value: "connectionState = 'Connected'" }, 'Connected'),
    h('option', { value: "connectionState = 'Disconnected'" }, 'Disconnected'),
    h('option', { value: "status = 'disabled'" }, 'Disabled'));
  const sizeSelect = h('select', { name: 'page-size', 'aria-label': 'Page size', onchange: () => { state.pageSize = Number(sizeSelect.value); restart(); } },
    [10, 25, 50, 100].map((n) => h('option', { value: String(n), selected: n === state.pageSize }, `${n} per page`)));
  const refreshButton = h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Refresh');

  const listArea = h('div', { class: 'list-area', 'aria-busy': 'true' });
  const pager = h('div', { class: 'pager' });
  const summary = h('span', { class: 'muted', 'data-testid': 'device-count' });

  fill(root,
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Devices'), summary),
      createForm),
    errors.el,
    h('div', { class: 'card' },
      h('div', { class: 'toolbar' }, searchInput, filterSelect, sizeSelect, h('span', { class: 'spacer' }), refreshButton),
      listArea, pager));

  function condition() {
    const parts = [];
    if (state.search) parts.push(`STARTSWITH(deviceId, ${quote(state.search)})`);
    if (state.filter) parts.push(state.filter);
    return parts.join(' AND ');
  }

  function restart() {
    state.pages = [null];
    state.page = 0;
    load();
  }

  async function act(what, fn) {
    try {
      await fn();
      toast(what);
      await load();
    } catch (err) {
      errors.show(err);
    }
  }

  const columns = [
    { title: 'Device', cell: (t) => h('a', { href: `#/devices/${encodeURIComponent(t.deviceId)}`, class: 'strong' }, t.deviceId) },
    { title: 'Connection', cell: (t) => badge(t.connectionState || 'Disconnected') },
    { title: 'Status', cell: (t) => badge(t.status || 'enabled') },
    { title: 'Last activity', cell: (t) => h('span', { title: time(t.lastActivityTime) }, ago(t.lastActivityTime) || '—') },
    { title: 'Twin version', class: 'num', cell: (t) => String(t.version ?? '') },
    { title: 'Tags', class: 'tags', cell: (t) => h('code', { class: 'clip' }, t.tags && Object.keys(t.tags).length ? compact(t.tags) : '') },
    {
      title: '', class: 'actions',
      cell: (t) => h('div', { class: 'row-actions' },
        t.status === 'disabled'
          ? h('button', { type: 'button', class: 'btn btn-small', onclick: () => act(`${t.deviceId} enabled`, () => api.setDeviceStatus(t.deviceId, 'enabled')) }, 'Enable')
          : h('button', { type: 'button', class: 'btn btn-small', onclick: () => act(`${t.deviceId} disabled`, () => api.setDeviceStatus(t.deviceId, 'disabled')) }, 'Disable'),
        h('button', {
          type: 'button', class: 'btn btn-small btn-danger',
          onclick: () => {
            if (confirm(`Delete device ${t.deviceId}? Its twin and keys are gone for good.`)) {
              act(`${t.deviceId} deleted`, () => api.deleteDevice(t.deviceId));
            }
          },
        }, 'Delete')),
    },
  ];

  let loading = null;
  async function load() {
    if (loading) return loading;
    loading = (async () => {
      const where = condition();
      const text = `SELECT * FROM devices${where ? ` WHERE ${where}` : ''}`;
      try {
        const [page, total] = await Promise.all([
          api.query(text, { pageSize: state.pageSize, continuation: state.pages[state.page], signal: ctx.signal }),
          api.countDevices(where, { signal: ctx.signal }).catch(() => null),
        ]);
        if (ctx.signal.aborted) return;
        errors.clear();
        state.next = page.continuation;
        state.total = total;
        listArea.setAttribute('aria-busy', 'false');
        fill(listArea, table(columns, page.items, { empty: where ? 'No device matches.' : 'No devices yet: create one above.', testid: 'devices-table' }));
        const first = state.page * state.pageSize + (page.items.length ? 1 : 0);
        const last = state.page * state.pageSize + page.items.length;
        fill(summary, total === null ? '' : `${total} device${total === 1 ? '' : 's'}${where ? (total === 1 ? ' matches' : ' match') : ''}`);
        fill(pager,
          h('span', { class: 'muted' }, page.items.length ? `${first}–${last}` : ''),
          h('button', { type: 'button', class: 'btn btn-small', disabled: state.page === 0, onclick: () => { state.page -= 1; load(); } }, '← Previous'),
          h('button', {
            type: 'button', class: 'btn btn-small', disabled: !state.next,
            onclick: () => { state.pages[state.page + 1] = state.next; state.page += 1; load(); },
          }, 'Next →'));
      } catch (err) {
        if (!ctx.signal.aborted && err.name !== 'AbortError') errors.show(err);
      }
    })();
    try { await loading; } finally { loading = null; }
  }

  ctx.every(REFRESH_MS, load);
}
