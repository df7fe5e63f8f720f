// The user's own API tokens: list, create (the secret shows once), revoke.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { pageHead, table, button, formDialog, confirmDialog, infoDialog, notify } from '../ui.js';
import { dateTime } from '../format.js';
import { ROLES, hasRole } from '../model.js';

const MAX_TTL_DAYS = 3650;

// showSecret shows a new token's secret, once, with a copy button.
function showSecret(tok) {
  const field = h('input', { class: 'secret', readOnly: true, value: tok.secret, 'aria-label': t('token.secret'), onfocus: (e) => e.target.select() });
  const copied = h('span', { class: 'muted', 'aria-live': 'polite' });
  const copy = button(t('token.copy'), async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(tok.secret);
    } catch {
      // no clipboard API (not a secure context): the text is selected
      // for the user to copy.
      copied.textContent = t('token.copy_by_hand');
      return;
    }
    copied.textContent = t('token.copied');
  });
  return infoDialog({
    title: t('token.created', { name: tok.name }),
    body: h('div', {},
      h('p', { class: 'warn-text' }, t('token.once')),
      h('div', { class: 'secret-row' }, field, copy),
      copied,
      h('p', { class: 'hint' }, t('token.usage'))),
  });
}

export default function tokens(ctx) {
  const { api, root, session } = ctx;
  ctx.setTitle(t('nav.tokens'));
  const body = h('div');
  const create = button(t('token.create'), async () => {
    const tok = await formDialog({
      title: t('token.create'),
      submitLabel: t('common.create'),
      fields: [
        { name: 'name', label: t('token.name'), required: true },
        { name: 'role', label: t('token.role'), type: 'select', value: session.role,
          options: ROLES.filter((r) => hasRole(session.role, r)).map((r) => ({ value: r, label: tEnum('role', r) })),
          hint: t('token.role_hint') },
        { name: 'ttl_days', label: t('token.ttl_days'), type: 'number', value: 90, min: 0, max: MAX_TTL_DAYS, required: true, hint: t('token.ttl_hint') },
      ],
      async onSubmit(v) {
        return api.post('/api/v1/tokens', { name: v.name, role: v.role, ttl_days: v.ttl_days });
      },
    });
    if (tok) {
      ctx.refresh();
      await showSecret(tok);
    }
  }, { kind: 'primary' });
  fill(root, pageHead(t('nav.tokens'), create), h('p', { class: 'hint' }, t('token.intro')), body);

  async function refresh() {
    const list = await api.get('/api/v1/tokens');
    fill(body, table([
      { label: t('col.name'), cell: (k) => k.name },
      { label: t('col.role'), cell: (k) => tEnum('role', k.role) },
      { label: t('col.created'), cell: (k) => dateTime(k.created) },
      { label: t('col.expires'), cell: (k) => (k.expires && !k.expires.startsWith('0001') ? dateTime(k.expires) : t('token.never')) },
      { label: t('col.actions'), cell: (k) => button(t('token.revoke'), () => confirmDialog({
        title: t('token.revoke_title', { name: k.name }),
        message: t('token.revoke_confirm'),
        confirmLabel: t('token.revoke'),
        danger: true,
        onConfirm: async () => {
          await api.del(`/api/v1/tokens/${enc(k.id)}`);
          notify(t('token.revoked', { name: k.name }));
          ctx.refresh();
        },
      }), { kind: 'danger' }) },
    ], list, t('token.none')));
  }

  return {
    refresh,
    wants: (c) => /token/.test(c.type),
  };
}
