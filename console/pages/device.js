// One device: identity and connection string, its twin (tags, desired, reported, versions,
// etag) with editing of tags and desired (PATCH /twins/{id} with If-Match), and direct methods.

import { h, fill, badge, time, ago, card, field, errorSlot, toast, pretty, parseJsonField } from '../ui.js';

const REFRESH_MS = 3000;

// The desired or reported section without its $metadata and $version.
function section(props) {
  const out = {};
  for (const [k, v] of Object.entries(props || {})) if (!k.startsWith('$')) out[k] = v;
  return out;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// The JSON merge patch that turns `before` into `after` (docs/protocol.md §6.3): changed
// members as they are now, removed members as null. Empty when nothing changed.
export function mergePatch(before, after) {
  const patch = {};
  for (const [k, v] of Object.entries(after)) {
    if (isObject(v) && isObject(before[k])) {
      const inner = mergePatch(before[k], v);
      if (Object.keys(inner).length) patch[k] = inner;
    } else if (!(k in before) || JSON.stringify(before[k]) !== JSON.stringify(v)) {
      patch[k] = v;
    }
  }
  for (const k of Object.keys(before)) if (!(k in after)) patch[k] = null;
  return patch;
}

export async function mount(root, ctx, deviceId) {
  const { api } = ctx;
  const errors = errorSlot();
  const headBadges = h('div', { class: 'badges' });
  const statusButton = h('button', { type: 'button', class: 'btn' });
  const identityBody = h('div');
  const twinMeta = h('dl', { class: 'facts' });
  const tagsEditor = h('textarea', { class: 'code', rows: 8, spellcheck: 'false', name: 'tags', 'aria-label': 'Tags (JSON)' });
  const desiredEditor = h('textarea', { class: 'code', rows: 8, spellcheck: 'false', name: 'desired', 'aria-label': 'Desired properties (JSON)' });
  const reportedView = h('pre', { class: 'code', 'data-testid': 'reported' });
  const twinErrors = errorSlot();
  let twin = null;
  let dirty = false;
  for (const editor of [tagsEditor, desiredEditor]) editor.addEventListener('input', () => { dirty = true; });

  fill(root,
    h('div', { class: 'page-head' },
      h('div', {},
        h('a', { href: '#/devices', class: 'back' }, '← Devices'),
        h('h1', { 'data-testid': 'device-id' }, deviceId), headBadges),
      h('div', { class: 'head-actions' }, statusButton,
        h('button', {
          type: 'button', class: 'btn btn-danger',
          onclick: async () => {
            if (!confirm(`Delete device ${deviceId}? Its twin and keys are gone for good.`)) return;
            try {
              await api.deleteDevice(deviceId);
              toast(`Device ${deviceId} deleted`);
              ctx.navigate('#/devices');
            } catch (err) { errors.show(err); }
          },
        }, 'Delete'))),
    errors.el,
    h('div', { class: 'grid-2' },
      card('Identity', identityBody),
      card('Direct method', methodForm())),
    card('Twin', h('div', {},
      twinMeta,
      twinErrors.el,
      h('div', { class: 'grid-3' },
        field('Tags', tagsEditor, 'Edit as JSON; removed members are deleted'),
        field('Desired properties', desiredEditor, 'Sent to the device when it is subscribed'),
        h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Reported properties'), reportedView,
          h('span', { class: 'field-hint' }, 'Written by the device (read-only)')))),
    [
      h('button', { type: 'button', class: 'btn', onclick: () => { dirty = false; loadTwin(); } }, 'Reload'),
      h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'save-twin', onclick: saveTwin }, 'Save twin'),
    ]));

  function renderDevice(device) {
    fill(headBadges, badge(device.connectionState || 'Disconnected'), badge(device.status || 'enabled'));
    fill(statusButton, device.status === 'disabled' ? 'Enable' : 'Disable');
    statusButton.onclick = async () => {
      try {
        const updated = await api.setDeviceStatus(deviceId, device.status === 'disabled' ? 'enabled' : 'disabled');
        toast(`Device ${deviceId} ${updated.status}`);
        renderDevice(updated);
      } catch (err) { errors.show(err); }
    };
    const key = device.authentication?.symmetricKey?.primaryKey;
    const connectionString = key ? `HostName=${api.hostName};DeviceId=${deviceId};SharedAccessKey=${key}` : '';
    const secret = h('code', { class: 'secret', 'data-testid': 'device-connection-string', dataset: { value: connectionString } },
      connectionString ? '•'.repeat(32) : 'no symmetric key');
    let shown = false;
    const reveal = h('button', {
      type: 'button', class: 'btn btn-small',
      onclick: () => { shown = !shown; secret.textContent = shown ? connectionString : '•'.repeat(32); reveal.textContent = shown ? 'Hide' : 'Show'; },
    }, 'Show');
    const copy = h('button', {
      type: 'button', class: 'btn btn-small',
      onclick: async () => {
        try { await navigator.clipboard.writeText(connectionString); toast('Connection string copied'); } catch { toast('Copy failed: use Show and select it', 'bad'); }
      },
    }, 'Copy');
    fill(identityBody, h('dl', { class: 'facts' },
      h('dt', {}, 'Connection string'), h('dd', { class: 'secret-row' }, secret, connectionString ? [reveal, copy] : null),
      h('dt', {}, 'Authentication'), h('dd', {}, device.authentication?.type || '—'),
      h('dt', {}, 'Connection'), h('dd', {}, `${device.connectionState || 'Disconnected'} since ${time(device.connectionStateUpdatedTime)}`),
      h('dt', {}, 'Last activity'), h('dd', {}, `${time(device.lastActivityTime)} ${ago(device.lastActivityTime) ? `(${ago(device.lastActivityTime)})` : ''}`),
      h('dt', {}, 'Status'), h('dd', {}, `${device.status}${device.statusReason ? ` (${device.statusReason})` : ''}, since ${time(device.statusUpdatedTime)}`),
      h('dt', {}, 'Generation'), h('dd', {}, h('code', {}, device.generationId || '—'))));
  }

  function renderTwin(t) {
    twin = t;
    const desired = t.properties?.desired || {};
    const reported = t.properties?.reported || {};
    fill(twinMeta,
      h('dt', {}, 'Twin version'), h('dd', { 'data-testid': 'twin-version' }, String(t.version ?? '—')),
      h('dt', {}, 'ETag'), h('dd', {}, h('code', { 'data-testid': 'twin-etag' }, t.etag || '—')),
      h('dt', {}, 'Desired version'), h('dd', { 'data-testid': 'desired-version' }, String(desired.$version ?? '—')),
      h('dt', {}, 'Reported version'), h('dd', {}, String(reported.$version ?? '—')));
    if (!dirty) {
      tagsEditor.value = pretty(t.tags || {});
      desiredEditor.value = pretty(section(desired));
    }
    reportedView.textContent = pretty(section(reported));
  }

  async function loadTwin() {
    try {
      renderTwin(await api.getTwin(deviceId, { signal: ctx.signal }));
      twinErrors.clear();
    } catch (err) {
      if (err.name !== 'AbortError') twinErrors.show(err);
    }
  }

  async function saveTwin() {
    if (!twin) return;
    try {
      const tags = parseJsonField(tagsEditor.value, 'Tags') ?? {};
      const desired = parseJsonField(desiredEditor.value, 'Desired properties') ?? {};
      if (!isObject(tags) || !isObject(desired)) throw new Error('Tags and desired properties must be JSON objects');
      const patch = {};
      const tagsPatch = mergePatch(twin.tags || {}, tags);
      const desiredPatch = mergePatch(section(twin.properties?.desired), desired);
      if (Object.keys(tagsPatch).length) patch.tags = tagsPatch;
      if (Object.keys(desiredPatch).length) patch.properties = { desired: desiredPatch };
      if (!Object.keys(patch).length) { toast('Nothing changed', 'info'); return; }
      const updated = await api.patchTwin(deviceId, patch, twin.etag);
      dirty = false;
      renderTwin(updated);
      twinErrors.clear();
      toast('Twin saved');
    } catch (err) {
      if (err.status === 412) err.message += ' The twin changed since it was loaded: reload it and apply your edit again.';
      twinErrors.show(err);
    }
  }

  function methodForm() {
    const name = h('input', { type: 'text', name: 'method-name', required: true, placeholder: 'e.g. reboot', 'aria-label': 'Method name' });
    const payload = h('textarea', { class: 'code', rows: 4, name: 'method-payload', spellcheck: 'false', value: '{}', 'aria-label': 'Payload (JSON)' });
    const responseTimeout = h('input', { type: 'number', name: 'response-timeout', min: 5, max: 300, value: '30' });
    const connectTimeout = h('input', { type: 'number', name: 'connect-timeout', min: 0, max: 300, value: '0' });
    const result = h('div', { class: 'method-result', 'data-testid': 'method-result', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Invoke');
    return h('form', {
      class: 'stack',
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        fill(result, h('p', { class: 'muted' }, `Calling ${name.value}…`));
        try {
          const body = parseJsonField(payload.value, 'Payload');
          const answer = await api.invokeMethod(deviceId, {
            methodName: name.value.trim(), payload: body === undefined ? null : body,
            responseTimeoutInSeconds: Number(responseTimeout.value) || 30, connectTimeoutInSeconds: Number(connectTimeout.value) || 0,
          });
          const ok = answer.status >= 200 && answer.status < 300;
          fill(result,
            h('div', { class: 'result-head' }, 'Device answered ', h('span', { class: `badge badge-${ok ? 'ok' : 'bad'}`, 'data-testid': 'method-status' }, String(answer.status))),
            h('pre', { class: 'code', 'data-testid': 'method-payload' }, pretty(answer.payload)));
        } catch (err) {
          fill(result, h('div', { class: 'alert alert-error' }, h('strong', {}, `${err.code || 'Error'} (HTTP ${err.status})`), ' ', err.message));
        } finally {
          submit.disabled = false;
        }
      },
    },
    field('Method name', name),
    field('Payload', payload, 'JSON; sent to the device as the request body'),
    h('div', { class: 'grid-2 tight' },
      field('Response timeout (s)', responseTimeout),
      field('Connect timeout (s)', connectTimeout, '0: fail at once when offline')),
    h('div', {}, submit),
    result);
  }

  await loadTwin();
  // Connection state and reported properties change without us; editors keep the user's edits.
  ctx.every(REFRESH_MS, async () => {
    try {
      renderDevice(await api.getDevice(deviceId, { signal: ctx.signal }));
      errors.clear();
    } catch (err) {
      if (err.name !== 'AbortError') errors.show(err);
    }
    if (twin && !dirty) await loadTwin();
  });
}
