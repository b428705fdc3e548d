// Query parameters shared by the console pages, read the way noVNC's own pages read them:
// host, port, path, token and encrypt say where the WebSocket goes, and each defaults to the page's own
// origin, so a page served by `wsproxy --web` connects back to the wsproxy that served it.
// Pure functions (no DOM), so node --test can check them.

const TRUE_WORDS = new Set(['1', 'true', 'yes', 'on']);
const FALSE_WORDS = new Set(['0', 'false', 'no', 'off']);

/** A boolean query parameter: 1/true/yes/on or 0/false/no/off; a bare `?name` counts as true. */
export function boolParam(params, name, fallback = false) {
  if (!params.has(name)) return fallback;
  const value = params.get(name).trim().toLowerCase();
  if (value === '' || TRUE_WORDS.has(value)) return true;
  if (FALSE_WORDS.has(value)) return false;
  return fallback;
}

/** An integer query parameter within [min, max], else the fallback. */
export function intParam(params, name, fallback, min = -Infinity, max = Infinity) {
  if (!params.has(name)) return fallback;
  const text = params.get(name).trim();
  if (!/^-?\d+$/.test(text)) return fallback;
  const n = Number(text);
  return n >= min && n <= max ? n : fallback;
}

/** A string parameter; an empty value counts as missing. */
export function stringParam(params, name, fallback = '') {
  const value = params.get(name);
  return value === null || value === '' ? fallback : value;
}

/**
 * A secret (the VNC password) from the URL's fragment (`#password=...`, which never reaches a server
 * or its logs: the sessions API puts it there), else from the query as noVNC reads it.
 */
export function secretParam(params, hash, name) {
  const fragment = new URLSearchParams(hash.replace(/^#/, ''));
  return stringParam(fragment, name, stringParam(params, name, ''));
}

/** The URL without its fragment, to show once a secret has been read from it. */
export function withoutFragment(href) {
  const at = href.indexOf('#');
  return at < 0 ? href : href.slice(0, at);
}

/** Brackets an IPv6 literal for a URL authority; leaves names, IPv4 and bracketed literals alone. */
export function urlHost(host) {
  if (host.includes(':') && !host.startsWith('[')) return `[${host}]`;
  return host;
}

/**
 * Where the console connects, from the query parameters and the page's location
 * (`{protocol, hostname, port}` as in window.location).
 * Returns {host, port, path, encrypt, url}.
 */
export function connectionTarget(params, location) {
  const pageEncrypted = location.protocol === 'https:';
  const encrypt = boolParam(params, 'encrypt', pageEncrypted);
  const hostGiven = stringParam(params, 'host', '') !== '';
  const host = stringParam(params, 'host', location.hostname);
  let port = stringParam(params, 'port', hostGiven ? '' : location.port);
  if (port === '' && !hostGiven) port = pageEncrypted ? '443' : '80';
  let path = stringParam(params, 'path', 'websockify');
  const token = stringParam(params, 'token', '');
  if (token !== '') path = withQueryParam(path, 'token', token);
  path = path.replace(/^\/+/, '');
  const defaultPort = encrypt ? '443' : '80';
  const authority = urlHost(host) + (port !== '' && port !== defaultPort ? `:${port}` : '');
  const url = `${encrypt ? 'wss' : 'ws'}://${authority}/${path}`;
  return { host, port, path, encrypt, url };
}

/** Adds `name=value` to the query part of path unless path already has that parameter (as noVNC does). */
export function withQueryParam(path, name, value) {
  const [base, query = ''] = splitOnce(path, '?');
  const search = new URLSearchParams(query);
  if (search.has(name)) return path;
  search.set(name, value);
  return `${base}?${search.toString()}`;
}

function splitOnce(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [text] : [text.slice(0, at), text.slice(at + 1)];
}
