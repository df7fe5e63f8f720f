// chart.js: live time-series charts on uPlot, which loads the first time
// a chart is drawn (it is not part of the console's first load when no
// chart is on the page).
import { h, loadStyle } from './dom.js';
import { t } from './i18n.js';
import { clock, DASH } from './format.js';

// WINDOW_S is how much history a chart keeps: the stats endpoint's.
export const WINDOW_S = 600;

let uplot = null;

// Tick steps for byte values: 1, 2, 4 … 512 of each binary unit.
const BINARY_INCRS = [];
for (let unit = 1; unit <= 2 ** 50; unit *= 1024) {
  for (let m = 1; m < 1024; m *= 2) {
    BINARY_INCRS.push(m * unit);
  }
}

function loadUPlot() {
  if (!uplot) {
    uplot = Promise.all([import('./vendor/uplot/uPlot.min.mjs'), loadStyle('vendor/uplot/uPlot.min.css')]).then(([m]) => m.default);
  }
  return uplot;
}

/**
 * TimeChart is one chart: series [{label, color}] over time, values
 * shown with format. Points come with push (live) or set (history).
 */
export class TimeChart {
  constructor(el, { series, format, height = 150, max, binary = false }) {
    this.el = el;
    this.series = series;
    this.format = format;
    this.height = height;
    this.max = max; // () => the y axis' top, or undefined for automatic
    this.binary = binary; // byte values: ticks at powers of two
    this.data = [[], ...series.map(() => [])];
    this.plot = null;
    this.ro = null;
    this.dead = false;
  }

  /** draw loads uPlot and draws the chart. */
  async draw() {
    const UPlot = await loadUPlot();
    if (this.dead) {
      return;
    }
    const fmt = this.format;
    const opts = {
      width: Math.max(this.el.clientWidth, 200),
      height: this.height,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: (u, lo, hi) => [0, Math.max(this.max ? this.max() || 0 : 0, hi || 0, 1)] },
      },
      series: [
        { label: t('chart.time'), value: (u, v) => (v === null || v === undefined ? DASH : clock(v, true)) },
        ...this.series.map((s) => ({
          label: s.label, stroke: s.color, width: 1.5, fill: `${s.color}1f`, points: { show: false },
          value: (u, v) => (v === null || v === undefined ? DASH : fmt(v)),
        })),
      ],
      axes: [
        { values: (u, splits) => splits.map((v) => clock(v)), stroke: '#6b7280', grid: { stroke: '#e5e7eb' }, ticks: { stroke: '#e5e7eb' } },
        {
          values: (u, splits) => splits.map((v) => fmt(v)), size: 80, stroke: '#6b7280', grid: { stroke: '#e5e7eb' }, ticks: { stroke: '#e5e7eb' },
          incrs: this.binary ? BINARY_INCRS : undefined,
        },
      ],
    };
    this.plot = new UPlot(opts, this.data, this.el);
    this.ro = new ResizeObserver(() => {
      if (this.plot && this.el.clientWidth > 0) {
        this.plot.setSize({ width: this.el.clientWidth, height: this.height });
      }
    });
    this.ro.observe(this.el);
  }

  /**
   * set puts history in: rows of [seconds, value, value, …], oldest
   * first. Live points newer than the history stay.
   */
  set(rows) {
    const last = rows.length ? rows[rows.length - 1][0] : -Infinity;
    const old = this.data;
    this.data = [[], ...this.series.map(() => [])];
    for (const r of rows) {
      r.forEach((v, i) => this.data[i].push(v));
    }
    old[0].forEach((x, j) => {
      if (x > last) {
        old.forEach((a, i) => this.data[i].push(a[j]));
      }
    });
    this.trim();
    this.redraw();
  }

  /** push adds a point at time sec (seconds). */
  push(sec, values) {
    const xs = this.data[0];
    if (xs.length && sec <= xs[xs.length - 1]) {
      return; // late or repeated
    }
    xs.push(sec);
    values.forEach((v, i) => this.data[i + 1].push(v));
    this.trim();
    this.redraw();
  }

  trim() {
    const xs = this.data[0];
    const from = xs.length ? xs[xs.length - 1] - WINDOW_S : 0;
    let n = 0;
    while (n < xs.length && xs[n] < from) {
      n++;
    }
    if (n) {
      this.data = this.data.map((a) => a.slice(n));
    }
  }

  redraw() {
    if (this.plot) {
      this.plot.setData(this.data);
    }
  }

  destroy() {
    this.dead = true;
    if (this.ro) {
      this.ro.disconnect();
    }
    if (this.plot) {
      this.plot.destroy();
    }
  }
}

/** chartBox is a titled frame for a chart. */
export function chartBox(title) {
  const plot = h('div', { class: 'plot' });
  return { el: h('figure', { class: 'chart' }, h('figcaption', {}, title), plot), plot };
}

/** seconds turns an RFC 3339 time into epoch seconds. */
export function seconds(iso) {
  return Math.round(new Date(iso).getTime() / 1000);
}
