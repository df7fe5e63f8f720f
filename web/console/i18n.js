// i18n.js: the console's two languages. Every visible string is a key in
// i18n/en.json and i18n/zh-CN.json (the tests check both files have the
// same keys, and that every key the code and the HTML use exists).

const STORAGE_KEY = 'tandem.lang';

/** The languages, as codes; their names are translation keys lang.<code>. */
export const LANGUAGES = ['en', 'zh-CN'];

let lang = 'en';
let dict = {};

/**
 * preferredLang is the remembered choice, or the browser's language
 * (Chinese of any kind gets simplified Chinese).
 */
export function preferredLang() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (LANGUAGES.includes(saved)) {
      return saved;
    }
  } catch {
    // storage disabled: fall through to the browser's language
  }
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  return /^zh\b/i.test(nav) ? 'zh-CN' : 'en';
}

/** setLang loads a language; remember keeps the choice for next time. */
export async function setLang(code, remember) {
  if (!LANGUAGES.includes(code)) {
    code = 'en';
  }
  const res = await fetch(`i18n/${code}.json`, { credentials: 'same-origin' });
  if (!res.ok) {
    throw new Error(`translations ${code}: HTTP ${res.status}`);
  }
  dict = await res.json();
  lang = code;
  document.documentElement.lang = code;
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, code);
    } catch {
      // storage disabled: the choice lasts until the tab closes
    }
  }
}

/** currentLang is the language in use. */
export function currentLang() {
  return lang;
}

/**
 * t translates a key; {name} placeholders take params.name. An unknown
 * key shows as itself (and the tests catch it before it ships).
 */
export function t(key, params) {
  let s = dict[key];
  if (s === undefined) {
    console.warn(`no translation for ${key}`);
    s = key;
  }
  if (params) {
    s = s.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
  }
  return s;
}

/**
 * tEnum translates a value the API sends (a VM state, a role): the key
 * enum.<group>.<value>, or the value itself when it is a new one.
 */
export function tEnum(group, value) {
  if (value === undefined || value === null || value === '') {
    return '—';
  }
  const s = dict[`enum.${group}.${value}`];
  return s === undefined ? String(value) : s;
}

/** applyI18n fills every [data-i18n] element under root with its text. */
export function applyI18n(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
}
