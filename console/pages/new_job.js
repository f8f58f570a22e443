// Scheduling a job (PUT /jobs/v2/{id}, docs/protocol.md §9.1): a direct method or a twin
// update on the devices matching a query condition, with a target-count preview (a
// SELECT COUNT() query) that must be run for the condition as typed before submitting.

import { h, fill, field, errorSlot, toast, parseJsonField } from '../ui.js';

const newJobId = () => `job-${new Date().toISOString().replace(/[-:T.Z]/g, '').slice(0, 14)}-${Math.random().toString(36).slice(2, 6)}`;

export function mount(root, ctx) {
  const { api } = ctx;
  const errors = errorSlot();
  const jobId = h('input', { type: 'text', name: 'job-id', value: newJobId(), required: true, maxlength: 64, pattern: '[A-Za-z0-9\\-]+' });
  const typeMethod = h('input', { type: 'radio', name: 'job-type', value: 'scheduleDeviceMethod', checked: true });
  const typeTwin = h('input', { type: 'radio', name: 'job-type', value: 'scheduleUpdateTwin' });
  const condition = h('textarea', { class: 'code', rows: 2, name: 'query-condition', required: true, spellcheck: 'false', placeholder: "tags.building = 43 AND connectionState = 'Connected'" });
  const preview = h('div', { class: 'preview', 'data-testid': 'target-preview', 'aria-live': 'polite' });
  const previewButton = h('button', { type: 'button', class: 'btn', 'data-testid': 'preview-targets' }, 'Preview targets');
  const methodName = h('input', { type: 'text', name: 'job-method-name', placeholder: 'e.g. reboot' });
  const methodPayload = h('textarea', { class: 'code', rows: 3, name: 'job-method-payload', spellcheck: 'false', value: '{}' });
  const responseTimeout = h('input', { type: 'number', name: 'job-response-timeout', min: 5, max: 300, value: '30' });
  const connectTimeout = h('input', { type: 'number', name: 'job-connect-timeout', min: 0, max: 300, value: '0' });
  const tags = h('textarea', { class: 'code', rows: 3, name: 'job-tags', spellcheck: 'false', placeholder: '{"firmware": "2.1"}' });
  const desired = h('textarea', { class: 'code', rows: 3, name: 'job-desired', spellcheck: 'false', placeholder: '{"telemetryInterval": 30}' });
  const startTime = h('input', { type: 'datetime-local', name: 'job-start-time', step: 1 });
  const maxExecution = h('input', { type: 'number', name: 'job-max-execution', min: 1, placeholder: 'none' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', disabled: true }, 'Schedule job');

  const methodFields = h('fieldset', { class: 'stack' }, h('legend', {}, 'Direct method'),
    field('Method name', methodName), field('Payload', methodPayload, 'JSON'),
    h('div', { class: 'grid-2 tight' }, field('Response timeout (s)', responseTimeout), field('Connect timeout (s)', connectTimeout)));
  const twinFields = h('fieldset', { class: 'stack', hidden: true }, h('legend', {}, 'Twin update'),
    field('Tags', tags, 'JSON object merged into each twin’s tags'),
    field('Desired properties', desired, 'JSON object merged into each twin’s desired properties'));
  for (const radio of [typeMethod, typeTwin]) {
    radio.addEventListener('change', () => { methodFields.hidden = !typeMethod.checked; twinFields.hidden = typeMethod.checked; });
  }

  // The count shown belongs to `previewed`; editing the condition invalidates it.
  let previewed = null;
  condition.addEventListener('input', () => {
    if (condition.value.trim() !== previewed) { submit.disabled = true; fill(preview); }
  });
  previewButton.addEventListener('click', async () => {
    const text = condition.value.trim();
    if (!text) { fill(preview, h('span', { class: 'text-bad' }, 'Type a query condition first.')); return; }
    fill(preview, h('span', { class: 'muted' }, 'Counting…'));
    try {
      const n = await api.countDevices(text, { signal: ctx.signal });
      previewed = text;
      submit.disabled = false;
      fill(preview, h('strong', { 'data-testid': 'target-count' }, String(n)), n === 1 ? ' device matches now. ' : ' devices match now. ',
        h('span', { class: 'muted' }, 'A job targets the devices that match when it starts.'));
    } catch (err) {
      previewed = null;
      submit.disabled = true;
      fill(preview, h('span', { class: 'text-bad' }, `${err.code ? `${err.code}: ` : ''}${err.message}`));
    }
  });

  const form = h('form', {
    class: 'stack',
    onsubmit: async (e) => {
      e.preventDefault();
      errors.clear();
      if (condition.value.trim() !== previewed) return;
      submit.disabled = true;
      try {
        const job = { jobId: jobId.value.trim(), type: typeMethod.checked ? 'scheduleDeviceMethod' : 'scheduleUpdateTwin' };
        if (typeMethod.checked) {
          if (!methodName.value.trim()) throw new Error('Give the method name');
          const payload = parseJsonField(methodPayload.value, 'Payload');
          job.cloudToDeviceMethod = {
            methodName: methodName.value.trim(), payload: payload === undefined ? null : payload,
            responseTimeoutInSeconds: Number(responseTimeout.value) || 30, connectTimeoutInSeconds: Number(connectTimeout.value) || 0,
          };
        } else {
          const patch = { etag: '*' };
          const t = parseJsonField(tags.value, 'Tags');
          const d = parseJsonField(desired.value, 'Desired properties');
          if (t !== undefined) patch.tags = t;
          if (d !== undefined) patch.properties = { desired: d };
          if (t === undefined && d === undefined) throw new Error('Give tags or desired properties to set');
          job.updateTwin = patch;
        }
        job.startTime = startTime.value ? new Date(startTime.value).toISOString() : null;
        if (maxExecution.value) job.maxExecutionTimeInSeconds = Number(maxExecution.value);
        job.queryCondition = previewed;
        const created = await api.createJob(job);
        toast(`Job ${created.jobId} scheduled`);
        ctx.navigate(`#/jobs/${encodeURIComponent(created.jobId)}`);
      } catch (err) {
        errors.show(err);
        submit.disabled = false;
      }
    },
  },
  h('div', { class: 'grid-2' },
    h('div', { class: 'stack' },
      field('Job id', jobId, 'Letters, digits and -; at most 64'),
      h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Type'),
        h('div', { class: 'radios' },
          h('label', {}, typeMethod, ' Direct method'),
          h('label', {}, typeTwin, ' Twin update'))),
      field('Target devices (query condition)', condition, 'The WHERE clause of a twin query, without WHERE; * for all devices'),
      h('div', { class: 'preview-row' }, previewButton, preview),
      h('div', { class: 'grid-2 tight' },
        field('Start time', startTime, 'Empty: now (your local time)'),
        field('Max execution time (s)', maxExecution, 'Devices not reached by then fail'))),
    h('div', { class: 'stack' }, methodFields, twinFields)),
  errors.el,
  h('div', { class: 'form-actions' }, h('a', { href: '#/jobs', class: 'btn btn-ghost' }, 'Cancel'), submit,
    h('span', { class: 'muted' }, 'Preview the targets to enable scheduling.')));

  fill(root,
    h('div', { class: 'page-head' }, h('div', {}, h('a', { href: '#/jobs', class: 'back' }, '← Jobs'), h('h1', {}, 'Schedule a job'))),
    h('div', { class: 'card' }, h('div', { class: 'card-body' }, form)));
}
