// sessions.html: reserves consoles through wsproxy's sessions API (/api/v1/) and opens them.
// The API token comes from the fragment (sessions.html#token=..., which scripts/demo prints; it never
// reaches a server log) or the form; it is kept for this tab only (sessionStorage).
const $ = (id) => document.getElementById(id);
const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ''));
if (fragment.get('token')) {
  sessionStorage.setItem('wsproxy-api-token', fragment.get('token'));
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
}
$('api-token').value = sessionStorage.getItem('wsproxy-api-token') || '';

function token() {
  return $('api-token').value.trim();
}

function say(text) {
  $('message').textContent = text;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(json?.error?.message || `${response.status} ${response.statusText}`);
  return json;
}

function item(...children) {
  const li = document.createElement('li');
  li.append(...children);
  return li;
}

function element(tag, text, props = {}) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  return Object.assign(node, props);
}

async function reserve(service) {
  // Opened within the click, so no popup blocker stops it; it goes to the page once reserved.
  const tab = window.open('about:blank', '_blank');
  try {
    const session = await api('POST', '/api/v1/sessions', { service });
    say(`Reserved ${service} #${session.index}: opening it`);
    if (tab) tab.location.href = session.urls.page;
    else window.location.href = session.urls.page;
    await refresh();
  } catch (error) {
    tab?.close();
    say(`Cannot reserve ${service}: ${error.message}`);
  }
}

/** The card of each service, made once: a refresh updates its text and button in place, so a click
 * never lands on a button that was just replaced. */
const serviceCards = new Map();

function serviceCard(s) {
  let card = serviceCards.get(s.name);
  if (!card) {
    const button = element('button', `Reserve ${s.name}`, { type: 'button' });
    button.dataset.service = s.name;
    button.addEventListener('click', () => reserve(s.name));
    card = { li: item(button, element('div', '')), button };
    serviceCards.set(s.name, card);
  }
  card.button.disabled = s.free === 0;
  card.li.lastChild.textContent = `${s.free} of ${s.count} free, ${s.running} running, ${s.reserved} reserved`;
  return card.li;
}

async function stop(id) {
  try {
    await api('DELETE', `/api/v1/sessions/${id}`);
    await refresh();
  } catch (error) {
    say(`Cannot stop ${id}: ${error.message}`);
  }
}

async function refresh() {
  if (!token()) {
    say('Enter an API token.');
    return;
  }
  sessionStorage.setItem('wsproxy-api-token', token());
  try {
    const [services, sessions] = await Promise.all([api('GET', '/api/v1/services'), api('GET', '/api/v1/sessions')]);
    const cards = services.map(serviceCard);
    const list = $('services');
    if (cards.length !== list.children.length || cards.some((card, i) => list.children[i] !== card)) {
      list.replaceChildren(...cards);
    }
    const live = sessions.filter((s) => !['stopped', 'failed', 'expired'].includes(s.state));
    $('sessions').replaceChildren(...live.map((s) => {
      const open = element('a', `${s.service} #${s.index}`, { href: s.urls?.page || '#', target: '_blank' });
      const button = element('button', 'Stop', { type: 'button' });
      button.addEventListener('click', () => stop(s.id));
      const state = element('div', `${s.state}, ${s.clients} window(s)`);
      state.dataset.state = s.state;
      return item(open, state, button);
    }));
    if (live.length === 0) $('sessions').replaceChildren(item(element('div', 'None yet.')));
  } catch (error) {
    say(error.message);
  }
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  refresh();
});
$('api-token').addEventListener('change', refresh);
refresh();
setInterval(refresh, 3000);
