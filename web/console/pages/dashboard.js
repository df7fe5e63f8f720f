// The dashboard: the cluster's health at a glance, capacity, live charts
// per node (fed by the events websocket's stats), recent activity.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { card, pageHead, kv, table, badge, yesNo, errorBox } from '../ui.js';
import { bytes, rate, pct, num, ms, dateTime, DASH } from '../format.js';
import { loadMembers } from '../model.js';
import { TimeChart, chartBox, seconds } from '../chart.js';

// settle waits for a promise and never throws: {value} or {error}.
const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));

export default function dashboard(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.dashboard'));
  const healthEl = h('div');
  const capEl = h('div');
  const membersEl = h('div');
  const chartsEl = h('div', { class: 'node-charts' });
  const activityEl = h('div');
  fill(root,
    pageHead(t('nav.dashboard')),
    h('div', { class: 'grid dash-top' }, card(t('dash.health'), healthEl), card(t('dash.members'), membersEl)),
    card(t('dash.capacity'), capEl),
    card(t('dash.live'), chartsEl),
    card(t('dash.activity'), activityEl));

  const sets = new Map(); // node ID -> its charts
  const latest = new Map(); // node ID -> its last stats message
  let last = null; // the answers the capacity was drawn from
  let capTimer = 0;

  // liveCapacity redraws the capacity with new stats, at most once a second.
  function liveCapacity() {
    if (!last || capTimer) {
      return;
    }
    capTimer = setTimeout(() => {
      capTimer = 0;
      renderCapacity(last.members, last.vms);
    }, 1000);
  }

  function chartSet(id, name) {
    const boxes = [t('chart.cpu'), t('chart.memory'), t('chart.network'), t('chart.disk')].map(chartBox);
    const set = {
      memTotal: 0,
      title: h('h3', {}, name),
      el: null,
      charts: null,
    };
    set.charts = [
      new TimeChart(boxes[0].plot, { series: [{ label: t('chart.cpu_pct'), color: '#2563eb' }], format: (v) => pct(v, 0), max: () => 100 }),
      new TimeChart(boxes[1].plot, { series: [{ label: t('chart.used'), color: '#7c3aed' }], format: bytes, binary: true, max: () => set.memTotal }),
      new TimeChart(boxes[2].plot, { series: [{ label: t('chart.rx'), color: '#059669' }, { label: t('chart.tx'), color: '#d97706' }], format: rate, binary: true }),
      new TimeChart(boxes[3].plot, { series: [{ label: t('chart.read'), color: '#0891b2' }, { label: t('chart.write'), color: '#dc2626' }], format: rate, binary: true }),
    ];
    set.el = h('div', { class: 'node-chart' }, set.title, h('div', { class: 'charts' }, boxes.map((b) => b.el)));
    return set;
  }

  // values splits a stats sample into the four charts' points.
  const values = (s) => [[s.cpu_pct], [s.mem_used_bytes], [s.net_rx_bps, s.net_tx_bps], [s.disk_read_bps, s.disk_write_bps]];

  async function history(id, set) {
    let res;
    try {
      res = await api.get(`/api/v1/vmm/stats?node=${enc(id)}`);
    } catch {
      return; // live points only
    }
    const samples = (res && res.samples) || [];
    const newest = samples[samples.length - 1];
    if (newest) {
      set.memTotal = newest.mem_total_bytes || set.memTotal;
      if (!latest.has(id)) {
        latest.set(id, newest);
        liveCapacity();
      }
    }
    set.charts.forEach((c, i) => c.set(samples.map((s) => [seconds(s.time), ...values(s)[i]])));
  }

  function syncCharts(nodes) {
    const want = new Set(nodes.map((n) => n.id));
    for (const [id, set] of sets) {
      if (!want.has(id)) {
        set.charts.forEach((c) => c.destroy());
        set.el.remove();
        sets.delete(id);
      }
    }
    for (const n of nodes) {
      let set = sets.get(n.id);
      if (set) {
        set.title.textContent = n.name;
        continue;
      }
      set = chartSet(n.id, n.name);
      sets.set(n.id, set);
      chartsEl.append(set.el);
      set.charts.forEach((c) => c.draw());
      history(n.id, set);
    }
    if (!nodes.length) {
      fill(chartsEl, h('p', { class: 'empty' }, t('dash.no_nodes')));
    } else {
      const empty = chartsEl.querySelector('.empty');
      if (empty) {
        empty.remove();
      }
    }
  }

  function renderHealth(status, health, members) {
    if (health.error && status.error) {
      return fill(healthEl, errorBox(health.error));
    }
    const hv = health.value;
    const st = status.value;
    const m = members.value;
    const name = (id) => (m ? m.name(id) : id);
    const witness = m ? m.list.find((x) => x.role === 'witness') : null;
    const wh = witness && hv ? hv.members.find((x) => x.id === witness.id) : null;
    let quorum;
    if (hv) {
      quorum = hv.healthy
        ? badge(t('dash.healthy'), 'ok')
        : h('div', {}, badge(t('dash.degraded'), 'bad'), h('ul', { class: 'reasons' }, hv.degraded.map((r) => h('li', {}, r))));
    } else {
      quorum = errorBox(health.error);
    }
    fill(healthEl, kv([
      [t('dash.quorum'), quorum],
      [t('dash.leader'), st && (st.leader_name || name(st.leader_id))],
      [t('dash.witness'), witness ? h('span', {}, witness.name, ' ', wh ? yesNo(wh.reachable, true) : '') : badge(t('dash.no_witness'), 'warn')],
      [t('dash.cluster_ip'), st && st.cluster_ip ? h('span', {}, st.cluster_ip, ' ', h('span', { class: 'muted' }, t('dash.held_by', { node: name(st.cluster_ip_owner) || DASH }))) : DASH],
      hv && hv.forced ? [t('dash.forced'), badge(t('common.yes'), 'bad')] : null,
      [t('dash.term'), st ? num(st.term) : DASH],
    ]));
  }

  function renderMembers(health, members) {
    const m = members.value;
    const hv = health.value;
    if (!m && !hv) {
      return fill(membersEl, errorBox(members.error || health.error));
    }
    const rows = (hv ? hv.members : m.list).map((x) => ({ ...((m && m.byId.get(x.id)) || {}), ...x }));
    fill(membersEl, table([
      { label: t('col.name'), cell: (r) => h('span', {}, r.name, r.leader ? [' ', badge(t('node.leader'), 'ok')] : null) },
      { label: t('col.role'), cell: (r) => tEnum('member_role', r.role) },
      { label: t('col.reachable'), cell: (r) => (hv ? yesNo(r.reachable, true) : DASH) },
      { label: t('col.maintenance'), cell: (r) => (r.role === 'node' && m && m.haveRecords ? yesNo(!!r.maintenance, false) : DASH) },
      { label: t('col.rtt'), cell: (r) => (r.rtt_ms ? ms(r.rtt_ms) : DASH) },
    ], rows, t('dash.no_members')));
  }

  function renderCapacity(members, vms) {
    if (members.error) {
      return fill(capEl, errorBox(members.error));
    }
    const nodes = members.value.nodes;
    const list = vms.value || [];
    const rows = nodes.map((n) => {
      const used = { cpus: 0, mem: 0, vms: 0 };
      for (const vm of list) {
        if (vm.running && (vm.node === n.id || vm.ft_secondary === n.id)) {
          used.cpus += vm.cpus;
          used.mem += vm.memory_mib * 1048576;
          used.vms++;
        }
      }
      return { n, used, inv: n.inventory || {}, live: latest.get(n.id) };
    });
    const meter = (v, max) => (max ? h('meter', { min: 0, max, value: Math.min(v, max) }) : null);
    fill(capEl,
      table([
        { label: t('col.node'), cell: (r) => r.n.name },
        { label: t('col.vms_running'), cell: (r) => (vms.value ? num(r.used.vms) : DASH) },
        { label: t('col.vcpus'), cell: (r) => `${num(r.used.cpus)} / ${r.inv.cpus ? num(r.inv.cpus) : DASH}` },
        { label: t('col.vm_memory'), cell: (r) => h('span', { class: 'cap' }, meter(r.used.mem, r.inv.memory_bytes), `${bytes(r.used.mem)} / ${r.inv.memory_bytes ? bytes(r.inv.memory_bytes) : DASH}`) },
        { label: t('col.host_memory'), cell: (r) => (r.live ? h('span', { class: 'cap' }, meter(r.live.mem_used_bytes, r.live.mem_total_bytes), `${bytes(r.live.mem_used_bytes)} / ${bytes(r.live.mem_total_bytes)}`) : DASH) },
        { label: t('col.cpu'), cell: (r) => (r.live ? pct(r.live.cpu_pct, 0) : DASH) },
      ], rows, t('dash.no_nodes')),
      vms.error ? errorBox(vms.error) : null);
  }

  function renderActivity(activity) {
    if (activity.error) {
      return fill(activityEl, errorBox(activity.error));
    }
    fill(activityEl, table([
      { label: t('col.time'), cell: (e) => dateTime(e.time) },
      { label: t('col.actor'), cell: (e) => e.actor },
      { label: t('col.action'), cell: (e) => e.action },
      { label: t('col.target'), cell: (e) => e.target },
      { label: t('col.result'), cell: (e) => (e.result === 'ok' ? badge(t('audit.ok'), 'ok') : badge(e.result, 'bad')) },
    ], [...(activity.value || [])].sort((a, b) => b.index - a.index), t('dash.no_activity')));
  }

  async function refresh() {
    const statusP = api.get('/api/v1/cluster/status');
    const [status, health, members, vms, activity] = await Promise.all([
      settle(statusP),
      settle(api.get('/api/v1/cluster/health')),
      settle(statusP.then((s) => loadMembers(api, s))),
      settle(api.get('/api/v1/vms')),
      settle(api.get('/api/v1/activity?limit=15')),
    ]);
    renderHealth(status, health, members);
    renderMembers(health, members);
    last = { members, vms };
    renderCapacity(members, vms);
    renderActivity(activity);
    if (members.value) {
      syncCharts(members.value.nodes);
    }
  }

  return {
    refresh,
    stats(msg) {
      latest.set(msg.node, msg);
      liveCapacity();
      const set = sets.get(msg.node);
      if (!set) {
        return;
      }
      if (msg.mem_total_bytes) {
        set.memTotal = msg.mem_total_bytes;
      }
      const sec = seconds(msg.time);
      const v = values(msg);
      set.charts.forEach((c, i) => c.push(sec, v[i]));
    },
    destroy() {
      clearTimeout(capTimer);
      for (const set of sets.values()) {
        set.charts.forEach((c) => c.destroy());
      }
    },
  };
}
