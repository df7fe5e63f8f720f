// format.js: numbers, sizes and times in the user's language.
import { currentLang } from './i18n.js';

/** DASH stands for a value that is missing. */
export const DASH = '—';

const missing = (v) => v === undefined || v === null || (typeof v === 'number' && !Number.isFinite(v));

/** num formats a number with up to digits decimals. */
export function num(v, digits = 0) {
  if (missing(v)) {
    return DASH;
  }
  return new Intl.NumberFormat(currentLang(), { maximumFractionDigits: digits }).format(v);
}

/** bytes formats a size in binary units. */
export function bytes(n) {
  if (missing(n)) {
    return DASH;
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${num(v, i === 0 || v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** mib formats a size given in MiB. */
export function mib(n) {
  return missing(n) ? DASH : bytes(n * 1048576);
}

/** rate formats bytes per second. */
export function rate(n) {
  return missing(n) ? DASH : `${bytes(n)}/s`;
}

/** pct formats a percentage. */
export function pct(v, digits = 1) {
  return missing(v) ? DASH : `${num(v, digits)}%`;
}

/** isZeroTime tells Go's zero time, which the API sends for "never". */
function isZeroTime(iso) {
  return !iso || iso.startsWith('0001-01-01');
}

/** dateTime formats an RFC 3339 time. */
export function dateTime(iso) {
  if (isZeroTime(iso)) {
    return DASH;
  }
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    return String(iso);
  }
  return d.toLocaleString(currentLang(), { dateStyle: 'medium', timeStyle: 'medium' });
}

/** clock formats seconds since the epoch as a time of day (chart axes). */
export function clock(sec, seconds = false) {
  const opts = { hour: '2-digit', minute: '2-digit', hour12: false };
  if (seconds) {
    opts.second = '2-digit';
  }
  return new Date(sec * 1000).toLocaleTimeString(currentLang(), opts);
}

/** ms formats milliseconds. */
export function ms(v) {
  return missing(v) ? DASH : `${num(v, v < 10 ? 2 : 0)} ms`;
}
