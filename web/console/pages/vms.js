// The VM list: definitions from the directory, with the VM managers' run
// state where they report it, and the actions on each.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc, optional } from '../api.js';
import { pageHead, table, badge, button, notify } from '../ui.js';
import { mib, num, pct, DASH } from '../format.js';
import { loadMembers, vmState, stateKind, ftKind } from '../model.js';
import { createVM, editVM, deleteVM } from './vmforms.js';

// At most this many VMs running on the other node get their state asked
// one by one (the list endpoint answers for the node reached).
const MAX_STATUS_FETCH = 32;

/** ftCell shows a VM's fault tolerance: state and progress. */
export function ftCell(vm, rt) {
  const ft = rt && rt.ft;
  const state = (ft && ft.state) || vm.ft_state || (vm.ft ? 'unprotected' : '');
  if (!vm.ft && !state) {
    return t('common.off');
  }
  const progress = ft && ft.progress_percent && state !== 'protected' ? ` ${pct(ft.progress_percent, 0)}` : '';
  return badge(`${tEnum('ft_state', state)}${progress}`, ftKind(state));
}

export default function vms(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.vms'));
  const operator = ctx.can('operator');
  let members = null;
  const body = h('div');
  const create = button(t('vm.create'), async () => {
    if (!members) {
      members = await loadMembers(api);
    }
    if (await createVM(api, members)) {
      ctx.refresh();
    }
  }, { kind: 'primary' });
  fill(root, pageHead(t('nav.vms'), operator ? create : null), body);

  // runtimes asks the VM managers for the run state of the VMs.
  async function runtimes(list) {
    const out = new Map();
    const here = await optional(api.get('/api/v1/vmm/vms')).catch(() => null);
    for (const rt of here || []) {
      out.set(rt.name, rt);
    }
    const missing = list.filter((vm) => vm.running && !out.has(vm.name)).slice(0, MAX_STATUS_FETCH);
    const got = await Promise.all(missing.map((vm) => api.get(`/api/v1/vmm/vms/${enc(vm.name)}`).catch(() => null)));
    for (const rt of got) {
      if (rt) {
        out.set(rt.name, rt);
      }
    }
    return out;
  }

  function actions(vm) {
    const acts = [];
    if (vm.running) {
      acts.push(button(t('vm.stop'), async () => {
        await api.post(`/api/v1/vms/${enc(vm.name)}/stop`, {});
        notify(t('vm.stopping', { name: vm.name }));
        ctx.refresh();
      }));
    } else {
      acts.push(button(t('vm.start'), async () => {
        await api.post(`/api/v1/vms/${enc(vm.name)}/start`, {});
        notify(t('vm.starting', { name: vm.name }));
        ctx.refresh();
      }));
    }
    acts.push(button(t('common.edit'), async () => {
      if (await editVM(api, vm)) {
        ctx.refresh();
      }
    }));
    acts.push(button(t('common.delete'), async () => {
      if (await deleteVM(api, vm)) {
        ctx.refresh();
      }
    }, { kind: 'danger' }));
    return h('div', { class: 'row-actions' }, acts);
  }

  async function refresh() {
    const [list, m] = await Promise.all([api.get('/api/v1/vms'), loadMembers(api)]);
    members = m;
    const rts = await runtimes(list);
    const columns = [
      { label: t('col.name'), cell: (vm) => h('a', { href: `#/vms/${enc(vm.name)}` }, vm.name) },
      { label: t('col.state'), cell: (vm) => { const s = vmState(vm, rts.get(vm.name)); return badge(tEnum('vm_state', s), stateKind(s)); } },
      { label: t('col.node'), cell: (vm) => (vm.node ? m.name(vm.node) : DASH) },
      { label: t('col.cpus'), cell: (vm) => num(vm.cpus), class: 'num' },
      { label: t('col.memory'), cell: (vm) => mib(vm.memory_mib), class: 'num' },
      { label: t('col.ha'), cell: (vm) => (vm.ha ? badge(t('common.on'), 'ok') : t('common.off')) },
      { label: t('col.ft'), cell: (vm) => ftCell(vm, rts.get(vm.name)) },
    ];
    if (operator) {
      columns.push({ label: t('col.actions'), cell: actions });
    }
    fill(body, table(columns, list, t('vm.none')));
  }

  return {
    refresh,
    wants: (c) => /^(vm|member|volume)\./.test(c.type),
  };
}
