// The members: nodes and the witness, how the leader sees them, their
// inventory, maintenance, and each node's services.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { pageHead, card, kv, table, badge, button, yesNo, errorBox, confirmDialog, infoDialog, notify } from '../ui.js';
import { bytes, num, ms, dateTime, DASH } from '../format.js';
import { loadMembers } from '../model.js';

export default function nodes(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.nodes'));
  const operator = ctx.can('operator');
  const body = h('div', { class: 'members' });
  const note = h('div');
  fill(root, pageHead(t('nav.nodes'), button(t('common.refresh'), () => ctx.refresh())), note, body);

  // nodeHealth asks a node's front door for its services. The answer
  // counts only if it comes from that node.
  async function nodeHealth(m) {
    try {
      const res = await api.get(`/api/v1/cluster/members/${enc(m.id)}/health`);
      return res && res.node === m.name ? res : null;
    } catch {
      return null;
    }
  }

  function maintenance(m) {
    const on = !m.maintenance;
    return button(on ? t('node.enter_maintenance') : t('node.leave_maintenance'), () => confirmDialog({
      title: on ? t('node.enter_title', { name: m.name }) : t('node.leave_title', { name: m.name }),
      message: on ? t('node.enter_confirm') : t('node.leave_confirm'),
      confirmLabel: on ? t('node.enter_maintenance') : t('node.leave_maintenance'),
      danger: on,
      checkbox: on ? null : { label: t('node.return_vms'), checked: true },
      onConfirm: async (ret) => {
        await api.post(`/api/v1/cluster/members/${enc(m.id)}/maintenance`, on ? { on: true } : { on: false, return: ret });
        notify(on ? t('node.entered', { name: m.name }) : t('node.left', { name: m.name }));
        ctx.refresh();
      },
    }));
  }

  // showLog opens a service's last output lines on a member.
  async function showLog(m, service) {
    let text;
    try {
      const lines = (await api.get(`/api/v1/cluster/members/${enc(m.id)}/logs/${enc(service)}?lines=200`)) || [];
      text = lines.length ? lines.map((l) => `${dateTime(l.time)}  ${l.text}`).join('\n') : t('node.log_empty');
    } catch (e) {
      text = errorBox(e);
    }
    await infoDialog({
      title: t('node.log_title', { service, name: m.name }),
      body: typeof text === 'string' ? h('pre', { class: 'log' }, text) : text,
    });
  }

  function services(m, hl) {
    if (!hl) {
      return h('p', { class: 'muted' }, t('node.health_unknown'));
    }
    return h('div', {},
      kv([
        [t('node.healthy'), yesNo(hl.healthy, true)],
        [t('node.version'), hl.version],
        [t('node.uptime'), hl.uptime_seconds ? t('node.uptime_value', { h: num(hl.uptime_seconds / 3600, 1) }) : DASH],
        hl.problems && hl.problems.length ? [t('node.problems'), h('ul', { class: 'plain' }, hl.problems.map((p) => h('li', {}, p)))] : null,
      ]),
      table([
        { label: t('col.service'), cell: (s) => s.name },
        { label: t('col.state'), cell: (s) => badge(tEnum('service_state', s.state), s.state === 'running' ? 'ok' : s.critical ? 'bad' : 'warn') },
        { label: t('col.restarts'), cell: (s) => (s.restarts === undefined ? DASH : num(s.restarts)), class: 'num' },
        { label: t('col.critical'), cell: (s) => (s.critical === undefined ? DASH : yesNo(s.critical)) },
        { label: t('col.pid'), cell: (s) => (s.pid ? String(s.pid) : DASH), class: 'num' },
        operator ? { label: t('node.log'), cell: (s) => button(t('node.log'), () => showLog(m, s.name)) } : null,
      ].filter(Boolean), hl.services || [], t('node.no_services')));
  }

  async function refresh() {
    const [m, health] = await Promise.all([loadMembers(api), api.get('/api/v1/cluster/health').catch((e) => e)]);
    const hv = health instanceof Error ? null : health;
    const healthOf = new Map(((hv && hv.members) || []).map((x) => [x.id, x]));
    // Nodes run services under a supervisor; the witness is one program.
    const perNode = await Promise.all(m.list.map((x) => (x.role === 'node' ? nodeHealth(x) : null)));
    fill(note,
      health instanceof Error ? errorBox(health) : null,
      m.haveRecords ? null : h('p', { class: 'hint' }, t('node.no_records')));
    fill(body, m.list.map((x, i) => {
      const hm = healthOf.get(x.id) || {};
      const inv = x.inventory || {};
      const addrs = (x.addresses && x.addresses.length ? x.addresses : [x.address]).filter(Boolean);
      return card(null,
        h('div', { class: 'member-head' },
          h('h2', {}, x.name),
          badge(tEnum('member_role', x.role), 'muted'),
          hm.leader ? badge(t('node.leader'), 'ok') : null,
          x.maintenance ? badge(t('node.in_maintenance'), 'warn') : null,
          h('span', { class: 'spacer' }),
          operator && x.role === 'node' && m.haveRecords ? maintenance(x) : null),
        h('div', { class: 'grid two' },
          kv([
            [t('node.id'), h('code', {}, x.id)],
            [t('col.addresses'), addrs.length ? h('ul', { class: 'plain' }, addrs.map((a) => h('li', {}, a))) : DASH],
            [t('col.reachable'), hv ? yesNo(!!hm.reachable, true) : DASH],
            [t('col.rtt'), hm.rtt_ms ? ms(hm.rtt_ms) : DASH],
            [t('node.last_contact'), dateTime(hm.last_contact)],
            [t('node.suffrage'), tEnum('suffrage', hm.suffrage || x.suffrage)],
            hm.error ? [t('node.error'), h('span', { class: 'bad-text' }, hm.error)] : null,
          ]),
          kv([
            [t('node.board'), inv.board],
            [t('node.image'), inv.image_version],
            [t('col.cpus'), inv.cpus ? num(inv.cpus) : DASH],
            [t('col.memory'), inv.memory_bytes ? bytes(inv.memory_bytes) : DASH],
            [t('col.maintenance'), x.role === 'node' && m.haveRecords ? yesNo(!!x.maintenance, false) : DASH],
            [t('node.joined'), dateTime(x.joined)],
          ])),
        x.role === 'node' ? h('h3', {}, t('node.services')) : null,
        x.role === 'node' ? services(x, perNode[i]) : null);
    }));
  }

  return {
    refresh,
    wants: (c) => /^(member\.|node\.|cluster-ip\.|forced)/.test(c.type),
  };
}
