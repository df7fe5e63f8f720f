// events.js: the tab's one websocket to /api/v1/events. It carries the
// directory's changes and the nodes' stats; the console never polls.
// When it drops (the cluster IP moved to a new leader, a node rebooted)
// it reconnects by itself with a growing, jittered delay.

const MAX_DELAY_MS = 15000;
// The server sends stats every ~2 s; silence this long means the
// connection is dead even if the socket has not noticed (the address it
// reached moved to another node).
const SILENCE_PING_MS = 10000;
const SILENCE_DEAD_MS = 25000;
const WATCH_MS = 5000;

/**
 * EventStream connects, reconnects and hands every message on.
 * onMessage(msg) gets each JSON message; onOpen(again) runs when it is
 * connected (again: after a drop, so the page must re-fetch); onDown(
 * neverOpened) when it is lost or an attempt failed.
 */
export class EventStream {
  constructor({ onMessage, onOpen, onDown }) {
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.onDown = onDown;
    this.ws = null;
    this.running = false;
    this.attempt = 0;
    this.everOpened = false;
    this.timer = 0;
    this.watch = 0;
    this.lastRx = 0;
  }

  /** start connects, unless it already is. */
  start() {
    if (this.running) {
      return;
    }
    this.running = true;
    this.everOpened = false;
    this.connect();
  }

  /** stop closes the socket for good (logout). */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    clearTimeout(this.watch);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.close();
    }
  }

  /** connected tells whether the socket is open. */
  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/events`);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) {
        return;
      }
      opened = true;
      this.attempt = 0;
      this.lastRx = Date.now();
      const again = this.everOpened;
      this.everOpened = true;
      this.onOpen(again);
      this.watchdog(ws);
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) {
        return;
      }
      this.lastRx = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws === ws) {
        this.lost(!opened);
      }
    };
  }

  // lost drops the current socket and plans the next attempt.
  lost(neverOpened) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.watch);
    if (ws && ws.readyState <= WebSocket.OPEN) {
      ws.close();
    }
    if (!this.running) {
      return;
    }
    this.onDown(neverOpened);
    const base = Math.min(MAX_DELAY_MS, 500 * 2 ** this.attempt);
    this.attempt++;
    this.timer = setTimeout(() => {
      if (this.running) {
        this.connect();
      }
    }, base / 2 + Math.random() * base / 2);
  }

  // watchdog pings a quiet socket and gives up on a silent one.
  watchdog(ws) {
    this.watch = setTimeout(() => {
      if (this.ws !== ws) {
        return;
      }
      const quiet = Date.now() - this.lastRx;
      if (quiet > SILENCE_DEAD_MS) {
        this.lost(false);
        return;
      }
      if (quiet > SILENCE_PING_MS) {
        ws.send(JSON.stringify({ kind: 'ping' }));
      }
      this.watchdog(ws);
    }, WATCH_MS);
  }
}
