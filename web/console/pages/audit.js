// The audit log (admins only), oldest first, a page at a time: the API
// pages forward from an index (?since=).
import { h, fill } from '../dom.js';
import { t } from '../i18n.js';
import { pageHead, table, badge, button } from '../ui.js';
import { dateTime, num } from '../format.js';

const PAGE = 50;

export default function audit(ctx) {
  const { api, root } = ctx;
  ctx.setTitle(t('nav.audit'));
  const body = h('div');
  const range = h('span', { class: 'muted' });
  const back = []; // the since of each earlier page
  let since = 0;
  let rows = [];
  const first = button(t('audit.first'), () => go(0, true));
  const prev = button(t('audit.prev'), () => go(back.pop() || 0, false));
  const next = button(t('audit.next'), () => {
    back.push(since);
    return go(rows[rows.length - 1].index, false);
  });
  fill(root, pageHead(t('nav.audit')), body, h('div', { class: 'pager' }, first, prev, next, range));

  async function go(s, reset) {
    if (reset) {
      back.length = 0;
    }
    since = s;
    await refresh();
  }

  async function refresh() {
    rows = (await api.get(`/api/v1/audit?since=${since}&limit=${PAGE}`)) || [];
    fill(body, table([
      { label: t('col.index'), cell: (e) => String(e.index), class: 'num' },
      { label: t('col.time'), cell: (e) => dateTime(e.time) },
      { label: t('col.actor'), cell: (e) => e.actor },
      { label: t('col.from'), cell: (e) => e.from },
      { label: t('col.action'), cell: (e) => e.action },
      { label: t('col.target'), cell: (e) => e.target },
      { label: t('col.result'), cell: (e) => (e.result === 'ok' ? badge(t('audit.ok'), 'ok') : badge(e.result, 'bad')) },
      { label: t('col.detail'), cell: (e) => e.detail, class: 'wrap' },
    ], rows, t('audit.none')));
    first.disabled = since === 0;
    prev.disabled = back.length === 0 && since === 0;
    next.disabled = rows.length < PAGE;
    range.textContent = rows.length
      ? t('audit.range', { from: num(rows[0].index), to: num(rows[rows.length - 1].index) })
      : '';
  }

  return {
    refresh,
    // New lines land after the last page: only that one changes.
    wants: () => rows.length < PAGE,
  };
}
