// The VM dialogs the list and the detail page share: create, edit,
// delete, and the request body of an edited definition.
import { t } from '../i18n.js';
import { enc } from '../api.js';
import { formDialog, confirmDialog, notify } from '../ui.js';
import { GiB } from '../model.js';

// Names as the directory takes them; a VM's disk is "<name>-disk", so the
// VM name leaves room for the suffix.
const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,57}$/;
const MAX_CPUS = 64;
const MAX_MEMORY_MIB = 1 << 20;

/**
 * vmRequest is the body of PUT /api/v1/vms/{name}: the definition as it
 * is, with changes, refused by the API if the VM changed in between.
 */
export function vmRequest(vm, changes = {}) {
  return {
    name: vm.name,
    description: vm.description || '',
    cpus: vm.cpus,
    memory_mib: vm.memory_mib,
    disks: vm.disks || [],
    nics: vm.nics || [],
    boot: vm.boot || undefined,
    ha: !!vm.ha,
    ft: !!vm.ft,
    priority: vm.priority || 0,
    expected_generation: vm.generation,
    ...changes,
  };
}

/** createVM asks for a new VM and creates its disk, then the VM. */
export function createVM(api, members) {
  return formDialog({
    title: t('vm.create_title'),
    submitLabel: t('common.create'),
    fields: [
      { name: 'name', label: t('vm.name'), required: true, validate: (v) => (VM_NAME.test(v) ? '' : t('vm.name_rule')) },
      { name: 'description', label: t('vm.description') },
      { name: 'cpus', label: t('vm.cpus'), type: 'number', value: 2, min: 1, max: MAX_CPUS, required: true },
      { name: 'memory_mib', label: t('vm.memory_mib'), type: 'number', value: 2048, min: 64, max: MAX_MEMORY_MIB, required: true },
      {
        name: 'disk_gib', label: t('vm.disk_gib'), type: 'number', value: 20, min: 0, max: 65536, required: true,
        hint: t('vm.disk_hint'),
        validate: (v, all) => (v === 0 && !all.kernel ? t('vm.need_boot') : ''),
      },
      {
        name: 'node', label: t('vm.node'), type: 'select', value: '',
        options: [{ value: '', label: t('vm.node_auto') }, ...members.nodes.map((n) => ({ value: n.id, label: n.name }))],
      },
      { name: 'start', label: t('vm.start_now'), type: 'checkbox', value: true },
      { name: 'kernel', label: t('vm.kernel'), advanced: true, hint: t('vm.kernel_hint') },
      { name: 'initrd', label: t('vm.initrd'), advanced: true },
      { name: 'cmdline', label: t('vm.cmdline'), advanced: true },
    ],
    fieldMap: { size_bytes: 'disk_gib', 'boot.kernel': 'kernel' },
    async onSubmit(v) {
      let volume = '';
      if (v.disk_gib > 0) {
        volume = `${v.name}-disk`;
        await api.post('/api/v1/volumes', { name: volume, size_bytes: v.disk_gib * GiB, node: v.node || undefined });
      }
      const body = {
        name: v.name,
        description: v.description,
        cpus: v.cpus,
        memory_mib: v.memory_mib,
        disks: volume ? [{ volume, size_gib: v.disk_gib }] : [],
        nics: [{ network: 'lan' }],
        boot: v.kernel ? { kernel: v.kernel, initrd: v.initrd, cmdline: v.cmdline } : undefined,
        start: v.start,
        node: v.node || undefined,
      };
      try {
        const vm = await api.post('/api/v1/vms', body);
        notify(t('vm.created', { name: v.name }));
        return vm;
      } catch (err) {
        if (volume) {
          // The VM was refused: the disk made for it goes too.
          await api.del(`/api/v1/volumes/${enc(volume)}`).catch(() => {});
        }
        throw err;
      }
    },
  });
}

/** editVM changes CPUs, memory, description and HA. */
export function editVM(api, vm) {
  return formDialog({
    title: t('vm.edit_title', { name: vm.name }),
    intro: vm.running ? t('vm.edit_running') : '',
    submitLabel: t('common.save'),
    fields: [
      { name: 'description', label: t('vm.description'), value: vm.description || '' },
      { name: 'cpus', label: t('vm.cpus'), type: 'number', value: vm.cpus, min: 1, max: MAX_CPUS, required: true },
      { name: 'memory_mib', label: t('vm.memory_mib'), type: 'number', value: vm.memory_mib, min: 64, max: MAX_MEMORY_MIB, required: true },
      { name: 'ha', label: t('vm.ha_long'), type: 'checkbox', value: !!vm.ha },
    ],
    async onSubmit(v) {
      const res = await api.put(`/api/v1/vms/${enc(vm.name)}`, vmRequest(vm, v));
      notify(t('vm.saved', { name: vm.name }));
      return res;
    },
  });
}

/** deleteVM removes a VM and, if asked, its disk volumes. */
export function deleteVM(api, vm) {
  const disks = (vm.disks || []).map((d) => d.volume);
  const gone = new Set();
  return confirmDialog({
    title: t('vm.delete_title', { name: vm.name }),
    message: vm.running ? t('vm.delete_running') : t('vm.delete_confirm', { name: vm.name }),
    confirmLabel: t('common.delete'),
    danger: true,
    checkbox: disks.length ? { label: t('vm.delete_disks', { disks: disks.join(', ') }), checked: false } : null,
    async onConfirm(withDisks) {
      // A retry after a disk failed to go does not delete the VM twice.
      if (!gone.has(vm.name)) {
        await api.del(`/api/v1/vms/${enc(vm.name)}`);
        gone.add(vm.name);
      }
      if (withDisks) {
        for (const d of disks) {
          if (!gone.has(`volume:${d}`)) {
            await api.del(`/api/v1/volumes/${enc(d)}`);
            gone.add(`volume:${d}`);
          }
        }
      }
      notify(t('vm.deleted', { name: vm.name }));
      return true;
    },
  });
}
