// Cluster settings (admins only). Only the fields changed are sent; an
// emptied field is unset. The API's field errors (set.<key>) show next to
// their field.
import { h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { ApiError } from '../api.js';
import { pageHead, card, errorText, notify } from '../ui.js';

const CIDR4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/(3[0-2]|[12]?\d)$/;

export default function settings(ctx) {
  const { api, root, app } = ctx;
  ctx.setTitle(t('nav.settings'));
  const fields = [
    { key: 'cluster.name', label: t('settings.cluster_name'), hint: t('settings.cluster_name_hint'),
      check: (v) => (v.length > 64 ? t('settings.too_long', { n: 64 }) : '') },
    { key: 'cluster.ip', label: t('settings.cluster_ip'), hint: t('settings.cluster_ip_hint'), placeholder: '192.0.2.100/24',
      check: (v) => (v && !CIDR4.test(v) ? t('settings.cluster_ip_rule') : '') },
    { key: 'ntp.servers', label: t('settings.ntp'), hint: t('settings.servers_hint'), placeholder: 'pool.ntp.org, 192.0.2.1', check: hostList },
    { key: 'dns.servers', label: t('settings.dns'), hint: t('settings.servers_hint'), placeholder: '192.0.2.53', check: hostList },
    { key: 'time.zone', label: t('settings.time_zone'), hint: t('settings.time_zone_hint'), placeholder: 'Asia/Shanghai', list: 'tz-list' },
  ];
  let saved = {};
  const general = h('div', { class: 'error', role: 'alert', hidden: true });
  const save = h('button', { type: 'submit', class: 'primary' }, t('common.save'));
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  for (const f of fields) {
    f.input = h('input', { id: `set-${f.key}`, name: f.key, autocomplete: 'off', placeholder: f.placeholder, list: f.list,
      oninput: () => {
        f.dirty = true;
      } });
    f.err = h('div', { class: 'field-error', role: 'alert', hidden: true });
  }
  const form = h('form', { class: 'settings', novalidate: true, onsubmit: (e) => { e.preventDefault(); submit(); } },
    general,
    fields.map((f) => h('div', { class: 'field' }, h('label', { for: `set-${f.key}` }, f.label), f.input, h('small', { class: 'hint' }, f.hint), f.err)),
    h('datalist', { id: 'tz-list' }, zones.map((z) => h('option', { value: z }))),
    h('div', { class: 'actions' }, save));
  fill(root, pageHead(t('nav.settings')), card(null, form));

  function hostList(v) {
    if (!v) {
      return '';
    }
    return v.split(',').every((x) => x.trim() && !/[\s/\\]/.test(x.trim())) ? '' : t('settings.servers_rule');
  }

  function clearErrors() {
    general.hidden = true;
    for (const f of fields) {
      f.err.hidden = true;
      f.input.removeAttribute('aria-invalid');
    }
  }

  function fieldError(f, text) {
    f.err.textContent = text;
    f.err.hidden = false;
    f.input.setAttribute('aria-invalid', 'true');
  }

  async function submit() {
    clearErrors();
    const set = {};
    const unset = [];
    let bad = false;
    for (const f of fields) {
      const v = f.input.value.trim();
      const msg = f.check ? f.check(v) : '';
      if (msg) {
        fieldError(f, msg);
        bad = true;
      }
      if (v === (saved[f.key] || '')) {
        continue;
      }
      if (v) {
        set[f.key] = v;
      } else {
        unset.push(f.key);
      }
    }
    if (bad) {
      return;
    }
    if (!Object.keys(set).length && !unset.length) {
      notify(t('settings.nothing'));
      return;
    }
    save.disabled = true;
    try {
      const res = await api.patch('/api/v1/cluster/settings', { set, unset });
      fields.forEach((f) => {
        f.dirty = false;
      });
      show(res || {}, true);
      app.setClusterName((res && res['cluster.name']) || '');
      notify(t('settings.saved'));
    } catch (err) {
      const f = err instanceof ApiError && fields.find((x) => err.field === `set.${x.key}`);
      if (f) {
        fieldError(f, errorText(err));
      } else {
        general.textContent = errorText(err);
        general.hidden = false;
      }
    } finally {
      save.disabled = false;
    }
  }

  // show puts the settings in the fields the user is not editing.
  function show(values, all) {
    saved = values;
    for (const f of fields) {
      if (all || !f.dirty) {
        f.input.value = values[f.key] || '';
      }
    }
  }

  return {
    async refresh() {
      show((await api.get('/api/v1/cluster/settings')) || {}, false);
    },
    wants: (c) => c.type === 'settings.set',
  };
}
