// Storage: the replicated volumes (the directory's definitions with the
// replication state this node's copy reports), and the physical disks.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { pageHead, card, kv, table, badge, button, yesNo, errorBox, infoDialog } from '../ui.js';
import { bytes, rate, pct, num, ms, dateTime, DASH } from '../format.js';
import { loadMembers } from '../model.js';

const copyKind = (s) => (s === 'uptodate' ? 'ok' : s === 'outdated' ? 'bad' : 'muted');
const peerKind = (s) => (s === 'connected' ? 'ok' : s === 'syncing' || s === 'waiting' ? 'warn' : 'bad');

export default function storage(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.storage'));
  const operator = ctx.can('operator');
  const volsEl = h('div');
  const disksEl = h('div');
  fill(root, pageHead(t('nav.storage'), button(t('common.refresh'), () => ctx.refresh())), card(t('storage.volumes'), volsEl), card(t('storage.disks'), disksEl));

  async function verify(v) {
    const rep = await api.post(`/api/v1/storage/volumes/${enc(v.name)}/verify`);
    await infoDialog({
      title: t('storage.verify_title', { name: v.name }),
      body: kv([
        [t('storage.checked'), bytes(rep.checked_bytes)],
        [t('storage.local_repaired'), num(rep.local_repaired_blocks || 0)],
        [t('storage.peer_repaired'), num(rep.peer_repaired_blocks || 0)],
        [t('storage.differed'), num(rep.differed_blocks || 0)],
        [t('storage.unrecoverable'), rep.unrecoverable_offsets && rep.unrecoverable_offsets.length
          ? h('span', { class: 'bad-text' }, rep.unrecoverable_offsets.map(String).join(', ')) : num(0)],
        rep.error ? [t('storage.verify_error'), h('span', { class: 'bad-text' }, rep.error)] : null,
        [t('storage.started'), dateTime(rep.started)],
        [t('storage.finished'), dateTime(rep.finished)],
      ]),
    });
  }

  function sync(st) {
    if (!st) {
      return DASH;
    }
    const r = st.replica || {};
    const parts = [badge(tEnum('peer_state', r.peer), peerKind(r.peer))];
    if (r.in_sync_percent !== undefined && r.in_sync_percent < 100) {
      parts.push(h('span', { class: 'cap' },
        h('meter', { min: 0, max: 100, value: r.in_sync_percent }),
        `${pct(r.in_sync_percent)} · ${bytes(r.out_of_sync_bytes)} ${t('storage.to_sync')}`,
        r.resync_bytes_per_second ? ` · ${rate(r.resync_bytes_per_second)}` : ''));
    }
    if (st.split_brain) {
      parts.push(h('div', { class: 'bad-text' }, st.split_brain));
    }
    if (st.problem) {
      parts.push(h('div', { class: 'bad-text' }, st.problem));
    }
    if (st.clone) {
      parts.push(h('div', { class: 'muted' }, st.clone));
    }
    return h('div', {}, parts);
  }

  function drawDisks(rep) {
    if (rep instanceof Error) {
      return fill(disksEl, errorBox(rep));
    }
    fill(disksEl,
      h('p', { class: 'hint' }, t('storage.disks_hint')),
      rep.slow && rep.slow.length ? h('ul', { class: 'reasons' }, rep.slow.map((s) => h('li', {}, s))) : null,
      table([
        { label: t('col.device'), cell: (d) => h('code', {}, d.device) },
        { label: t('col.size'), cell: (d) => bytes(d.size_bytes), class: 'num' },
        { label: t('col.kind'), cell: (d) => (d.rotational ? t('storage.hdd') : t('storage.ssd')) },
        { label: t('col.iops'), cell: (d) => num(d.iops, 0), class: 'num' },
        { label: t('col.await'), cell: (d) => ms(d.await_ms), class: 'num' },
        { label: t('col.slow'), cell: (d) => yesNo(!!d.slow, false) },
        { label: t('col.smart'), cell: (d) => (d.smart ? h('span', {}, yesNo(d.smart.passed, true),
          d.smart.temperature_c ? ` ${num(d.smart.temperature_c)} °C` : '',
          d.smart.power_on_hours ? ` · ${t('storage.hours', { n: num(d.smart.power_on_hours) })}` : '',
          d.smart.reallocated_sectors ? ` · ${t('storage.reallocated', { n: num(d.smart.reallocated_sectors) })}` : '')
          : h('span', { class: 'muted' }, d.smart_error || DASH)) },
      ], rep.disks || [], t('storage.no_disks')));
  }

  async function refresh() {
    const [vols, m, stats, disks] = await Promise.all([
      api.get('/api/v1/volumes'),
      loadMembers(api),
      api.get('/api/v1/storage/volumes').catch((e) => e),
      api.get('/api/v1/storage/disks').catch((e) => e),
    ]);
    const byName = new Map(stats instanceof Error ? [] : (stats || []).map((s) => [s.name, s]));
    const columns = [
      { label: t('col.name'), cell: (v) => v.name },
      { label: t('col.size'), cell: (v) => bytes(v.size_bytes), class: 'num' },
      { label: t('col.primary'), cell: (v) => m.name(v.primary) },
      { label: t('col.copies'), cell: (v) => h('div', { class: 'copies' }, Object.entries(v.copies || {}).map(([id, s]) =>
        h('div', {}, `${m.name(id)} `, badge(tEnum('copy_state', s), copyKind(s))))) },
      { label: t('col.sync'), cell: (v) => (v.clone_from && !v.cloned ? badge(t('storage.cloning', { from: v.clone_from }), 'warn') : sync(byName.get(v.name))), class: 'wrap' },
      { label: t('col.description'), cell: (v) => v.description, class: 'wrap' },
    ];
    if (operator) {
      columns.push({ label: t('col.actions'), cell: (v) => button(t('storage.verify'), () => verify(v), { title: t('storage.verify_hint') }) });
    }
    fill(volsEl,
      stats instanceof Error ? errorBox(stats) : null,
      table(columns, vols, t('storage.no_volumes')));
    drawDisks(disks);
  }

  return {
    refresh,
    wants: (c) => c.type.startsWith('volume.'),
  };
}
