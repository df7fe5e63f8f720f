// model.js: what several pages derive from the API's answers: roles,
// the members with their names, a VM's state in one word.
import { optional } from './api.js';

/** ROLES are the user roles, weakest first. */
export const ROLES = ['viewer', 'operator', 'admin'];

/** hasRole tells whether role is at least min. */
export function hasRole(role, min) {
  const rank = (r) => ROLES.indexOf(r) + 1;
  return rank(role) > 0 && rank(role) >= rank(min);
}

const byName = (a, b) => a.name.localeCompare(b.name);

/**
 * loadMembers gathers the members: the raft servers of the cluster status
 * (every user may read it), merged with the directory's member records
 * (addresses, inventory, maintenance) where the API offers them at
 * GET /api/v1/cluster/members. Give it a status already fetched to save
 * a request.
 */
export async function loadMembers(api, status) {
  const [st, records] = await Promise.all([
    status || api.get('/api/v1/cluster/status'),
    optional(api.get('/api/v1/cluster/members')),
  ]);
  const byId = new Map();
  for (const s of st.servers || []) {
    byId.set(s.id, { id: s.id, name: s.name || s.id, role: s.role || '', address: s.address, suffrage: s.suffrage });
  }
  for (const m of records || []) {
    byId.set(m.id, { ...(byId.get(m.id) || {}), ...m, name: m.name || m.id });
  }
  const list = [...byId.values()].sort(byName);
  return {
    status: st,
    haveRecords: records !== null,
    list,
    nodes: list.filter((m) => m.role === 'node'),
    byId,
    name: (id) => (id ? (byId.get(id) || {}).name || id : ''),
  };
}

/**
 * vmState is a VM's state in one word: the VM manager's run state when
 * it is known, else what the definition wants, with the transitions
 * (starting, stopping, migrating) made visible.
 */
export function vmState(vm, rt) {
  if (vm.migrate_to) {
    return 'migrating';
  }
  if (rt && rt.state) {
    if (rt.state === 'stopped' && vm.running) {
      return 'starting';
    }
    if (rt.state !== 'stopped' && !vm.running) {
      return 'stopping';
    }
    return rt.state;
  }
  return vm.running ? 'running' : 'stopped';
}

/** stateKind is the badge colour of a VM state. */
export function stateKind(state) {
  switch (state) {
    case 'running':
      return 'ok';
    case 'stopped':
      return 'muted';
    case 'crashed':
    case 'internal-error':
    case 'guest-panicked':
      return 'bad';
    default:
      return 'warn';
  }
}

/** ftKind is the badge colour of a fault tolerance state. */
export function ftKind(state) {
  switch (state) {
    case 'protected':
      return 'ok';
    case 'syncing':
    case 're-protecting':
      return 'warn';
    case 'failed-over':
    case 'unprotected':
      return 'bad';
    default:
      return 'muted';
  }
}

/** GiB is a gibibyte in bytes. */
export const GiB = 1024 ** 3;
