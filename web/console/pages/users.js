// Users (admins only): create, change role, disable, reset password, delete.
import { h, fill } from '../dom.js';
import { t, tEnum } from '../i18n.js';
import { enc } from '../api.js';
import { pageHead, table, badge, button, formDialog, confirmDialog, notify } from '../ui.js';
import { dateTime } from '../format.js';
import { ROLES } from '../model.js';

const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const MIN_PASSWORD = 8;

const roleOptions = () => ROLES.map((r) => ({ value: r, label: tEnum('role', r) }));

// passwordFields ask for a password twice.
function passwordFields() {
  return [
    { name: 'password', label: t('user.password'), type: 'password', required: true, autocomplete: 'new-password',
      hint: t('user.password_hint', { n: MIN_PASSWORD }),
      validate: (v) => (v.length < MIN_PASSWORD ? t('user.password_short', { n: MIN_PASSWORD }) : '') },
    { name: 'password2', label: t('user.password_again'), type: 'password', required: true, autocomplete: 'new-password',
      validate: (v, all) => (v !== all.password ? t('user.password_mismatch') : '') },
  ];
}

export default function users(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.users'));
  const body = h('div');
  const create = button(t('user.create'), async () => {
    const ok = await formDialog({
      title: t('user.create'),
      submitLabel: t('common.create'),
      fields: [
        { name: 'name', label: t('user.name'), required: true, validate: (v) => (USER_NAME.test(v) ? '' : t('user.name_rule')) },
        { name: 'role', label: t('user.role'), type: 'select', value: 'viewer', options: roleOptions() },
        ...passwordFields(),
      ],
      async onSubmit(v) {
        await api.post('/api/v1/users', { name: v.name, role: v.role, password: v.password });
        notify(t('user.created', { name: v.name }));
      },
    });
    if (ok) {
      ctx.refresh();
    }
  }, { kind: 'primary' });
  fill(root, pageHead(t('nav.users'), create), body);

  function actions(u) {
    const self = u.name === ctx.session.user;
    const path = `/api/v1/users/${enc(u.name)}`;
    const done = () => ctx.refresh();
    return h('div', { class: 'row-actions' },
      button(t('user.change_role'), async () => {
        if (await formDialog({
          title: t('user.change_role_title', { name: u.name }),
          submitLabel: t('common.save'),
          fields: [{ name: 'role', label: t('user.role'), type: 'select', value: u.role, options: roleOptions() }],
          async onSubmit(v) {
            await api.patch(path, { role: v.role });
            notify(t('user.saved', { name: u.name }));
          },
        })) {
          done();
        }
      }),
      button(u.disabled ? t('user.enable') : t('user.disable'), () => confirmDialog({
        title: u.disabled ? t('user.enable_title', { name: u.name }) : t('user.disable_title', { name: u.name }),
        message: u.disabled ? t('user.enable_confirm') : t('user.disable_confirm'),
        confirmLabel: u.disabled ? t('user.enable') : t('user.disable'),
        danger: !u.disabled,
        onConfirm: async () => {
          await api.patch(path, { disabled: !u.disabled });
          notify(t('user.saved', { name: u.name }));
          done();
        },
      }), { disabled: self && !u.disabled }),
      button(t('user.reset_password'), async () => {
        if (await formDialog({
          title: t('user.reset_title', { name: u.name }),
          submitLabel: t('common.save'),
          fields: passwordFields(),
          async onSubmit(v) {
            await api.patch(path, { password: v.password });
            notify(t('user.password_set', { name: u.name }));
          },
        })) {
          done();
        }
      }),
      button(t('common.delete'), () => confirmDialog({
        title: t('user.delete_title', { name: u.name }),
        message: t('user.delete_confirm', { name: u.name }),
        confirmLabel: t('common.delete'),
        danger: true,
        onConfirm: async () => {
          await api.del(path);
          notify(t('user.deleted', { name: u.name }));
          done();
        },
      }), { kind: 'danger', disabled: self }));
  }

  async function refresh() {
    const list = await api.get('/api/v1/users');
    fill(body, table([
      { label: t('col.name'), cell: (u) => u.name },
      { label: t('col.role'), cell: (u) => tEnum('role', u.role) },
      { label: t('col.status'), cell: (u) => (u.disabled ? badge(t('user.disabled'), 'bad') : badge(t('user.active'), 'ok')) },
      { label: t('col.created'), cell: (u) => dateTime(u.created) },
      { label: t('col.updated'), cell: (u) => dateTime(u.updated) },
      { label: t('col.actions'), cell: actions },
    ], list, t('user.none')));
  }

  return {
    refresh,
    wants: (c) => c.type.startsWith('user.'),
  };
}
