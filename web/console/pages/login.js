// The login page: user name, password, and the language switch.
import { h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { ApiError } from '../api.js';
import { errorText, langSelect } from '../ui.js';

export default function login(ctx) {
  const { api, app, root } = ctx;
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true, autocapitalize: 'off', spellcheck: 'false' });
  const pass = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const msg = h('div', { class: 'error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, t('login.submit'));
  let lockTimer = 0;

  function say(text) {
    msg.textContent = text;
    msg.hidden = !text;
  }

  // locked counts down the lockout the server asked for.
  function locked(secs) {
    clearTimeout(lockTimer);
    if (secs <= 0) {
      say('');
      submit.disabled = false;
      return;
    }
    submit.disabled = true;
    say(t('login.locked', { n: secs }));
    lockTimer = setTimeout(() => locked(secs - 1), 1000);
  }

  async function send(e) {
    e.preventDefault();
    say('');
    if (!user.value.trim() || !pass.value) {
      say(t('login.missing'));
      return;
    }
    submit.disabled = true;
    try {
      const s = await api.post('/api/v1/session', { user: user.value.trim(), password: pass.value }, { noRedirect: true });
      pass.value = '';
      app.loginUser = '';
      app.login(s);
    } catch (err) {
      pass.value = '';
      submit.disabled = false;
      if (err instanceof ApiError && err.status === 401) {
        say(t('login.wrong'));
        pass.focus();
      } else if (err instanceof ApiError && err.status === 429) {
        locked(err.retryAfter || 30);
      } else {
        say(errorText(err));
      }
    }
  }

  ctx.setTitle(t('login.title'));
  fill(root,
    h('div', { class: 'login' },
      h('form', { class: 'login-card', novalidate: true, onsubmit: send },
        h('div', { class: 'login-brand' }, h('img', { src: 'favicon.svg', alt: '', width: 40, height: 40 }), h('span', {}, t('app.name'))),
        h('h1', {}, t('login.title')),
        msg,
        h('div', { class: 'field' }, h('label', { for: 'login-user' }, t('login.user')), user),
        h('div', { class: 'field' }, h('label', { for: 'login-password' }, t('login.password')), pass),
        submit,
        h('div', { class: 'login-lang' }, h('span', {}, t('lang.label')), langSelect((code) => {
          // The page is drawn again in the new language: keep the name typed.
          app.loginUser = user.value;
          app.changeLang(code);
        })))));
  user.value = app.loginUser || '';
  (user.value ? pass : user).focus();

  return {
    refresh() {},
    wants: () => false,
    destroy() {
      clearTimeout(lockTimer);
    },
  };
}
