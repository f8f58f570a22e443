// One job: its progress live (GET /jobs/v2/{id}/events when the hub offers it, otherwise
// polling GET /jobs/v2/{id} every second), cancel, and its per-device rows (devices.jobs),
// filterable by status.

import { h, fill, badge, time, table, card, errorSlot, toast, progressBar, pretty, quote, compact } from '../ui.js';
import { counts, TYPE_LABELS } from './jobs.js';

const TERMINAL = ['completed', 'failed', 'cancelled'];
const POLL_MS = 1000;
const DEVICE_STATUSES = ['pending', 'scheduled', 'running', 'completed', 'failed', 'canceled'];

export async function mount(root, ctx, jobId) {
  const { api } = ctx;
  const errors = errorSlot();
  const headBadge = h('span', { 'data-testid': 'job-status' });
  const liveMode = h('span', { class: 'live', 'data-testid': 'live-mode' });
  const summary = h('div');
  const cancelButton = h('button', {
    type: 'button', class: 'btn btn-danger', hidden: true,
    onclick: async () => {
      if (!confirm(`Cancel job ${jobId}? Devices not reached yet are skipped.`)) return;
      try { show(await api.cancelJob(jobId)); toast(`Cancelling ${jobId}`); } catch (err) { errors.show(err); }
    },
  }, 'Cancel job');
  const rowFilter = h('select', { name: 'device-status', 'aria-label': 'Device status', onchange: () => loadRows() },
    h('option', { value: '' }, 'Any status'), DEVICE_STATUSES.map((s) => h('option', { value: s }, s)));
  const rowsArea = h('div');
  const rowErrors = errorSlot();

  fill(root,
    h('div', { class: 'page-head' },
      h('div', {}, h('a', { href: '#/jobs', class: 'back' }, '← Jobs'), h('h1', {}, jobId), h('div', { class: 'badges' }, headBadge, liveMode)),
      h('div', { class: 'head-actions' }, cancelButton)),
    errors.el,
    card('Progress', summary),
    card('Devices', h('div', {}, rowErrors.el, rowsArea), [rowFilter,
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => loadRows() }, 'Refresh')]));

  let lastStats = '';
  function show(job) {
    fill(headBadge, badge(job.status));
    cancelButton.hidden = TERMINAL.includes(job.status);
    const s = job.deviceJobStatistics || {};
    const op = job.type === 'scheduleDeviceMethod'
      ? [h('dt', {}, 'Method'), h('dd', {}, h('code', {}, job.cloudToDeviceMethod?.methodName || '')),
        h('dt', {}, 'Payload'), h('dd', {}, h('code', { class: 'clip' }, compact(job.cloudToDeviceMethod?.payload))),
        h('dt', {}, 'Timeouts'), h('dd', {}, `response ${job.cloudToDeviceMethod?.responseTimeoutInSeconds ?? '—'} s, connect ${job.cloudToDeviceMethod?.connectTimeoutInSeconds ?? 0} s`)]
      : [h('dt', {}, 'Twin patch'), h('dd', {}, h('pre', { class: 'code small' }, pretty(job.updateTwin)))];
    fill(summary,
      h('div', { class: 'progress-big' }, progressBar(s), counts(s)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Type'), h('dd', {}, TYPE_LABELS[job.type] || job.type),
        h('dt', {}, 'Targets'), h('dd', {}, h('code', {}, job.queryCondition || '')),
        op,
        h('dt', {}, 'Created'), h('dd', {}, time(job.createdTime)),
        h('dt', {}, 'Start'), h('dd', {}, time(job.startTime)),
        h('dt', {}, 'End'), h('dd', {}, time(job.endTime)),
        h('dt', {}, 'Max execution'), h('dd', {}, job.maxExecutionTimeInSeconds ? `${job.maxExecutionTimeInSeconds} s` : '—'),
        job.failureReason ? [h('dt', {}, 'Failure'), h('dd', {}, job.failureReason)] : null,
        job.statusMessage ? [h('dt', {}, 'Message'), h('dd', {}, job.statusMessage)] : null));
    const key = `${job.status}:${JSON.stringify(s)}`;
    if (key !== lastStats) {
      lastStats = key;
      loadRows();
    }
    return TERMINAL.includes(job.status);
  }

  const columns = [
    { title: 'Device', cell: (r) => h('a', { href: `#/devices/${encodeURIComponent(r.deviceId)}` }, r.deviceId) },
    { title: 'Status', cell: (r) => badge(r.status) },
    { title: 'Start', class: 'nowrap', cell: (r) => time(r.startTimeUtc) },
    { title: 'End', class: 'nowrap', cell: (r) => time(r.endTimeUtc) },
    {
      title: 'Outcome', cell: (r) => {
        if (r.error) return h('span', { class: 'text-bad' }, `${r.error.code}: ${r.error.description}`);
        const answer = r.outcome?.deviceMethodResponse;
        if (answer) return h('span', {}, badge(String(answer.status), answer.status < 300 ? 'ok' : 'bad'), ' ', h('code', { class: 'clip' }, compact(answer.payload)));
        return '';
      },
    },
  ];

  let rowsLoading = false;
  let rowsAgain = false;  // asked for while loading: the rows may have changed since
  async function loadRows() {
    if (rowsLoading) { rowsAgain = true; return; }
    rowsLoading = true;
    try {
      let where = `devices.jobs.jobId = ${quote(jobId)}`;
      if (rowFilter.value) where += ` AND devices.jobs.status = ${quote(rowFilter.value)}`;
      const rows = [];
      let continuation = null;
      do {
        const page = await api.query(`SELECT * FROM devices.jobs WHERE ${where}`, { pageSize: 200, continuation, signal: ctx.signal });
        rows.push(...page.items);
        continuation = page.continuation;
      } while (continuation && rows.length < 1000);
      rowErrors.clear();
      fill(rowsArea, table(columns, rows, { empty: rowFilter.value ? `No device is ${rowFilter.value}.` : 'No device rows yet.', testid: 'job-devices-table' }),
        rows.length >= 1000 ? h('p', { class: 'muted' }, 'Showing the first 1000 devices.') : null);
    } catch (err) {
      if (err.name !== 'AbortError') rowErrors.show(err);
    } finally {
      rowsLoading = false;
      if (rowsAgain && !ctx.signal.aborted) { rowsAgain = false; loadRows(); }
    }
  }

  let finished = show(await api.getJob(jobId, { signal: ctx.signal }));
  if (finished) { fill(liveMode, 'finished'); return; }
  try {
    fill(liveMode, h('span', { class: 'dot' }), 'live: event stream');
    await api.followJobEvents(jobId, (job) => { if (show(job)) finished = true; }, { signal: ctx.signal });
  } catch (err) {
    if (ctx.signal.aborted) return;
    // The hub has no event stream (404) or it broke: poll instead.
  }
  if (ctx.signal.aborted) return;
  if (finished) { fill(liveMode, 'finished'); return; }
  fill(liveMode, h('span', { class: 'dot' }), 'live: polling every second');
  const poll = async () => {
    if (ctx.signal.aborted) return;
    try {
      const job = await api.getJob(jobId, { signal: ctx.signal });
      errors.clear();
      if (show(job)) { fill(liveMode, 'finished'); loadRows(); return; }
    } catch (err) {
      if (err.name === 'AbortError') return;
      errors.show(err);
    }
    setTimeout(poll, POLL_MS);
  };
  poll();
}
