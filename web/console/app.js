// app.js: the console's shell. It restores the session, draws the header
// and the navigation, routes the URL's fragment (#/vms/web1) to a page
// module loaded on demand, and keeps the tab's one events websocket,
// whose changes make the current page re-fetch what it shows.
import { h, fill } from './dom.js';
import { t, tEnum, setLang, preferredLang, applyI18n } from './i18n.js';
import { createApi, ApiError } from './api.js';
import { EventStream } from './events.js';
import { errorBox, langSelect, closeDialogs, button, badge } from './ui.js';
import { hasRole } from './model.js';

// The pages, first match wins. Each module's default export is
// page(ctx) -> {refresh, wants?, stats?, destroy?}; see README.md.
const ROUTES = [
  { path: ['login'], load: () => import('./pages/login.js'), public: true },
  { path: [], load: () => import('./pages/dashboard.js') },
  { path: ['vms'], load: () => import('./pages/vms.js') },
  { path: ['vms', ':name'], load: () => import('./pages/vm.js') },
  { path: ['nodes'], load: () => import('./pages/nodes.js') },
  { path: ['storage'], load: () => import('./pages/storage.js') },
  { path: ['provisioning'], load: () => import('./pages/provisioning.js') },
  { path: ['tokens'], load: () => import('./pages/tokens.js') },
  { path: ['users'], load: () => import('./pages/users.js'), role: 'admin' },
  { path: ['audit'], load: () => import('./pages/audit.js'), role: 'admin' },
  { path: ['settings'], load: () => import('./pages/settings.js'), role: 'admin' },
];

// The navigation, in order; first is the path segment it lights up for.
const NAV = [
  { first: '', label: () => t('nav.dashboard') },
  { first: 'vms', label: () => t('nav.vms') },
  { first: 'nodes', label: () => t('nav.nodes') },
  { first: 'storage', label: () => t('nav.storage') },
  { first: 'provisioning', label: () => t('nav.provisioning') },
  { first: 'users', label: () => t('nav.users'), role: 'admin' },
  { first: 'tokens', label: () => t('nav.tokens') },
  { first: 'audit', label: () => t('nav.audit'), role: 'admin' },
  { first: 'settings', label: () => t('nav.settings'), role: 'admin' },
];

// A change re-fetches the page this long after the last one of a burst.
const DEBOUNCE_MS = 200;

// A node whose stats stop this long is taken as lost, and pages showing
// reachability re-fetch; they re-fetch again when its stats come back.
// (Reachability is no directory change, so no change message says it.)
const SILENT_MS = 10000;

function match(route, segs) {
  if (route.path.length !== segs.length) {
    return null;
  }
  const params = {};
  for (let i = 0; i < segs.length; i++) {
    const p = route.path[i];
    if (p.startsWith(':')) {
      params[p.slice(1)] = segs[i];
    } else if (p !== segs[i]) {
      return null;
    }
  }
  return params;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  return raw.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
}

class Console {
  constructor() {
    this.session = null; // {user, role, csrf_token, expires}
    this.clusterName = '';
    this.returnTo = '';
    this.loginUser = ''; // the name typed on the login page, across a language switch
    this.page = null;
    this.routeSeq = 0;
    this.debounce = 0;
    this.liveness = new Map(); // node ID -> {at, silent}
    this.liveTimer = 0;
    this.api = createApi({ onUnauthorized: () => this.unauthorized() });
    this.events = new EventStream({
      onMessage: (m) => this.onEvent(m),
      onOpen: (again) => {
        this.banner.hidden = true;
        this.liveness.clear();
        if (again) {
          this.refreshPage();
          this.loadClusterName();
        }
      },
      onDown: (neverOpened) => {
        this.banner.hidden = false;
        if (neverOpened) {
          // A refused handshake looks like a network failure: ask whether
          // the session is still good (a 401 goes to the login page).
          this.api.get('/api/v1/session').catch(() => {});
        }
      },
    });
  }

