// vnc.html: a remote desktop on noVNC's RFB class.
// Query parameters as noVNC's own pages read them:
//   host, port, path, token, encrypt  where the WebSocket goes (default: the wsproxy that served this page)
//   password                          sent when the server asks for one (else a prompt); also read from
//                                     the fragment (#password=...), which the sessions API's URLs use
//   autoconnect=1                     connect at once
//   resize=scale|remote|off           scale the desktop to the window, or ask the server to resize it
//   view_only=1                       send no keyboard or mouse input
//   shared=0                          ask the server to disconnect other viewers (default: shared)
//   reconnect=1, reconnect_delay=MS   reconnect after the connection drops (default delay 5000 ms)
//   quality=0..9, compression=0..9, show_dot=1, logging=error|warn|info|debug
import RFB from '../node_modules/@novnc/novnc/core/rfb.js';
import * as Log from '../node_modules/@novnc/novnc/core/util/logging.js';
import { boolParam, connectionTarget, intParam, secretParam, stringParam, withoutFragment } from './params.js';
import { bindFullscreenButton, closeReason, hostPort, setStatus } from './ui.js';

const params = new URLSearchParams(window.location.search);
const target = connectionTarget(params, window.location);
const settings = {
  password: secretParam(params, window.location.hash, 'password'),
  autoconnect: boolParam(params, 'autoconnect', false),
  resize: stringParam(params, 'resize', 'off'),
  viewOnly: boolParam(params, 'view_only', false),
  shared: boolParam(params, 'shared', true),
  reconnect: boolParam(params, 'reconnect', false),
  reconnectDelay: intParam(params, 'reconnect_delay', 5000, 0, 3600000),
  quality: intParam(params, 'quality', 6, 0, 9),
  compression: intParam(params, 'compression', 2, 0, 9),
  showDot: boolParam(params, 'show_dot', false),
  logging: stringParam(params, 'logging', 'warn'),
};

// The password stays in memory only: take it out of the address bar (and the history).
if (window.location.hash) window.history.replaceState(null, '', withoutFragment(window.location.href));

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  name: $('desktop-name'),
  connect: $('connect'),
  disconnect: $('disconnect'),
  ctrlAltDel: $('ctrl-alt-del'),
  clipboardToggle: $('clipboard-toggle'),
  clipboardPanel: $('clipboard-panel'),
  clipboardText: $('clipboard-text'),
  clipboardSend: $('clipboard-send'),
  fullscreen: $('fullscreen'),
  credentials: $('credentials'),
  usernameLabel: $('username-label'),
  username: $('username'),
  password: $('password'),
  screen: $('screen'),
};

Log.initLogging(settings.logging);

let rfb = null;
let failure = ''; // why the current connection ended, when we know more than noVNC's `clean` flag
let everConnected = false;
let userDisconnected = false;
let reconnectTimer = null;

function connect() {
  clearTimeout(reconnectTimer);
  if (rfb) return;
  failure = '';
  everConnected = false;
  userDisconnected = false;
  setStatus(ui.status, 'connecting', `Connecting to ${target.url}`);
  showButtons('connecting');

  let socket;
  try {
    // Our own WebSocket, handed to RFB, so the status line can show the close code and reason.
    socket = new WebSocket(target.url);
  } catch (error) {
    setStatus(ui.status, 'failed', `Cannot connect to ${target.url}: ${error.message}`);
    showButtons('disconnected');
    return;
  }
  socket.addEventListener('close', (event) => {
    if (!failure) failure = closeReason(event);
  });

  const options = { shared: settings.shared };
  if (settings.password) options.credentials = { password: settings.password };
  try {
    rfb = new RFB(ui.screen, socket, options);
  } catch (error) {
    socket.close();
    setStatus(ui.status, 'failed', `Cannot start the VNC client: ${error.message}`);
    showButtons('disconnected');
    return;
  }
  rfb.viewOnly = settings.viewOnly;
  rfb.scaleViewport = settings.resize === 'scale';
  rfb.resizeSession = settings.resize === 'remote';
  rfb.clipViewport = false;
  rfb.qualityLevel = settings.quality;
  rfb.compressionLevel = settings.compression;
  rfb.showDotCursor = settings.showDot;

  rfb.addEventListener('connect', onConnect);
  rfb.addEventListener('disconnect', onDisconnect);
  rfb.addEventListener('credentialsrequired', onCredentialsRequired);
  rfb.addEventListener('securityfailure', (event) => {
    const { status, reason } = event.detail;
    failure = reason ? `authentication failed: ${reason}` : `authentication failed (status ${status})`;
  });
  rfb.addEventListener('clipboard', (event) => {
    ui.clipboardText.value = event.detail.text;
  });
  rfb.addEventListener('desktopname', (event) => {
    ui.name.textContent = event.detail.name;
    document.title = `${event.detail.name} · wsproxy`;
  });
  rfb.addEventListener('bell', () => {
    ui.status.animate([{ opacity: 0.3 }, { opacity: 1 }], { duration: 300 });
  });
}

