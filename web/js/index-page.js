// index.html: links to the three consoles, filled in with this page's host and port.
// index.html?vnc_port=6080&telnet_port=6023&serial_port=6055 sets each console's default port
// (scripts/demo uses this when the consoles are behind different wsproxies).
const params = new URLSearchParams(window.location.search);
const pagePort = window.location.port || (window.location.protocol === 'https:' ? '443' : '80');
const fields = {
  host: document.getElementById('host'),
  vnc: document.getElementById('vnc-port'),
  telnet: document.getElementById('telnet-port'),
  serial: document.getElementById('serial-port'),
};

fields.host.value = params.get('host') || window.location.hostname;
for (const kind of ['vnc', 'telnet', 'serial']) fields[kind].value = params.get(`${kind}_port`) || pagePort;

function update() {
  const host = fields.host.value.trim() || window.location.hostname;
  for (const kind of ['vnc', 'telnet', 'serial']) {
    const port = fields[kind].value.trim() || pagePort;
    // The page itself is loaded from the wsproxy in front of that console, so it connects back to it.
    const base = `${window.location.protocol}//${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
    const url = `${base}/${kind}.html?autoconnect=1`;
    const link = document.getElementById(`link-${kind}`);
    link.href = url;
    document.getElementById(`url-${kind}`).textContent = url;
  }
}

document.getElementById('where').addEventListener('input', update);
update();
