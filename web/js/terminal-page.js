// telnet.html and serial.html: a terminal on xterm.js over a binary WebSocket.
// <body data-console="telnet"> speaks telnet (js/telnet.js); data-console="serial" passes bytes through.
// Query parameters:
//   host, port, path, token, encrypt   where the WebSocket goes (default: the wsproxy that served this page)
//   autoconnect=1                      connect at once
//   reconnect=1, reconnect_delay=MS    reconnect after the connection drops (default delay 5000 ms)
//   font_size=PX                       (default 15)
//   telnet:  term=NAME                 terminal type sent to the server (default xterm)
//   serial:  eol=cr|lf|crlf            what Enter sends (default cr, like a serial terminal)
//            localecho=1               show typed characters (for lines that do not echo)
//            hex=1                     show received bytes in hexadecimal
import { Terminal } from '../node_modules/@xterm/xterm/lib/xterm.mjs';
import { FitAddon } from '../node_modules/@xterm/addon-fit/lib/addon-fit.mjs';
import { TelnetClient } from './telnet.js';
import { boolParam, connectionTarget, intParam, stringParam } from './params.js';
import { bindFullscreenButton, closeReason, hostPort, setStatus } from './ui.js';
import { binaryStringBytes, formatBytes, HexView, translateEnter, utf8Bytes } from './bytes.js';

const mode = document.body.dataset.console === 'telnet' ? 'telnet' : 'serial';
const params = new URLSearchParams(window.location.search);
const target = connectionTarget(params, window.location);
const settings = {
  autoconnect: boolParam(params, 'autoconnect', false),
  reconnect: boolParam(params, 'reconnect', false),
  reconnectDelay: intParam(params, 'reconnect_delay', 5000, 0, 3600000),
  fontSize: intParam(params, 'font_size', 15, 6, 72),
  terminalType: stringParam(params, 'term', 'xterm'),
  eol: stringParam(params, 'eol', 'cr'),
  localEcho: boolParam(params, 'localecho', false),
  hex: boolParam(params, 'hex', false),
};

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  counters: $('counters'),
  connect: $('connect'),
  disconnect: $('disconnect'),
  hex: $('hex'),
  fullscreen: $('fullscreen'),
  terminal: $('terminal'),
};

// xterm.js keeps its default DOM renderer: the screen's text is in the page (screen readers, tests).
const term = new Terminal({
  cursorBlink: true,
  fontFamily: '"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
  fontSize: settings.fontSize,
  scrollback: 10000,
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open(ui.terminal);
fitTerminal();

let socket = null;
let telnet = null;
let everOpened = false;
let userClosed = false;
let reconnectTimer = null;
let rx = 0;
let tx = 0;
let hexView = settings.hex ? new HexView() : null;

function connect() {
  clearTimeout(reconnectTimer);
  if (socket) return;
  everOpened = false;
  userClosed = false;
  setStatus(ui.status, 'connecting', `Connecting to ${target.url}`);
  showButtons('connecting');
  let ws;
  try {
    ws = new WebSocket(target.url, ['binary']);
  } catch (error) {
    setStatus(ui.status, 'failed', `Cannot connect to ${target.url}: ${error.message}`);
    showButtons('disconnected');
    return;
  }
  ws.binaryType = 'arraybuffer';
  socket = ws;
  telnet =
    mode === 'telnet'
      ? new TelnetClient({
          send: (bytes) => send(bytes),
          terminalType: settings.terminalType,
          cols: term.cols,
          rows: term.rows,
        })
      : null;

  ws.addEventListener('open', () => {
    if (ws !== socket) return;
    everOpened = true;
    setStatus(ui.status, 'connected', `Connected to ${hostPort(target)}, ${target.encrypt ? 'encrypted' : 'unencrypted'}`);
    ui.status.title = `Connected to ${target.url}`;
    showButtons('connected');
    term.focus();
  });
  ws.addEventListener('message', (event) => {
    if (ws !== socket) return;
    const bytes =
      typeof event.data === 'string' ? utf8Bytes(event.data) : new Uint8Array(event.data);
    rx += bytes.length;
    showCounters();
    const shown = telnet ? telnet.receive(bytes) : bytes;
    if (shown.length === 0) return;
    if (hexView) {
      term.write(hexView.format(shown));
    } else {
      term.write(shown);
    }
  });
  ws.addEventListener('close', (event) => {
    if (ws !== socket) return;
    socket = null;
    const reason = userClosed ? 'closed by you' : closeReason(event);
    const text = everOpened ? `Disconnected: ${reason}` : `Could not connect to ${target.url}: ${reason}`;
    const failed = !userClosed && (!everOpened || event.code !== 1000);
    setStatus(ui.status, failed ? 'failed' : 'disconnected', text);
    term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
    showButtons('disconnected');
    if (settings.reconnect && !userClosed) {
      reconnectTimer = setTimeout(connect, settings.reconnectDelay);
      ui.status.textContent += ` — reconnecting in ${Math.round(settings.reconnectDelay / 1000)} s`;
    }
  });
}

function send(bytes) {
  if (!socket || socket.readyState !== WebSocket.OPEN || bytes.length === 0) return;
  socket.send(bytes);
  tx += bytes.length;
  showCounters();
}

function typed(bytes, text) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  if (telnet) {
    if (telnet.localEcho && text !== null) term.write(text.replace(/\r/g, '\r\n'));
    send(telnet.encode(bytes));
  } else {
    if (settings.localEcho && text !== null) term.write(text.replace(/\r\n|\r|\n/g, '\r\n'));
    send(bytes);
  }
}

term.onData((text) => {
  const line = telnet ? text : translateEnter(text, settings.eol);
  typed(utf8Bytes(line), line);
});
term.onBinary((text) => typed(binaryStringBytes(text), null));
term.onResize(({ cols, rows }) => {
  if (telnet) telnet.resize(cols, rows);
});

function fitTerminal() {
  try {
    fit.fit();
  } catch {
    // Not laid out yet (e.g. a hidden tab): the next resize fits it.
  }
}
new ResizeObserver(() => fitTerminal()).observe(ui.terminal);

function showCounters() {
  ui.counters.textContent = `↓ ${formatBytes(rx)} ↑ ${formatBytes(tx)}`;
  ui.counters.dataset.rx = String(rx);
  ui.counters.dataset.tx = String(tx);
}

function showButtons(state) {
  const active = state === 'connected' || state === 'connecting';
  ui.connect.hidden = active;
  ui.connect.textContent = state === 'disconnected' ? 'Reconnect' : 'Connect';
  ui.disconnect.hidden = !active;
}

ui.connect.addEventListener('click', connect);
ui.disconnect.addEventListener('click', () => {
  clearTimeout(reconnectTimer);
  userClosed = true;
  if (socket) socket.close(1000, 'closed by the user');
});
if (ui.hex) {
  ui.hex.setAttribute('aria-pressed', String(Boolean(hexView)));
  ui.hex.addEventListener('click', () => {
    if (hexView) {
      term.write(hexView.finish());
      hexView = null;
    } else {
      hexView = new HexView();
      term.write('\r\n');
    }
    ui.hex.setAttribute('aria-pressed', String(Boolean(hexView)));
    term.focus();
  });
}
bindFullscreenButton(ui.fullscreen);
showCounters();

// For tests and the browser console.
window.wsproxyTerminal = {
  mode,
  target,
  term,
  get socket() {
    return socket;
  },
  get telnet() {
    return telnet;
  },
};

if (settings.autoconnect) {
  connect();
} else {
  setStatus(ui.status, 'idle', `Not connected; Connect goes to ${target.url}`);
  showButtons('idle');
}
