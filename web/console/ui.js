// ui.js: the console's building blocks: dialogs, forms, tables, badges,
// error messages and notices. All text arrives already translated.
import { h, append } from './dom.js';
import { t, tEnum, currentLang, LANGUAGES } from './i18n.js';
import { ApiError } from './api.js';
import { DASH } from './format.js';

/**
 * errorText says what went wrong: the API's own message (in English, as
 * it comes) after a translated label, or the console's words for the
 * other failures.
 */
export function errorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) {
      return t('err.network');
    }
    return `${t('err.server')} ${err.message}`;
  }
  return `${t('err.unexpected')} ${err && err.message ? err.message : String(err)}`;
}

/** errorBox is an error, as a block on the page. */
export function errorBox(err) {
  return h('div', { class: 'error', role: 'alert' }, errorText(err));
}

/** notify shows a short notice in the corner for a few seconds. */
export function notify(text, kind = 'ok') {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const el = h('div', { class: ['toast', kind], role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 10000 : 5000);
}

/** badge is a small label; kind is ok, warn, bad or muted. */
export function badge(text, kind) {
  return h('span', { class: ['badge', kind] }, text);
}

/** yesNo shows a boolean; good says which answer is the healthy one. */
export function yesNo(v, good) {
  if (v === undefined || v === null) {
    return DASH;
  }
  const kind = good === undefined ? 'muted' : v === good ? 'ok' : 'bad';
  return badge(v ? t('common.yes') : t('common.no'), kind);
}

/** card is a titled section. */
export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...children);
}

/** pageHead is a page's title with its buttons. */
export function pageHead(title, ...actions) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), h('div', { class: 'actions' }, ...actions));
}

/** kv is a list of labelled values; a missing value shows as a dash. */
export function kv(pairs) {
  const dl = h('dl', { class: 'kv' });
  for (const p of pairs) {
    if (!p) {
      continue;
    }
    const [k, v] = p;
    append(dl, [h('dt', {}, k), h('dd', {}, v === undefined || v === null || v === '' ? DASH : v)]);
  }
  return dl;
}

/**
 * table lays rows out in columns: [{label, cell: (row) => node or text,
 * class}]; no rows shows the empty text instead.
 */
export function table(columns, rows, emptyText) {
  if (!rows || rows.length === 0) {
    return h('p', { class: 'empty' }, emptyText);
  }
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.class, scope: 'col' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => {
        const v = c.cell(r);
        return h('td', { class: c.class }, v === undefined || v === null || v === '' ? DASH : v);
      }))))));
}

/**
 * button runs an action; while it runs the button is disabled, and a
 * failure shows as a notice.
 */
export function button(label, run, opts = {}) {
  const b = h('button', {
    type: 'button', class: opts.kind, title: opts.title, disabled: !!opts.disabled,
    onclick: async () => {
      b.disabled = true;
      try {
        await run();
      } catch (e) {
        if (!e || e.name !== 'AbortError') {
          notify(errorText(e), 'error');
        }
      } finally {
        b.disabled = false;
      }
    },
  }, label);
  return b;
}

/** langSelect is the language switch. */
export function langSelect(onChange) {
  return h('select', { class: 'lang', 'aria-label': t('lang.label'), onchange: (e) => onChange(e.target.value) },
    LANGUAGES.map((code) => h('option', { value: code, selected: code === currentLang() }, tEnum('lang', code))));
}

/** closeDialogs closes every open dialog (their text is in the old language). */
export function closeDialogs() {
  for (const d of document.querySelectorAll('dialog[open]')) {
    d.close();
  }
}

let fieldSeq = 0;

/**
 * formDialog asks for values in a modal form. fields: [{name, label,
 * type: text|password|number|checkbox|select|textarea, value, options:
 * [{value, label}], hint, required, min, max, validate(value, values) ->
 * message, advanced (in a folded section), autocomplete}]. onSubmit gets
 * the values and does the work; what it returns resolves the dialog, an
 * error it throws shows in the form (next to the field the API names,
 * through fieldMap when the API's names differ). Cancel resolves null.
 */