  async start() {
    try {
      await setLang(preferredLang(), false);
    } catch (e) {
      await setLang('en', false);
    }
    applyI18n(document.body);
    this.banner = h('div', { class: 'banner', role: 'status', hidden: true });
    this.header = h('header', { class: 'top' });
    this.nav = h('nav', { class: 'side' });
    this.main = h('main', { id: 'main' });
    this.pageError = h('div', { class: 'page-error' });
    try {
      this.signedIn(await this.api.get('/api/v1/session', { noRedirect: true }));
    } catch (e) {
      // Not signed in (401), or the API cannot be reached: the login
      // page says more when it is used.
    }
    document.body.replaceChildren(this.banner, this.header, this.nav, h('div', { class: 'content' }, this.pageError, this.main));
    window.addEventListener('hashchange', () => this.route());
    this.drawShell();
    this.route();
  }

  /** signedIn keeps a session (the answer of /api/v1/session). */
  signedIn(s) {
    this.session = s;
    this.api.setCsrf(s.csrf_token);
    this.clusterName = s.cluster_name || this.clusterName;
    this.events.start();
    this.loadClusterName();
  }

  /** login is called by the login page with the new session. */
  login(s) {
    this.signedIn(s);
    this.drawShell();
    const back = this.returnTo && this.returnTo !== '#/login' ? this.returnTo : '#/';
    this.returnTo = '';
    location.hash = back;
  }

  async logout() {
    try {
      await this.api.del('/api/v1/session', { noRedirect: true });
    } catch {
      // gone already, or unreachable: forget it here anyway
    }
    this.signedOut();
    this.returnTo = '';
    location.hash = '#/login';
  }

  signedOut() {
    this.session = null;
    this.api.setCsrf('');
    this.events.stop();
    this.banner.hidden = true;
    closeDialogs();
    this.drawShell();
  }

  // unauthorized: the session ended (expired, revoked, logged out in
  // another tab). Go to the login page, and come back here after.
  unauthorized() {
    if (parseHash()[0] === 'login') {
      return;
    }
    if (this.session) {
      this.signedOut();
    }
    this.returnTo = location.hash;
    location.hash = '#/login';
  }

  async loadClusterName() {
    if (!this.session || !hasRole(this.session.role, 'admin')) {
      return;
    }
    try {
      const s = await this.api.get('/api/v1/cluster/settings');
      this.setClusterName((s && s['cluster.name']) || '');
    } catch {
      // the header does without
    }
  }

  setClusterName(name) {
    this.clusterName = name;
    if (this.clusterEl) {
      this.clusterEl.textContent = name;
    }
  }

  async changeLang(code) {
    await setLang(code, true);
    closeDialogs();
    this.drawShell();
    this.route();
  }

  drawShell() {
    document.title = t('app.name');
    this.banner.textContent = t('conn.reconnecting');
    const s = this.session;
    document.body.classList.toggle('signed-in', !!s);
    if (!s) {
      fill(this.header);
      fill(this.nav);
      return;
    }
    this.clusterEl = h('span', { class: 'cluster' }, this.clusterName);
    fill(this.header,
      h('a', { class: 'brand', href: '#/' }, h('img', { src: 'favicon.svg', alt: '', width: 24, height: 24 }), h('span', {}, t('app.name'))),
      this.clusterEl,
      h('span', { class: 'spacer' }),
      h('span', { class: 'who' }, h('span', { class: 'user' }, s.user), ' ', badge(tEnum('role', s.role), 'muted')),
      langSelect((code) => this.changeLang(code)),
      button(t('nav.logout'), () => this.logout()));
    this.navLinks = NAV.filter((n) => !n.role || hasRole(s.role, n.role)).map((n) =>
      h('a', { href: n.first ? `#/${n.first}` : '#/', 'data-first': n.first }, n.label()));
    fill(this.nav, this.navLinks);
    this.markNav();
  }

  markNav() {
    const first = parseHash()[0] || '';
    for (const a of this.navLinks || []) {
      if (a.dataset.first === first) {
        a.setAttribute('aria-current', 'page');
      } else {
        a.removeAttribute('aria-current');
      }
    }
  }

  can(min) {
    return !!this.session && hasRole(this.session.role, min);
  }