function onConnect() {
  everConnected = true;
  ui.credentials.hidden = true;
  const security = target.encrypt ? 'encrypted' : 'unencrypted';
  setStatus(ui.status, 'connected', `Connected to ${hostPort(target)}, ${security}`);
  ui.status.title = `Connected to ${target.url}`;
  showButtons('connected');
  rfb.focus();
}

function onDisconnect(event) {
  rfb = null;
  ui.credentials.hidden = true;
  let reason;
  if (userDisconnected) {
    reason = 'closed by you';
  } else if (failure) {
    reason = failure;
  } else {
    reason = event.detail.clean ? 'the server closed the connection' : 'connection lost';
  }
  if (!everConnected && !userDisconnected && !failure.startsWith('authentication')) {
    reason = `could not connect: ${reason}`;
  }
  setStatus(ui.status, event.detail.clean && everConnected ? 'disconnected' : 'failed', `Disconnected: ${reason}`);
  showButtons('disconnected');
  if (settings.reconnect && !userDisconnected) {
    reconnectTimer = setTimeout(connect, settings.reconnectDelay);
    ui.status.textContent += ` — reconnecting in ${Math.round(settings.reconnectDelay / 1000)} s`;
  }
}

function onCredentialsRequired(event) {
  const types = event.detail.types;
  ui.usernameLabel.hidden = !types.includes('username');
  ui.credentials.hidden = false;
  setStatus(ui.status, 'connecting', 'The server asks for credentials');
  (types.includes('username') ? ui.username : ui.password).focus();
}

ui.credentials.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!rfb) return;
  const credentials = { password: ui.password.value };
  if (!ui.usernameLabel.hidden) credentials.username = ui.username.value;
  ui.password.value = '';
  ui.credentials.hidden = true;
  setStatus(ui.status, 'connecting', 'Sending credentials…');
  rfb.sendCredentials(credentials);
});

function showButtons(state) {
  const connected = state === 'connected';
  const busy = state === 'connecting';
  ui.connect.hidden = connected || busy;
  ui.connect.textContent = everConnected || state === 'disconnected' ? 'Reconnect' : 'Connect';
  ui.disconnect.hidden = !(connected || busy);
  ui.ctrlAltDel.disabled = !connected || settings.viewOnly;
  ui.clipboardSend.disabled = !connected || settings.viewOnly;
}

ui.connect.addEventListener('click', connect);
ui.disconnect.addEventListener('click', () => {
  clearTimeout(reconnectTimer);
  userDisconnected = true;
  if (rfb) rfb.disconnect();
});
ui.ctrlAltDel.addEventListener('click', () => {
  if (rfb) {
    rfb.sendCtrlAltDel();
    rfb.focus();
  }
});
ui.clipboardToggle.addEventListener('click', () => {
  ui.clipboardPanel.hidden = !ui.clipboardPanel.hidden;
  ui.clipboardToggle.setAttribute('aria-expanded', String(!ui.clipboardPanel.hidden));
});
ui.clipboardSend.addEventListener('click', () => {
  if (rfb) rfb.clipboardPasteFrom(ui.clipboardText.value);
});
bindFullscreenButton(ui.fullscreen);

// For tests and the browser console: the live RFB object, if any.
window.wsproxyVnc = { target, settings, get rfb() { return rfb; } };

if (settings.autoconnect) {
  connect();
} else {
  setStatus(ui.status, 'idle', `Not connected; Connect goes to ${target.url}`);
  showButtons('idle');
}