export function formDialog({ title, intro, fields = [], submitLabel, danger, onSubmit, fieldMap = {} }) {
  return new Promise((resolve) => {
    const inputs = {};
    const errs = {};
    const general = h('div', { class: 'error', role: 'alert', hidden: true });
    let done = false;

    const row = (f) => {
      const id = `f${++fieldSeq}`;
      let input;
      switch (f.type) {
        case 'checkbox':
          input = h('input', { id, type: 'checkbox', name: f.name, checked: !!f.value });
          break;
        case 'select':
          input = h('select', { id, name: f.name },
            f.options.map((o) => h('option', { value: o.value, selected: String(o.value) === String(f.value ?? '') }, o.label)));
          break;
        case 'textarea':
          input = h('textarea', { id, name: f.name, rows: 3, value: f.value ?? '' });
          break;
        default:
          input = h('input', {
            id, name: f.name, type: f.type || 'text', value: f.value ?? '', min: f.min, max: f.max,
            autocomplete: f.autocomplete || 'off', placeholder: f.placeholder, readOnly: !!f.readOnly,
            inputmode: f.type === 'number' ? 'numeric' : undefined,
          });
      }
      inputs[f.name] = input;
      errs[f.name] = h('div', { class: 'field-error', role: 'alert', hidden: true });
      if (f.type === 'checkbox') {
        return h('div', { class: 'field check' }, h('label', { for: id }, input, ' ', f.label),
          f.hint ? h('small', { class: 'hint' }, f.hint) : null, errs[f.name]);
      }
      return h('div', { class: 'field' }, h('label', { for: id }, f.label), input,
        f.hint ? h('small', { class: 'hint' }, f.hint) : null, errs[f.name]);
    };

    const basic = fields.filter((f) => !f.advanced).map(row);
    const adv = fields.filter((f) => f.advanced).map(row);
    const submit = h('button', { type: 'submit', class: danger ? 'danger' : 'primary' }, submitLabel || t('common.ok'));
    const cancel = h('button', { type: 'button', onclick: () => finish(null) }, t('common.cancel'));
    const form = h('form', { novalidate: true, onsubmit: (e) => { e.preventDefault(); send(); } },
      h('h2', {}, title),
      intro ? (intro instanceof Node ? intro : h('p', { class: 'intro' }, intro)) : null,
      general,
      basic,
      adv.length ? h('details', { class: 'advanced' }, h('summary', {}, t('common.advanced')), adv) : null,
      h('div', { class: 'actions' }, cancel, submit));
    const dlg = h('dialog', { class: 'modal' }, form);

    function finish(result) {
      if (done) {
        return;
      }
      done = true;
      if (dlg.open) {
        dlg.close();
      }
      dlg.remove();
      resolve(result);
    }
    dlg.addEventListener('close', () => finish(null));

    function values() {
      const v = {};
      for (const f of fields) {
        const el = inputs[f.name];
        if (f.type === 'checkbox') {
          v[f.name] = el.checked;
        } else if (f.type === 'number') {
          v[f.name] = el.value.trim() === '' ? null : Number(el.value);
        } else {
          v[f.name] = f.type === 'password' ? el.value : el.value.trim();
        }
      }
      return v;
    }

    function showError(name, text) {
      const el = errs[name];
      if (el) {
        el.textContent = text;
        el.hidden = false;
        inputs[name].setAttribute('aria-invalid', 'true');
        const details = inputs[name].closest('details');
        if (details) {
          details.open = true;
        }
        return;
      }
      general.textContent = text;
      general.hidden = false;
    }

    function check(f, value, all) {
      const empty = value === null || value === '' || (typeof value === 'number' && Number.isNaN(value));
      if (f.required && empty && f.type !== 'checkbox') {
        return t('form.required');
      }
      if (f.type === 'number' && !empty) {
        if (!Number.isInteger(value)) {
          return t('form.whole_number');
        }
        if ((f.min !== undefined && value < f.min) || (f.max !== undefined && value > f.max)) {
          return f.max === undefined ? t('form.at_least', { min: f.min }) : t('form.between', { min: f.min, max: f.max });
        }
      }
      return f.validate ? f.validate(value, all) || '' : '';
    }

    async function send() {
      general.hidden = true;
      for (const f of fields) {
        errs[f.name].hidden = true;
        inputs[f.name].removeAttribute('aria-invalid');
      }
      const v = values();
      let bad = false;
      for (const f of fields) {
        const msg = check(f, v[f.name], v);
        if (msg) {
          showError(f.name, msg);
          bad = true;
        }
      }
      if (bad) {
        return;
      }
      submit.disabled = true;
      const label = submit.textContent;
      submit.textContent = t('common.working');
      try {
        const result = await onSubmit(v);
        finish(result === undefined ? true : result);
      } catch (err) {
        const name = err instanceof ApiError && err.field ? (fieldMap[err.field] || err.field) : '';
        showError(name, errorText(err));
      } finally {
        submit.disabled = false;
        submit.textContent = label;
      }
    }

    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector('input:not([type=checkbox]), select, textarea');
    if (first) {
      first.focus();
    }
  });
}

/**
 * confirmDialog asks before an action; onConfirm does it (its errors show
 * in the dialog). An optional checkbox's state goes to onConfirm.
 * Resolves with onConfirm's result, or null when cancelled.
 */
export function confirmDialog({ title, message, confirmLabel, danger, checkbox, onConfirm }) {
  const fields = checkbox ? [{ name: 'check', type: 'checkbox', label: checkbox.label, value: !!checkbox.checked }] : [];
  return formDialog({
    title, intro: message, fields, submitLabel: confirmLabel, danger,
    onSubmit: (v) => onConfirm(!!v.check),
  });
}

/** infoDialog shows content with one button to close it. */
export function infoDialog({ title, body }) {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'button', class: 'primary', onclick: () => dlg.close() }, t('common.close'));
    const dlg = h('dialog', { class: 'modal' }, h('h2', {}, title), body, h('div', { class: 'actions' }, ok));
    dlg.addEventListener('close', () => {
      dlg.remove();
      resolve();
    });
    document.body.append(dlg);
    dlg.showModal();
    ok.focus();
  });
}
