// The serial console: xterm.js on a websocket that carries the VM's
// serial port as raw bytes both ways (binary frames).
import { Terminal } from '../vendor/xterm/xterm.mjs';
import { FitAddon } from '../vendor/xterm/addon-fit.mjs';
import { loadStyle } from '../dom.js';

/**
 * openSerial draws a terminal in el and connects it to url; onState gets
 * connecting, connected, closed. It returns {close, focus}.
 */
export async function openSerial(el, url, onState) {
  await loadStyle('vendor/xterm/xterm.css');
  const term = new Terminal({
    cursorBlink: true,
    scrollback: 5000,
    fontSize: 14,
    fontFamily: '"DejaVu Sans Mono", Menlo, Consolas, monospace',
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const ro = new ResizeObserver(() => {
    if (el.clientWidth > 0) {
      fit.fit();
    }
  });
  ro.observe(el);

  const encoder = new TextEncoder();
  onState('connecting');
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    onState('connected');
    term.focus();
  };
  ws.onmessage = (e) => term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
  ws.onclose = () => onState('closed');
  const send = (bytes) => {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(bytes);
    }
  };
  term.onData((d) => send(encoder.encode(d)));
  // onBinary: bytes xterm produces that are not UTF-8 (some mouse reports).
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));

  return {
    close() {
      ws.onclose = null;
      ws.close();
      ro.disconnect();
      term.dispose();
    },
    focus() {
      term.focus();
    },
  };
}
