// dom.js builds the page. It is the console's only way to put data on
// screen: text becomes text nodes and attribute values go through
// setAttribute, so nothing a user or the API sends is ever parsed as
// HTML. (The tests forbid innerHTML and its kin outside vendor/.)

// Attributes set as properties: their live state is the property.
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'indeterminate', 'readOnly', 'required', 'multiple']);

// URL attributes may not carry script.
const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction']);

/**
 * h makes an element: h('a', {href: '#/vms', class: 'x', onclick: fn}, 'text', child).
 * Attributes that are null, undefined or false are left out; true sets
 * an empty attribute; on* functions become event listeners. Children are
 * nodes or text (arrays are flattened; null and false are skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      setAttr(el, k, v);
    }
  }
  append(el, children);
  return el;
}

function setAttr(el, k, v) {
  if (v === undefined || v === null) {
    return;
  }
  if (k.startsWith('on') && typeof v === 'function') {
    el.addEventListener(k.slice(2), v);
    return;
  }
  if (PROPS.has(k)) {
    el[k] = v;
    return;
  }
  if (v === false) {
    return;
  }
  if (k === 'class' && Array.isArray(v)) {
    v = v.filter(Boolean).join(' ');
  }
  const s = v === true ? '' : String(v);
  if (URL_ATTRS.has(k) && /^\s*(javascript|vbscript|data):/i.test(s)) {
    throw new Error(`refusing a script URL in ${k}`);
  }
  el.setAttribute(k, s);
}

/** append adds children (nodes or text) to el. */
export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) {
      continue;
    }
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** fill replaces el's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// Stylesheets added by modules loaded on demand, by URL.
const styles = new Map();

/**
 * loadStyle adds a stylesheet to the page once; the URL is relative to the
 * page. It resolves when the sheet has loaded.
 */
export function loadStyle(href) {
  let p = styles.get(href);
  if (!p) {
    p = new Promise((resolve, reject) => {
      const link = h('link', { rel: 'stylesheet', href });
      link.addEventListener('load', () => resolve());
      link.addEventListener('error', () => reject(new Error(`stylesheet ${href} did not load`)));
      document.head.append(link);
    });
    styles.set(href, p);
  }
  return p;
}
