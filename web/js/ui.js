// Small DOM helpers shared by the console pages.

/** Sets the status line: state is idle | connecting | connected | disconnected | failed. */
export function setStatus(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
  element.title = text;
  document.body.dataset.state = state;
}

/** Full screen on the whole page (so the bar stays usable), or back. */
export function toggleFullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else {
    document.documentElement.requestFullscreen().catch(() => {});
  }
}

/** Keeps a Full screen button's label and pressed state in step with the document. */
export function bindFullscreenButton(button) {
  button.addEventListener('click', toggleFullscreen);
  document.addEventListener('fullscreenchange', () => {
    const on = Boolean(document.fullscreenElement);
    button.setAttribute('aria-pressed', String(on));
    button.textContent = on ? 'Exit full screen' : 'Full screen';
  });
  if (!document.fullscreenEnabled) button.disabled = true;
}

/** A human reason for a WebSocket close event. */
export function closeReason(event) {
  const codes = {
    1000: 'closed normally',
    1001: 'the server is going away',
    1002: 'protocol error',
    1003: 'unsupported data',
    1006: 'connection lost or refused',
    1008: 'refused by policy',
    1009: 'message too big',
    1011: 'server error',
    1015: 'TLS handshake failed',
  };
  const what = codes[event.code] || `close code ${event.code}`;
  return event.reason ? `${event.reason} (${event.code})` : `${what} (${event.code})`;
}

/** "host:port" of a connection target, IPv6 in brackets. */
export function hostPort(target) {
  const host = target.host.includes(':') && !target.host.startsWith('[') ? `[${target.host}]` : target.host;
  return target.port ? `${host}:${target.port}` : host;
}
