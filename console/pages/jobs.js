// Jobs: the list (GET /jobs/v2/query, paged) with status and device counts.

import { h, fill, badge, time, table, errorSlot, progressBar } from '../ui.js';

const REFRESH_MS = 5000;
export const JOB_STATUSES = ['queued', 'scheduled', 'running', 'completed', 'failed', 'cancelled'];
export const TYPE_LABELS = { scheduleDeviceMethod: 'Direct method', scheduleUpdateTwin: 'Twin update' };

export function counts(stats) {
  const s = stats || {};
  return h('span', { class: 'counts' },
    h('span', { class: 'count count-ok', title: 'succeeded' }, `✓ ${s.succeededCount ?? 0}`),
    h('span', { class: 'count count-bad', title: 'failed' }, `✗ ${s.failedCount ?? 0}`),
    h('span', { class: 'count count-info', title: 'running' }, `▶ ${s.runningCount ?? 0}`),
    h('span', { class: 'count count-muted', title: 'pending' }, `… ${s.pendingCount ?? 0}`),
    h('span', { class: 'muted' }, ` of ${s.deviceCount ?? 0}`));
}

export function mount(root, ctx) {
  const { api } = ctx;
  const state = { status: '', type: '', pages: [null], page: 0, next: null };
  const errors = errorSlot();
  const statusSelect = h('select', { name: 'job-status', 'aria-label': 'Status', onchange: () => { state.status = statusSelect.value; restart(); } },
    h('option', { value: '' }, 'Any status'), JOB_STATUSES.map((s) => h('option', { value: s }, s)));
  const typeSelect = h('select', { name: 'job-type', 'aria-label': 'Type', onchange: () => { state.type = typeSelect.value; restart(); } },
    h('option', { value: '' }, 'Any type'), Object.entries(TYPE_LABELS).map(([v, l]) => h('option', { value: v }, l)));
  const listArea = h('div', { class: 'list-area' });
  const pager = h('div', { class: 'pager' });

  fill(root,
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Jobs'), h('span', { class: 'muted' }, 'Direct methods and twin updates on many devices at once')),
      h('a', { href: '#/jobs/new', class: 'btn btn-primary' }, 'Schedule a job')),
    errors.el,
    h('div', { class: 'card' },
      h('div', { class: 'toolbar' }, statusSelect, typeSelect, h('span', { class: 'spacer' }),
        h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Refresh')),
      listArea, pager));

  function restart() { state.pages = [null]; state.page = 0; load(); }

  const columns = [
    { title: 'Job', class: 'nowrap', cell: (j) => h('a', { href: `#/jobs/${encodeURIComponent(j.jobId)}`, class: 'strong' }, j.jobId) },
    { title: 'Type', class: 'nowrap', cell: (j) => TYPE_LABELS[j.type] || j.type },
    { title: 'Status', cell: (j) => badge(j.status) },
    { title: 'Devices', cell: (j) => h('div', { class: 'progress-cell' }, progressBar(j.deviceJobStatistics), counts(j.deviceJobStatistics)) },
    { title: 'Created', class: 'nowrap', cell: (j) => time(j.createdTime) },
    { title: 'Start', class: 'nowrap', cell: (j) => time(j.startTime) },
    { title: 'End', class: 'nowrap', cell: (j) => time(j.endTime) },
  ];

  async function load() {
    try {
      const page = await api.listJobs({ status: state.status, type: state.type, pageSize: 25, continuation: state.pages[state.page], signal: ctx.signal });
      errors.clear();
      state.next = page.continuation;
      fill(listArea, table(columns, page.items, { empty: 'No jobs yet.', testid: 'jobs-table' }));
      fill(pager,
        h('button', { type: 'button', class: 'btn btn-small', disabled: state.page === 0, onclick: () => { state.page -= 1; load(); } }, '← Previous'),
        h('button', { type: 'button', class: 'btn btn-small', disabled: !state.next, onclick: () => { state.pages[state.page + 1] = state.next; state.page += 1; load(); } }, 'Next →'));
    } catch (err) {
      if (err.name !== 'AbortError') errors.show(err);
    }
  }

  ctx.every(REFRESH_MS, load);
}