  async route() {
    const seq = ++this.routeSeq;
    const segs = parseHash();
    let route = null;
    let params = null;
    for (const r of ROUTES) {
      params = match(r, segs);
      if (params) {
        route = r;
        break;
      }
    }
    if (route && !route.public && !this.session) {
      this.returnTo = location.hash;
      location.hash = '#/login';
      return;
    }
    if (route && route.public && this.session) {
      location.hash = '#/';
      return;
    }
    this.unmount();
    this.markNav();
    fill(this.pageError);
    const root = h('div', { class: 'page' });
    fill(this.main, root);
    if (!route) {
      fill(root, h('h1', {}, t('page.not_found')), h('p', {}, h('a', { href: '#/' }, t('page.go_home'))));
      return;
    }
    if (route.role && !this.can(route.role)) {
      fill(root, h('h1', {}, t('page.forbidden')), h('p', {}, t('page.forbidden_detail')));
      return;
    }
    let mod;
    try {
      mod = await route.load();
    } catch (e) {
      if (seq === this.routeSeq) {
        fill(root, errorBox(e));
      }
      return;
    }
    if (seq !== this.routeSeq) {
      return;
    }
    const ctx = {
      app: this,
      api: this.api,
      root,
      params,
      session: this.session,
      can: (min) => this.can(min),
      refresh: () => this.refreshPage(),
      setTitle: (text) => {
        document.title = `${text} · ${t('app.name')}`;
      },
    };
    ctx.setTitle(t('app.name'));
    try {
      this.page = mod.default(ctx);
    } catch (e) {
      fill(root, errorBox(e));
      return;
    }
    this.refreshPage();
  }

  unmount() {
    clearTimeout(this.debounce);
    const p = this.page;
    this.page = null;
    if (p && p.destroy) {
      try {
        p.destroy();
      } catch (e) {
        console.error(e);
      }
    }
  }

  // refreshPage re-fetches the current page, one fetch at a time: a
  // request during a fetch runs once more after it.
  refreshPage() {
    const p = this.page;
    if (!p || !p.refresh) {
      return;
    }
    if (p.busy) {
      p.again = true;
      return;
    }
    p.busy = true;
    Promise.resolve()
      .then(() => p.refresh())
      .then(() => {
        if (this.page === p) {
          fill(this.pageError);
        }
      })
      .catch((e) => {
        if (this.page === p && !(e instanceof ApiError && e.status === 401)) {
          fill(this.pageError, errorBox(e));
        }
      })
      .finally(() => {
        p.busy = false;
        if (p.again && this.page === p) {
          p.again = false;
          this.refreshPage();
        }
      });
  }

  // alive notes a node's stats; a node going silent, or speaking again,
  // is a change for the pages that show reachability.
  alive(node) {
    const l = this.liveness.get(node);
    this.liveness.set(node, { at: Date.now(), silent: false });
    if (l && l.silent) {
      this.onEvent({ kind: 'change', type: 'node.liveness', target: node });
    }
    if (this.liveTimer) {
      return;
    }
    const check = () => {
      this.liveTimer = 0;
      if (!this.events.connected) {
        return;
      }
      for (const [id, x] of this.liveness) {
        if (!x.silent && Date.now() - x.at > SILENT_MS) {
          x.silent = true;
          this.onEvent({ kind: 'change', type: 'node.liveness', target: id });
        }
      }
      this.liveTimer = setTimeout(check, SILENT_MS / 2);
    };
    this.liveTimer = setTimeout(check, SILENT_MS / 2);
  }

  onEvent(msg) {
    switch (msg.kind) {
      case 'change': {
        if (msg.type === 'settings.set') {
          this.loadClusterName();
        }
        const p = this.page;
        if (p && (!p.wants || p.wants(msg))) {
          clearTimeout(this.debounce);
          this.debounce = setTimeout(() => this.refreshPage(), DEBOUNCE_MS);
        }
        break;
      }
      case 'stats':
        this.alive(msg.node);
        if (this.page && this.page.stats) {
          this.page.stats(msg);
        }
        break;
      default:
        // hello (the member that answered; a reconnect re-fetches the
        // page anyway), pong, and kinds a newer server sends.
    }
  }
}

new Console().start().catch((e) => {
  document.body.replaceChildren(errorBox(e));
});
