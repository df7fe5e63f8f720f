// Provisioning: the plan (which node serves the provisioning network, and
// how), and the machines that booted from it with their hardware and
// their install sequence, live: approve, retry a failed step, forget.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { pageHead, card, kv, table, badge, button, formDialog, confirmDialog, notify, yesNo } from '../ui.js';
import { bytes, dateTime, num } from '../format.js';
import { hasRole } from '../model.js';

/** machineKind is the badge colour of a machine's state. */
function machineKind(state) {
  switch (state) {
    case 'joined':
      return 'ok';
    case 'failed':
      return 'bad';
    case 'discovered':
    case 'approved':
    case 'installing':
    case 'installed':
      return 'warn';
    default:
      return 'muted';
  }
}

function stepKind(state) {
  return { done: 'ok', failed: 'bad', running: 'warn' }[state] || 'muted';
}

function seconds(s) {
  if (!s.started || s.started.startsWith('0001') || !s.ended || s.ended.startsWith('0001')) {
    return '';
  }
  return `${num((Date.parse(s.ended) - Date.parse(s.started)) / 1000, 1)} s`;
}

// hardware is a machine's inventory in one line.
function hardware(inv) {
  if (!inv) {
    return '';
  }
  const disks = (inv.disks || []).map((d) => `${d.name} ${bytes(d.size_bytes)}`).join(', ');
  return t('prov.hardware', { cpus: inv.cpus, memory: bytes(inv.memory_bytes), disks: disks || '—', nics: (inv.nics || []).length });
}

// current is the step a machine is at: the failed or running one, or the
// last one done.
function current(m) {
  const steps = m.steps || [];
  const at = steps.find((s) => s.state === 'failed' || s.state === 'running') || [...steps].reverse().find((s) => s.state === 'done');
  return at ? `${tEnum('step', at.name)}: ${tEnum('step_state', at.state)}` : '';
}

// stepLog is a machine's sequence with each step's times and output.
function stepLog(m) {
  return table([
    { label: t('prov.step'), cell: (s) => tEnum('step', s.name) },
    { label: t('col.state'), cell: (s) => badge(tEnum('step_state', s.state), stepKind(s.state)) },
    { label: t('prov.started'), cell: (s) => (s.started && !s.started.startsWith('0001') ? dateTime(s.started) : '') },
    { label: t('prov.took'), cell: (s) => seconds(s), class: 'num' },
    { label: t('prov.output'), cell: (s) => h('span', { class: 'pre' }, [s.output, s.error].filter(Boolean).join('\n')), class: 'wrap' },
  ], m.steps, t('prov.no_steps'));
}

