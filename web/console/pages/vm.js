// One VM: its definition, its run state from the VM manager, fault
// tolerance, live charts, history, the actions, and the serial and
// graphical consoles (xterm.js and noVNC, loaded when their tab opens).
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { ApiError, enc } from '../api.js';
import { pageHead, card, kv, table, badge, button, yesNo, errorBox, confirmDialog, formDialog, notify } from '../ui.js';
import { mib, num, pct, ms, rate, dateTime, DASH } from '../format.js';
import { loadMembers, vmState, stateKind, ftKind } from '../model.js';
import { TimeChart, chartBox, seconds } from '../chart.js';
import { vmRequest, editVM, deleteVM } from './vmforms.js';

const wsBase = () => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`;

export default function vmPage(ctx) {
  const { api, root, params } = ctx;
  const name = params.name;
  const path = `/api/v1/vms/${enc(name)}`;
  const vmmPath = `/api/v1/vmm/vms/${enc(name)}`;
  const operator = ctx.can('operator');
  ctx.setTitle(name);

  let vm = null;
  let members = null;
  let gone = false;

  const stateEl = h('span');
  const actionsEl = h('div', { class: 'vm-actions' });
  const defEl = h('div');
  const rtEl = h('div');
  const ftEl = h('div');
  const histEl = h('div');
  const chartsEl = h('div', { class: 'charts' });
  const ftCard = card(t('vm.ft_panel'), ftEl);

  // Tabs: the overview, and the consoles for operators.
  const overview = h('div', { class: 'tab-panel' },
    h('div', { class: 'grid two' }, card(t('vm.definition'), defEl), h('div', {}, card(t('vm.runtime'), rtEl), ftCard)),
    card(t('vm.performance'), chartsEl),
    card(t('vm.history'), histEl));
  const consoles = { serial: makeConsole('serial'), vnc: makeConsole('vnc') };
  const tabs = [
    { id: 'overview', label: t('vm.tab_overview'), panel: overview },
    ...(operator ? [
      { id: 'serial', label: t('vm.tab_serial'), panel: consoles.serial.panel },
      { id: 'vnc', label: t('vm.tab_vnc'), panel: consoles.vnc.panel },
    ] : []),
  ];
  const tabButtons = tabs.map((tab) => h('button', {
    type: 'button', role: 'tab', id: `tab-${tab.id}`, 'aria-controls': `panel-${tab.id}`,
    onclick: () => show(tab.id),
  }, tab.label));
  tabs.forEach((tab) => {
    tab.panel.id = `panel-${tab.id}`;
    tab.panel.setAttribute('role', 'tabpanel');
  });
  const body = h('div', {},
    operator ? actionsEl : null,
    h('div', { class: 'tabs', role: 'tablist', hidden: tabs.length < 2 }, tabButtons),
    tabs.map((tab) => tab.panel));
  fill(root, pageHead(name, stateEl), body);
  let current = '';
  show('overview');

  function show(id) {
    if (current === id) {
      return;
    }
    for (const [k, c] of Object.entries(consoles)) {
      if (k !== id) {
        c.close();
      }
    }
    current = id;
    tabs.forEach((tab, i) => {
      const on = tab.id === id;
      tab.panel.hidden = !on;
      tabButtons[i].setAttribute('aria-selected', String(on));
    });
    if (consoles[id]) {
      consoles[id].open();
    }
  }

  // makeConsole is a console tab: a status line, buttons, the screen.
  function makeConsole(kind) {
    const status = h('span', { class: 'console-state' });
    const screen = h('div', { class: kind === 'serial' ? 'terminal' : 'vnc-screen' });
    const c = { session: null, panel: null, opening: false };
    const setState = (s) => {
      status.textContent = tEnum('console_state', s);
      status.dataset.state = s;
    };
    const tools = [button(t('console.reconnect'), () => { c.close(); c.open(); })];
    if (kind === 'vnc') {
      tools.push(button(t('console.ctrl_alt_del'), () => c.session && c.session.ctrlAltDel()));
    }
    c.panel = h('div', { class: 'tab-panel console' },
      h('div', { class: 'console-bar' }, status, h('span', { class: 'spacer' }), tools),
      screen,
      h('p', { class: 'hint' }, kind === 'serial' ? t('console.serial_hint') : t('console.vnc_hint')));
    c.open = async () => {
      if (c.session || c.opening) {
        return;
      }
      c.opening = true;
      setState('loading');
      try {
        const url = `${wsBase()}${vmmPath}/console/${kind}`;
        if (kind === 'serial') {
          const { openSerial } = await import('../consoles/serial.js');
          c.session = await openSerial(screen, url, setState);
        } else {
          const { openVNC } = await import('../consoles/vnc.js');
          c.session = openVNC(screen, url, setState);
        }
        if (current !== kind) {
          c.close();
        }
      } catch (e) {
        fill(screen, errorBox(e));
        setState('failed');
      } finally {
        c.opening = false;
      }
    };
    c.close = () => {
      if (c.session) {
        c.session.close();
        c.session = null;
        fill(screen);
      }
    };
    return c;
  }

  // VM charts: CPU, network, disk, from the stats of the VM's node.
  const vmCharts = (() => {
    const boxes = [t('chart.cpu'), t('chart.network'), t('chart.disk')].map(chartBox);
    fill(chartsEl, boxes.map((b) => b.el));
    const charts = [
      new TimeChart(boxes[0].plot, { series: [{ label: t('chart.cpu_pct'), color: '#2563eb' }], format: (v) => pct(v, 0) }),
      new TimeChart(boxes[1].plot, { series: [{ label: t('chart.rx'), color: '#059669' }, { label: t('chart.tx'), color: '#d97706' }], format: rate, binary: true }),
      new TimeChart(boxes[2].plot, { series: [{ label: t('chart.read'), color: '#0891b2' }, { label: t('chart.write'), color: '#dc2626' }], format: rate, binary: true }),
    ];
    charts.forEach((c) => c.draw());
    return { charts, node: '' };
  })();
  const vmValues = (s) => [[s.cpu_pct], [s.net_rx_bps, s.net_tx_bps], [s.disk_read_bps, s.disk_write_bps]];

  async function chartHistory(node) {
    vmCharts.node = node;
    let res;
    try {
      res = await api.get(`/api/v1/vmm/stats?node=${enc(node)}`);
    } catch {
      return;
    }
    const rows = [];
    for (const s of (res && res.samples) || []) {
      const v = (s.vms || []).find((x) => x.name === name);
      if (v) {
        rows.push([seconds(s.time), v]);
      }
    }
    vmCharts.charts.forEach((c, i) => c.set(rows.map(([sec, v]) => [sec, ...vmValues(v)[i]])));
  }

  function drawActions(rt) {
    if (!operator) {
      return;
    }
    const n = enc(name);
    const acts = [];
    const done = (text) => {
      notify(text);
      ctx.refresh();
    };
    if (!vm.running) {
      acts.push(button(t('vm.start'), async () => {
        await api.post(`/api/v1/vms/${n}/start`, {});
        done(t('vm.starting', { name }));
      }, { kind: 'primary' }));
    } else {
      acts.push(button(t('vm.stop'), async () => {
        await api.post(`/api/v1/vms/${n}/stop`, {});
        done(t('vm.stopping', { name }));
      }));
      acts.push(button(t('vm.force_off'), () => confirmDialog({
        title: t('vm.force_off_title', { name }), message: t('vm.force_off_confirm'), confirmLabel: t('vm.force_off'), danger: true,
        onConfirm: async () => {
          await api.post(`/api/v1/vms/${n}/stop`, { force: true });
          done(t('vm.stopping', { name }));
        },
      }), { kind: 'danger' }));
      acts.push(button(t('vm.reboot'), async () => {
        await api.post(`${vmmPath}/reboot`);
        done(t('vm.rebooting', { name }));
      }));
      acts.push(button(t('vm.reset'), () => confirmDialog({
        title: t('vm.reset_title', { name }), message: t('vm.reset_confirm'), confirmLabel: t('vm.reset'), danger: true,
        onConfirm: async () => {
          await api.post(`${vmmPath}/reset`);
          done(t('vm.reset_done', { name }));
        },
      }), { kind: 'danger' }));
      acts.push(button(t('vm.migrate'), () => migrate(), { disabled: !!vm.migrate_to }));
    }
    acts.push(button(vm.ft ? t('vm.ft_off') : t('vm.ft_on'), () => confirmDialog({
      title: vm.ft ? t('vm.ft_off') : t('vm.ft_on'),
      message: vm.ft ? t('vm.ft_off_confirm') : t('vm.ft_on_confirm'),
      confirmLabel: vm.ft ? t('vm.ft_off') : t('vm.ft_on'),
      danger: vm.ft,
      onConfirm: async () => {
        await api.put(path, vmRequest(vm, { ft: !vm.ft }));
        done(t('vm.saved', { name }));
      },
    })));
    acts.push(button(vm.ha ? t('vm.ha_off') : t('vm.ha_on'), async () => {
      await api.put(path, vmRequest(vm, { ha: !vm.ha }));
      done(t('vm.saved', { name }));
    }));
    acts.push(button(t('common.edit'), async () => {
      if (await editVM(api, vm)) {
        ctx.refresh();
      }
    }));
    acts.push(button(t('common.delete'), async () => {
      if (await deleteVM(api, vm)) {
        location.hash = '#/vms';
      }
    }, { kind: 'danger' }));
    fill(actionsEl, acts);
  }

  function migrate() {
    const targets = members.nodes.filter((m) => m.id !== vm.node);
    return formDialog({
      title: t('vm.migrate_title', { name }),
      intro: t('vm.migrate_intro'),
      submitLabel: t('vm.migrate'),
      fields: [{
        name: 'node', label: t('vm.migrate_to'), type: 'select', value: targets.length ? targets[0].id : '',
        options: targets.length ? targets.map((m) => ({ value: m.id, label: m.name })) : [{ value: '', label: t('vm.node_auto') }],
      }],
      async onSubmit(v) {
        await api.post(`/api/v1/vms/${enc(name)}/migrate`, v.node ? { node: v.node } : {});
        notify(t('vm.migrating', { name }));
        ctx.refresh();
      },
    });
  }

  function drawDefinition() {
    const node = members.name(vm.node);
    fill(defEl, kv([
      [t('vm.description'), vm.description],
      [t('vm.cpus'), num(vm.cpus)],
      [t('vm.memory'), mib(vm.memory_mib)],
      [t('vm.disks'), (vm.disks || []).length ? h('ul', { class: 'plain' }, vm.disks.map((d) => h('li', {}, h('a', { href: '#/storage' }, d.volume), ` (${num(d.size_gib)} GiB)`))) : DASH],
      [t('vm.nics'), (vm.nics || []).length ? h('ul', { class: 'plain' }, vm.nics.map((n) => h('li', {}, `${n.network} · ${n.mac || DASH}`))) : DASH],
      vm.boot ? [t('vm.boot'), h('span', {}, vm.boot.kernel, vm.boot.initrd ? ` + ${vm.boot.initrd}` : '', vm.boot.cmdline ? h('code', { class: 'block' }, vm.boot.cmdline) : null)] : null,
      [t('col.ha'), yesNo(!!vm.ha)],
      [t('col.ft'), yesNo(!!vm.ft)],
      [t('vm.priority'), num(vm.priority || 0)],
      [t('vm.node'), node || t('vm.node_auto')],
      vm.migrate_to ? [t('vm.migrating_to'), members.name(vm.migrate_to)] : null,
      vm.home ? [t('vm.home'), members.name(vm.home)] : null,
      vm.template ? [t('vm.template'), vm.template] : null,
      [t('vm.generation'), num(vm.generation)],
      [t('col.created'), dateTime(vm.created)],
      [t('col.updated'), dateTime(vm.updated)],
    ]));
  }

  function drawRuntime(rt) {
    if (rt instanceof Error) {
      fill(rtEl, errorBox(rt));
      return;
    }
    fill(rtEl, kv([
      [t('col.state'), badge(tEnum('vm_state', rt.state), stateKind(rt.state))],
      [t('col.node'), members.name(rt.node)],
      [t('vm.pid'), rt.pid ? String(rt.pid) : DASH],
      [t('vm.started'), dateTime(rt.started)],
      [t('vm.accel'), rt.accel],
      [t('vm.running_hw'), rt.cpus ? `${num(rt.cpus)} × CPU, ${mib(rt.memory_mib)}, ${num(rt.disks || 0)} × ${t('vm.disk')}, ${num(rt.nics || 0)} × NIC` : DASH],
      rt.pending && rt.pending.length ? [t('vm.pending'), h('ul', { class: 'plain' }, rt.pending.map((p) => h('li', {}, p)))] : null,
      rt.problem ? [t('vm.problem'), h('span', { class: 'bad-text' }, rt.problem)] : null,
    ]));
  }

  function drawFT(rt) {
    const ft = rt && !(rt instanceof Error) ? rt.ft : null;
    ftCard.hidden = !vm.ft && !vm.ft_state && !ft;
    if (ftCard.hidden) {
      return;
    }
    const state = (ft && ft.state) || vm.ft_state || 'unprotected';
    fill(ftEl, kv([
      [t('col.state'), badge(tEnum('ft_state', state), ftKind(state))],
      [t('ft.role'), ft && ft.role ? tEnum('ft_role', ft.role) : DASH],
      [t('ft.peer'), ft ? ft.peer : DASH],
      [t('ft.secondary'), (ft && ft.secondary) || members.name(vm.ft_secondary)],
      [t('ft.progress'), ft && ft.progress_percent ? h('span', { class: 'cap' }, h('meter', { min: 0, max: 100, value: ft.progress_percent }), pct(ft.progress_percent, 0)) : DASH],
      [t('ft.checkpoints'), ft && ft.checkpoints ? num(ft.checkpoints) : DASH],
      [t('ft.pause'), ft && ft.checkpoint_pause_ms ? `${ms(ft.checkpoint_pause_ms)} / ${ms(ft.checkpoint_pause_max_ms)}` : DASH],
      [t('ft.reason'), (ft && ft.reason) || vm.ft_reason],
      [t('ft.epoch'), ft && ft.epoch ? num(ft.epoch) : vm.ft_epoch ? num(vm.ft_epoch) : DASH],
    ]));
  }

  function drawHistory(events) {
    if (events instanceof Error) {
      fill(histEl, errorBox(events));
      return;
    }
    const list = [...(events || [])].reverse();
    fill(histEl, table([
      { label: t('col.time'), cell: (e) => dateTime(e.time) },
      { label: t('col.event'), cell: (e) => tEnum('vm_event', e.kind) },
      { label: t('col.detail'), cell: (e) => e.detail, class: 'wrap' },
    ], list, t('vm.no_history')));
  }

  async function refresh() {
    if (gone) {
      return;
    }
    let m;
    try {
      [vm, m] = await Promise.all([api.get(path), loadMembers(api)]);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        gone = true;
        Object.values(consoles).forEach((c) => c.close());
        fill(root, pageHead(name), h('p', { class: 'empty' }, t('vm.not_found')), h('p', {}, h('a', { href: '#/vms' }, t('vm.back'))));
        return;
      }
      throw e;
    }
    members = m;
    const [rt, events] = await Promise.all([
      api.get(vmmPath).catch((e) => e),
      api.get(`${vmmPath}/history`).catch((e) => e),
    ]);
    const state = vmState(vm, rt instanceof Error ? null : rt);
    fill(stateEl, badge(tEnum('vm_state', state), stateKind(state)));
    drawActions(rt);
    drawDefinition();
    drawRuntime(rt);
    drawFT(rt);
    drawHistory(events);
    const node = vm.node || '';
    if (node && node !== vmCharts.node) {
      chartHistory(node);
    }
  }

  return {
    refresh,
    wants: (c) => (c.type.startsWith('vm.') && c.target === name) || c.type.startsWith('member.'),
    stats(msg) {
      if (!vm || msg.node !== vm.node) {
        return;
      }
      const v = (msg.vms || []).find((x) => x.name === name);
      if (v) {
        const sec = seconds(msg.time);
        vmValues(v).forEach((vals, i) => vmCharts.charts[i].push(sec, vals));
      }
    },
    destroy() {
      Object.values(consoles).forEach((c) => c.close());
      vmCharts.charts.forEach((c) => c.destroy());
    },
  };
}
