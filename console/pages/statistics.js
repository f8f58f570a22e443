// The hub's statistics: GET /statistics/devices (the registry) and GET /statistics/service.

import { h, fill, card, errorSlot, compact } from '../ui.js';

const REFRESH_MS = 5000;
const LABELS = {
  totalDeviceCount: 'Devices', enabledDeviceCount: 'Enabled', disabledDeviceCount: 'Disabled',
  connectedDeviceCount: 'Connected devices', openConnections: 'Open connections', pendingMethodCalls: 'Pending method calls',
  refusedConnects: 'Refused connects', aclViolations: 'ACL violations', refusedConnectionsOverLimit: 'Refused over limit',
};

function label(key) {
  return LABELS[key] || key.replace(/([a-z])([A-Z])/g, (_, a, b) => `${a} ${b.toLowerCase()}`).replace(/^./, (c) => c.toUpperCase());
}

function tiles(stats, testid) {
  const primitives = Object.entries(stats || {}).filter(([, v]) => v === null || typeof v !== 'object');
  const nested = Object.entries(stats || {}).filter(([, v]) => v !== null && typeof v === 'object');
  return h('div', {},
    h('div', { class: 'tiles', 'data-testid': testid },
      primitives.map(([k, v]) => h('div', { class: 'tile', dataset: { key: k } },
        h('div', { class: 'tile-value' }, typeof v === 'number' ? v.toLocaleString() : compact(v)),
        h('div', { class: 'tile-label' }, label(k))))),
    nested.map(([k, v]) => h('div', { class: 'nested' }, h('h3', {}, label(k)), h('pre', { class: 'code small' }, JSON.stringify(v, null, 2)))));
}

export function mount(root, ctx) {
  const { api } = ctx;
  const errors = errorSlot();
  const registry = h('div');
  const service = h('div');
  const updated = h('span', { class: 'muted' });
  fill(root,
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Statistics'), updated)),
    errors.el,
    card('Registry', registry),
    card('Service', service));
  ctx.every(REFRESH_MS, async () => {
    try {
      const [devices, svc] = await Promise.all([api.statisticsDevices({ signal: ctx.signal }), api.statisticsService({ signal: ctx.signal })]);
      errors.clear();
      fill(registry, tiles(devices, 'registry-stats'));
      fill(service, tiles(svc, 'service-stats'));
      fill(updated, `Updated ${new Date().toLocaleTimeString()} · every 5 s`);
    } catch (err) {
      if (err.name !== 'AbortError') errors.show(err);
    }
  });
}