export default function provisioning(ctx) {
  const { api, root, session } = ctx;
  const admin = hasRole(session.role, 'admin');
  ctx.setTitle(t('nav.provisioning'));
  const planBox = h('div');
  const machinesBox = h('div');
  const open = new Set(); // machines whose step log is unfolded
  let plan = null;

  const edit = admin ? button(t('prov.edit'), async () => {
    const p = plan || {};
    const saved = await formDialog({
      title: t('prov.edit'),
      intro: t('prov.intro'),
      submitLabel: t('common.save'),
      fields: [
        { name: 'enabled', label: t('prov.enabled'), type: 'checkbox', value: p.enabled },
        { name: 'node', label: t('prov.node'), value: p.node, hint: t('prov.node_hint') },
        { name: 'mode', label: t('prov.mode'), type: 'select', value: p.mode || 'dhcp',
          options: ['dhcp', 'proxy'].map((v) => ({ value: v, label: tEnum('prov_mode', v) })) },
        { name: 'address', label: t('prov.address'), value: p.address, placeholder: '192.168.77.1/24' },
        { name: 'range_start', label: t('prov.range_start'), value: p.range_start },
        { name: 'range_end', label: t('prov.range_end'), value: p.range_end },
        { name: 'router', label: t('prov.router'), value: p.router, advanced: true },
        { name: 'lease_seconds', label: t('prov.lease'), type: 'number', value: p.lease_seconds || 3600, min: 0, advanced: true },
      ],
      async onSubmit(v) {
        return api.put('/api/v1/provisioning', { ...p, ...v });
      },
    });
    if (saved) {
      notify(t('prov.saved'));
      ctx.refresh();
    }
  }, { kind: 'primary' }) : null;
  fill(root, pageHead(t('nav.provisioning'), edit), h('p', { class: 'hint' }, t('prov.intro')),
    card(t('prov.plan'), planBox), card(t('prov.machines'), machinesBox));

  function actions(m) {
    if (!admin) {
      return '';
    }
    const out = [];
    if (m.state === 'discovered') {
      out.push(button(t('prov.approve'), async () => {
        const ok = await formDialog({
          title: t('prov.approve_title', { mac: m.mac }),
          intro: t('prov.approve_intro'),
          submitLabel: t('prov.approve'),
          fields: [{ name: 'name', label: t('prov.name'), required: true, value: m.name }],
          async onSubmit(v) {
            return api.post(`/api/v1/provisioning/machines/${enc(m.mac)}/approve`, { name: v.name });
          },
        });
        if (ok) {
          notify(t('prov.approved', { mac: m.mac }));
          ctx.refresh();
        }
      }, { kind: 'primary' }));
    }
    if (m.state === 'failed') {
      out.push(button(t('prov.retry'), async () => {
        await api.post(`/api/v1/provisioning/machines/${enc(m.mac)}/retry`, {});
        ctx.refresh();
      }));
    }
    out.push(button(t('prov.forget'), () => confirmDialog({
      title: t('prov.forget_title', { mac: m.mac }),
      message: t('prov.forget_confirm'),
      confirmLabel: t('prov.forget'),
      danger: true,
      onConfirm: async () => {
        await api.del(`/api/v1/provisioning/machines/${enc(m.mac)}`);
        ctx.refresh();
      },
    }), { kind: 'danger' }));
    return h('span', { class: 'actions' }, out);
  }

  async function refresh() {
    plan = await api.get('/api/v1/provisioning');
    fill(planBox, kv([
      [t('prov.enabled'), yesNo(plan.enabled)],
      [t('prov.node'), plan.node],
      [t('prov.mode'), tEnum('prov_mode', plan.mode)],
      [t('prov.address'), plan.address],
      plan.mode === 'dhcp' ? [t('prov.range'), plan.range_start ? `${plan.range_start} – ${plan.range_end}` : ''] : null,
    ]));
    const machines = (await api.get('/api/v1/provisioning/machines')) || [];
    fill(machinesBox, table([
      { label: t('prov.mac'), cell: (m) => h('button', {
        type: 'button', class: 'link', 'aria-expanded': String(open.has(m.mac)),
        onclick: () => { open.has(m.mac) ? open.delete(m.mac) : open.add(m.mac); refresh(); },
      }, m.mac) },
      { label: t('col.state'), cell: (m) => badge(tEnum('machine_state', m.state), machineKind(m.state)) },
      { label: t('col.name'), cell: (m) => m.name },
      { label: t('prov.firmware'), cell: (m) => (m.firmware || '').toUpperCase() },
      { label: t('prov.hardware_col'), cell: (m) => hardware(m.inventory), class: 'wrap' },
      { label: t('prov.address'), cell: (m) => m.address },
      { label: t('prov.at'), cell: (m) => current(m) + (m.error ? ` — ${m.error}` : ''), class: 'wrap' },
      { label: t('col.actions'), cell: actions },
    ], machines, t('prov.none')),
    machines.filter((m) => open.has(m.mac)).map((m) => card(t('prov.sequence', { mac: m.mac }), stepLog(m))));
  }

  return {
    refresh,
    // The sequence log is live: every step an installer reports is a
    // change of its machine.
    wants: (c) => /^(machine|provisioning)/.test(c.type),
  };
}
