// api.js: the fetch wrapper for /api/v1. JSON in and out, the CSRF token
// on every request that changes state, the API's errors as ApiError, and
// a 401 anywhere sends the user to the login page.

/** ApiError is an error answer of the API, or a failure to reach it (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, field, retryAfter) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field || '';
    this.retryAfter = retryAfter || 0;
  }
}

/** enc escapes a name for a URL path. */
export const enc = encodeURIComponent;

/**
 * createApi makes the client. onUnauthorized runs on a 401, unless the
 * call passes {noRedirect: true} (the login and session checks do).
 */
export function createApi({ onUnauthorized }) {
  let csrf = '';

  async function request(method, path, body, opts = {}) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal: opts.signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET' && method !== 'HEAD' && csrf) {
      headers['X-Tandem-CSRF'] = csrf;
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      if (e.name === 'AbortError') {
        throw e;
      }
      throw new ApiError(0, 'network', e.message);
    }
    const text = res.status === 204 ? '' : await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (res.ok) {
      return data;
    }
    const err = (data && data.error) || {};
    const retry = parseInt(res.headers.get('Retry-After') || '', 10);
    const e = new ApiError(res.status, err.code || `http_${res.status}`, err.message || `HTTP ${res.status}`,
      err.field, Number.isFinite(retry) ? retry : 0);
    if (res.status === 401 && !opts.noRedirect && onUnauthorized) {
      onUnauthorized();
    }
    throw e;
  }

  return {
    get: (path, opts) => request('GET', path, undefined, opts),
    post: (path, body, opts) => request('POST', path, body, opts),
    put: (path, body, opts) => request('PUT', path, body, opts),
    patch: (path, body, opts) => request('PATCH', path, body, opts),
    del: (path, opts) => request('DELETE', path, undefined, opts),
    /** setCsrf keeps the session's CSRF token, in memory only. */
    setCsrf(token) {
      csrf = token || '';
    },
  };
}

/**
 * optional is a read of an endpoint that may not exist on this firmware,
 * or not for this user's role: a 403, 404, 405 or 501 gives null instead
 * of an error, and the page shows what it has without it.
 */
export async function optional(promise) {
  try {
    return await promise;
  } catch (e) {
    if (e instanceof ApiError && [403, 404, 405, 501].includes(e.status)) {
      return null;
    }
    throw e;
  }
}
