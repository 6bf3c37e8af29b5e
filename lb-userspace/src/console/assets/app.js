// lbd's web console: monitoring (polls /api/state) and configuration
// (forms over the exported configuration; every change is planned and
// applied by lbd's one apply path). No framework, no build step.
'use strict';
(() => {
  const POLL_MS = 2000;
  const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'sed', 'nq', 'lblc', 'lblcr', 'dh', 'sh', 'mh', 'fo', 'ovf', 'twos'];
  const CHECKS = ['tcp', 'http', 'https', 'udp', 'dns', 'icmp', 'external', 'agent'];
  // Health-check fields, and the check types that use them.
  const CHECK_FIELDS = [
    // [key, kind, label, types, placeholder (lbd's default)]
    ['port', 'num', 'Port', ['tcp', 'http', 'https', 'udp', 'dns', 'agent'], 'the service\'s'],
    ['interval', 'num', 'Interval (s)', CHECKS, '2'],
    ['timeout', 'num', 'Timeout (s)', CHECKS, '1'],
    ['rise', 'num', 'Rise', CHECKS, '2'],
    ['fall', 'num', 'Fall', CHECKS, '2'],
    ['retry', 'num', 'Retries', CHECKS, '0'],
    ['retry_delay', 'num', 'Retry delay (s)', CHECKS, '0.2'],
    ['path', 'text', 'HTTP path', ['http', 'https'], '/'],
    ['host', 'text', 'Host header', ['http', 'https'], 'the address'],
    ['sni', 'text', 'TLS SNI', ['https'], 'the host'],
    ['status.0', 'num', 'Status from', ['http', 'https'], '200'],
    ['status.1', 'num', 'Status to', ['http', 'https'], '299'],
    ['regex', 'text', 'Body regex', ['http', 'https'], ''],
    ['digest', 'text', 'Body MD5', ['http', 'https'], ''],
    ['send', 'text', 'Send string', ['tcp', 'udp'], '\\r\\n escapes'],
    ['expect', 'text', 'Expect string', ['tcp', 'udp', 'http', 'https', 'agent'], ''],
    ['name', 'text', 'DNS name', ['dns'], '.'],
    ['qtype', 'text', 'DNS type', ['dns'], 'SOA'],
    ['command', 'args', 'Program and arguments ({address} {port})', ['external'], '/usr/lib/lbd/check {address} {port}'],
    ['address', 'text', 'Probe address', CHECKS, 'the real server'],
    ['source', 'text', 'Source address', CHECKS, ''],
  ];

  const S = {
    session: null, view: null, prev: null, tab: 'monitor', afterLogin: null,
    config: null, version: null, draft: null, editing: null, backup: null,
    reviewing: null, weights: {}, polling: false,
  };

  const $ = (s, e = document) => e.querySelector(s);
  const $$ = (s, e = document) => Array.from(e.querySelectorAll(s));
  const clone = (v) => JSON.parse(JSON.stringify(v));

  function el(tag, props = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'data') Object.assign(e.dataset, v);
      else if (k === 'checked' || k === 'value' || k === 'disabled' || k === 'hidden') e[k] = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) {
      if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }

  async function api(method, path, body) {
    const opt = { method, headers: {}, credentials: 'same-origin' };
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    if (method !== 'GET' && S.session && S.session.csrf) opt.headers['X-CSRF-Token'] = S.session.csrf;
    let r;
    try {
      r = await fetch(path, opt);
    } catch (e) {
      return { status: 0, ok: false, body: { error: 'lbd did not answer (' + e.message + ')' } };
    }
    let j = {};
    try { j = await r.json(); } catch (e) { j = {}; }
    if (r.status === 401 && S.session && S.session.user) {
      S.session.user = null;
      S.session.csrf = null;
      renderWho();
    }
    return { status: r.status, ok: r.ok, body: j };
  }

  let bannerTimer = null;
  function banner(text, ok, forMs) {
    clearTimeout(bannerTimer);
    if (forMs) bannerTimer = setTimeout(() => banner(''), forMs);
    const b = $('#banner');
    b.textContent = text || '';
    b.hidden = !text;
    b.classList.toggle('ok', !!ok);
  }

  // ---- formatting --------------------------------------------------------
  function num(n) {
    if (n === undefined || n === null) return '';
    if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(n);
  }
  function bytes(n) { return num(n) + ' B'; }
  function hostPort(a, p) { return (a && a.includes(':') ? '[' + a + ']' : a) + ':' + p; }
  function serviceLabel(s) {
    if (s.port_group) return 'port group ' + s.port_group;
    if (s.fwmark !== undefined && s.fwmark !== null && s.fwmark !== '') return 'fwmark ' + s.fwmark;
    return (s.protocol || 'tcp') + ' ' + hostPort(s.address || '?', s.port === undefined ? '?' : s.port);
  }

  // ---- session and tabs --------------------------------------------------
  function renderWho() {
    const s = S.session || {};
    $('h1').textContent = 'lbd' + (s.director ? ' · ' + s.director : '');
    document.title = 'lbd ' + (s.director || '') + ' console';
    $('#user').textContent = s.user ? s.user + (s.can_edit ? '' : ' (read-only)') : (s.logins ? '' : 'read-only');
    $('#logout').hidden = !s.user;
    $('#show-login').hidden = !!s.user || !s.logins;
    $$('#tabs button').forEach((b) => {
      if (b.dataset.tab !== 'monitor') b.hidden = !s.logins;
    });
  }

  function show(tab) {
    S.tab = tab;
    const s = S.session || {};
    const needsLogin = (tab === 'configure' || tab === 'yaml') || (tab === 'monitor' && s.login_to_view);
    const section = needsLogin && !s.user ? 'login' : tab;
    if (section === 'login') S.afterLogin = tab;
    for (const id of ['monitor', 'login', 'configure', 'yaml', 'review']) $('#' + id).hidden = id !== section;
    $$('#tabs button').forEach((b) => b.classList.toggle('on', b.dataset.tab === tab));
    if (section === 'login') { $('#login-user').focus(); return; }
    if (tab === 'monitor') poll();
    if (tab === 'configure' || tab === 'yaml') loadConfig(false);
  }

  async function login(ev) {
    ev.preventDefault();
    const user = $('#login-user').value;
    const password = $('#login-password').value;
    $('#login-submit').disabled = true;
    const r = await api('POST', '/api/login', { user, password });
    $('#login-submit').disabled = false;
    $('#login-password').value = '';
    if (!r.ok) {
      $('#login-error').textContent = r.body.error || ('refused (' + r.status + ')');
      return;
    }
    $('#login-error').textContent = '';
    S.session.user = r.body.user;
    S.session.csrf = r.body.csrf;
    S.session.can_edit = r.body.can_edit;
    renderWho();
    show(S.afterLogin || 'monitor');
  }

  async function logout() {
    await api('POST', '/api/logout');
    S.session.user = null;
    S.session.csrf = null;
    S.config = S.draft = null;
    renderWho();
    show('monitor');
  }

  // ---- monitoring --------------------------------------------------------
  async function poll() {
    if (S.polling || document.hidden) return;
    const s = S.session || {};
    if (s.login_to_view && !s.user) return;
    S.polling = true;
    const r = await api('GET', '/api/state');
    S.polling = false;
    if (!r.ok) {
      $('#refreshed').textContent = 'not refreshed: ' + (r.body.error || r.status);
      return;
    }
    S.prev = S.view ? { view: S.view, at: S.at } : null;
    S.view = r.body;
    S.at = Date.now();
    if (S.tab === 'monitor') renderMonitor();
  }

  function renderMonitor() {
    const v = S.view;
    if (!v) return;
    const reals = v.services.flatMap((s) => s.reals.filter((r) => r.state !== 'sorry'));
    const up = reals.filter((r) => r.state === 'up').length;
    const card = (label, value, id) => el('div', { class: 'card', id }, el('span', { class: 'muted', text: label }), el('b', { text: value }));
    $('#summary').replaceChildren(
      card('Virtual services', v.services.length, 'sum-services'),
      card('Real servers up', up + ' / ' + reals.length, 'sum-up'),
      card('Active connections', num(v.services.reduce((a, s) => a + s.active, 0))),
      card('Connection entries', num(v.conn_entries) + ' / ' + num(v.conn_table_size)),
      card('XDP', v.xdp ? v.xdp.mode + (v.xdp.ours ? '' : ' (not lbd\'s!)') : 'not attached'),
    );
    const svcs = v.services.map((s) => el('div', { class: 'service', data: { service: s.name } },
      el('div', { class: 'svc-head' },
        el('span', { class: 'name', text: s.name }),
        el('span', { class: 'muted', text: s.scheduler + (s.persistent ? ' · persistent ' + s.persistent + ' s' : '') }),
        el('span', { class: 'muted', text: s.usable + ' of ' + s.reals.length + ' usable' }),
        el('span', { class: 'muted', text: num(s.cps) + ' conn/s · ' + num(s.in_pps) + ' pkt/s · ' + bytes(s.in_bps) + '/s' })),
      el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, ['Real server', 'State', 'Weight', 'Active', 'Inactive', 'Conns', 'Conn/s', 'Why'].map((h, i) => el('th', { class: i >= 2 && i <= 6 ? 'n' : null, text: h })))),
        el('tbody', {}, s.reals.map((r) => el('tr', { data: { real: r.name, state: r.state } },
          el('td', { class: 'mono', text: r.name }),
          el('td', {}, el('span', { class: 'state ' + r.state, text: r.state })),
          el('td', { class: 'n', text: r.effective_weight === r.weight ? String(r.weight) : r.effective_weight + ' (' + r.weight + ')' }),
          el('td', { class: 'n', text: num(r.active) }),
          el('td', { class: 'n', text: num(r.inactive) }),
          el('td', { class: 'n', text: num(r.conns) }),
          el('td', { class: 'n', text: num(r.cps) }),
          el('td', { class: 'muted', text: r.reason }))))))));
    $('#services').replaceChildren(...(svcs.length ? svcs : [el('p', { class: 'muted', text: 'No virtual service.' })]));
    const prev = S.prev && new Map(S.prev.view.counters);
    const dt = S.prev ? (S.at - S.prev.at) / 1000 : 0;
    const zero = v.counters.filter(([, value]) => value === 0).map(([name]) => name);
    $('#counters tbody').replaceChildren(...v.counters.filter(([, value]) => value !== 0).map(([name, value]) => {
      const was = prev && prev.get(name);
      const rate = prev && dt > 0 && was !== undefined && value >= was ? ((value - was) / dt).toFixed(0) : '';
      return el('tr', { data: { counter: name } }, el('td', { class: 'mono', text: name }), el('td', { class: 'n', text: num(value) }), el('td', { class: 'n', text: rate }));
    }), ...(zero.length ? [el('tr', {}, el('td', { colspan: 3, class: 'muted', text: 'At zero: ' + zero.join(', ') }))] : []));
    const ha = [];
    if (v.vrrp.length) {
      const since = (t) => {
        const s = Math.max(0, Math.round(Date.now() / 1000 - t));
        return s < 120 ? s + ' s' : s < 7200 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h';
      };
      ha.push(el('h3', { text: 'VRRP' }), el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, ['Router', 'State', 'Since', 'Priority', 'Master', 'Heartbeat', 'Dead after', 'VIPs', 'Transitions'].map((h) => el('th', { text: h })))),
        el('tbody', {}, v.vrrp.map((r) => el('tr', { data: { vrrp: r.name } },
          el('td', { text: r.name + ' (' + r.interface + ', vrid ' + r.virtual_router_id + ')' }),
          el('td', {}, el('span', { class: 'state ' + (r.state === 'master' ? 'up' : r.state === 'fault' ? 'down' : 'inactive'), text: r.state + (r.released ? ' (released)' : '') })),
          el('td', { text: since(r.since_unix) }),
          el('td', { text: r.effective_priority + (r.effective_priority !== r.priority ? ' (' + r.priority + ')' : '') }),
          el('td', { class: 'mono', text: r.master || '' }),
          el('td', { text: (r.advert_int / 100) + ' s' }),
          el('td', { text: (r.master_down_ms / 1000).toFixed(2) + ' s' }),
          el('td', { class: 'mono', text: r.virtual_addresses.join(' ') }),
          el('td', { text: r.transitions })))))));
    }
    if (v.sync.length) {
      ha.push(el('h3', { text: 'Connection sync' }), el('ul', {}, v.sync.map((d) => el('li', { class: 'mono', text: d.line + ' · sent ' + d.stats.sent_records + ' · received ' + d.stats.received_records + ' · applied ' + d.stats.applied }))));
    }
    if (v.bgp) {
      ha.push(el('h3', { text: 'BGP' + (v.bgp.drained ? ' (drained)' : '') }), el('ul', {}, v.bgp.vips.map((x) => el('li', { class: 'mono', text: JSON.stringify(x) }))));
    }
    $('#ha').replaceChildren(...(ha.length ? [el('details', { open: true }, el('summary', { text: 'Directors (VRRP, sync, BGP)' }), ...ha)] : []));
    const hist = v.history || [];
    $('#history').hidden = !hist.length;
    $('#history-list').replaceChildren(...hist.map((c) => el('li', { data: { change: c.unix } },
      el('span', { class: 'muted', text: new Date(c.unix * 1000).toLocaleString() + ' · ' + c.what }),
      el('ul', {}, c.changes.map((line) => el('li', { class: 'mono', text: line }))))));
    $('#refreshed').textContent = 'Refreshed ' + new Date(S.at).toLocaleTimeString() + ', every ' + POLL_MS / 1000 + ' s';
  }

  // ---- configuration -----------------------------------------------------
  async function loadConfig(force) {
    if (S.config && !force) { renderConfig(); return; }
    const r = await api('GET', '/api/config');
    if (!r.ok) {
      if (r.status === 401) { show(S.tab); return; }
      banner(r.body.error || 'cannot read the configuration (' + r.status + ')');
      return;
    }
    S.config = r.body.config;
    S.version = r.body.version;
    S.draft = clone(S.config);
    S.editing = null;
    renderConfig();
  }

  function renderConfig() {
    if (S.tab === 'yaml') { renderYaml(); return; }
    if (S.tab !== 'configure' || !S.draft) return;
    const root = $('#config-body');
    if (S.editing !== null) { root.replaceChildren(editor(S.editing)); return; }
    const canEdit = S.session.can_edit;
    const d = S.draft;
    const kids = [];
    if (!canEdit) kids.push(el('p', { class: 'panel', text: 'The console is read-only (console.read_only): what you see cannot be changed here.' }));
    kids.push(globalPanel(d, canEdit));
    kids.push(el('div', { class: 'buttons' },
      el('h2', { text: 'Virtual services' }),
      el('button', { id: 'add-service', class: 'primary', disabled: !canEdit, onclick: addService, text: 'Add virtual service' })));
    (d.services || []).forEach((s, i) => kids.push(serviceCard(s, i, canEdit)));
    if (dirty()) {
      kids.push(el('div', { class: 'pending', id: 'pending' },
        el('span', { text: 'Changes not applied yet.' }),
        el('button', { id: 'pending-review', class: 'primary', onclick: () => review({ config: S.draft }), text: 'Review changes' }),
        el('button', { onclick: discard, text: 'Discard' })));
    }
    kids.push(el('p', { class: 'error', id: 'config-error' }));
    root.replaceChildren(...kids);
  }

  function dirty() { return JSON.stringify(S.draft) !== JSON.stringify(S.config); }
  function discard() { S.draft = clone(S.config); S.editing = null; renderConfig(); }

  // An input bound to `obj[key]` (key may be "status.0"); `path` names it
  // as the loader does, so its errors land next to it.
  function bound(obj, key, kind, path, props = {}, after = null) {
    const [k, sub] = key.split('.');
    const get = () => (sub === undefined ? obj[k] : (obj[k] || [])[sub]);
    const set = (v) => {
      if (sub === undefined) {
        if (v === undefined) delete obj[k]; else obj[k] = v;
      } else {
        if (!Array.isArray(obj[k])) obj[k] = [];
        obj[k][sub] = v;
      }
      if (after) after();
      renderPendingOnly();
    };
    const cur = get();
    if (kind === 'bool') {
      return el('input', Object.assign({ type: 'checkbox', checked: !!cur, data: { path }, onchange: (e) => set(e.target.checked) }, props));
    }
    if (kind === 'select') {
      const opts = props.options;
      delete props.options;
      return el('select', Object.assign({ data: { path }, onchange: (e) => set(e.target.value || undefined) }, props),
        opts.map((o) => el('option', { value: o, text: o || '(none)', selected: (cur || '') === o })));
    }
    let shown = cur === undefined || cur === null ? '' : (kind === 'args' ? cur.join(' ') : String(cur));
    return el('input', Object.assign({
      value: shown, data: { path }, inputmode: kind === 'num' ? 'decimal' : null,
      onchange: (e) => {
        const t = e.target.value.trim();
        if (t === '') set(undefined);
        else if (kind === 'num' && /^-?\d+(\.\d+)?$/.test(t)) set(Number(t));
        else if (kind === 'args') set(t.split(/\s+/));
        else set(t);
      },
    }, props));
  }

  function field(label, input) { return el('label', {}, label, input); }

  // Re-renders only the pending bar's presence (typing must not lose focus).
  function renderPendingOnly() {
    if (S.editing !== null) return;
    const has = !!$('#pending');
    if (has !== dirty()) renderConfig();
  }

  function globalPanel(d, canEdit) {
    const t = d.timeouts ? d.timeouts : {};
    const tField = (k, label, dflt) => field(label, bound(t, k, 'num', 'timeouts.' + k, { placeholder: String(dflt), disabled: !canEdit }, () => { d.timeouts = t; }));
    return el('details', { class: 'panel' },
      el('summary', { text: 'Global settings: timeouts, expire_nodest_conn, sloppy_tcp' }),
      el('div', { class: 'grid' },
        tField('tcp', 'TCP established (s)', 900),
        tField('tcpfin', 'TCP FIN_WAIT (s)', 120),
        tField('udp', 'UDP (s)', 300),
        el('label', { class: 'check' }, bound(d, 'expire_nodest_conn', 'bool', 'expire_nodest_conn', { disabled: !canEdit }), 'expire_nodest_conn'),
        el('label', { class: 'check' }, bound(d, 'sloppy_tcp', 'bool', 'sloppy_tcp', { disabled: !canEdit }), 'sloppy_tcp')));
  }

  function serviceCard(s, i, canEdit) {
    const active = s.active !== false;
    const reals = s.real_servers || [];
    return el('div', { class: 'service', data: { cfgService: serviceLabel(s), index: i } },
      el('div', { class: 'svc-head' },
        el('span', { class: 'name', text: serviceLabel(s) }),
        active ? null : el('span', { class: 'state inactive', text: 'inactive' }),
        el('span', { class: 'muted', text: (s.scheduler || 'wlc') + (s.persistent ? ' · persistent ' + (s.persistent === true ? 360 : s.persistent) + ' s' : '') + (s.health_check ? ' · ' + s.health_check.type + ' check' : ' · no check') }),
        el('span', { class: 'buttons' },
          el('button', { class: 'small', disabled: !canEdit, data: { action: 'edit' }, onclick: () => edit(i), text: 'Edit' }),
          el('button', { class: 'small', disabled: !canEdit, data: { action: active ? 'deactivate' : 'activate' }, onclick: () => { toggleActive(s); review({ config: S.draft }); }, text: active ? 'Deactivate' : 'Activate' }),
          el('button', { class: 'small danger', disabled: !canEdit, data: { action: 'delete' }, onclick: () => { S.draft.services.splice(i, 1); review({ config: S.draft }); }, text: 'Delete' }))),
      el('div', { class: 'table-wrap' }, el('table', {},
        el('thead', {}, el('tr', {}, ['Real server', 'Weight', '', ''].map((h) => el('th', { text: h })))),
        el('tbody', {}, reals.map((r, j) => {
          const path = 'services.' + i + '.real_servers.' + j;
          const key = serviceLabel(s) + '|' + r.address;
          const w = r.weight === undefined ? 1 : r.weight;
          return el('tr', { data: { cfgReal: r.address } },
            el('td', { class: 'mono' }, r.address, r.active === false ? el('span', { class: 'state inactive', text: 'inactive' }) : null),
            el('td', {}, bound(r, 'weight', 'num', path + '.weight', { disabled: !canEdit, size: 6, placeholder: '1' })),
            el('td', {}, w === 0
              ? el('button', { class: 'small', disabled: !canEdit, data: { action: 'restore', path }, onclick: () => { r.weight = remembered(key) || 1; review({ config: S.draft }); }, text: 'Restore weight' })
              : el('button', { class: 'small', disabled: !canEdit, data: { action: 'quiesce', path }, onclick: () => { remember(key, w); r.weight = 0; review({ config: S.draft }); }, text: 'Quiesce' })),
            el('td', {}, el('button', { class: 'small', disabled: !canEdit, data: { action: r.active === false ? 'activate' : 'deactivate', path }, onclick: () => { toggleActive(r); review({ config: S.draft }); }, text: r.active === false ? 'Activate' : 'Deactivate' })));
        })))));
  }

  // The weight a real server had before Quiesce, for Restore (kept in the
  // browser across reloads).
  function remember(key, w) {
    S.weights[key] = w;
    try { localStorage.setItem('lbd.weight.' + key, String(w)); } catch (e) { /* private mode */ }
  }
  function remembered(key) {
    let w = S.weights[key];
    try { w = w || Number(localStorage.getItem('lbd.weight.' + key)); } catch (e) { /* private mode */ }
    return w || 0;
  }

  function toggleActive(o) {
    if (o.active === false) delete o.active; else o.active = false;
  }

  function addService() {
    S.draft.services = S.draft.services || [];
    S.draft.services.push({ protocol: 'tcp', address: '', port: 80, scheduler: 'wlc', real_servers: [] });
    edit(S.draft.services.length - 1, true);
  }

  function edit(i, isNew) {
    S.backup = isNew ? null : clone(S.draft.services[i]);
    S.editing = i;
    renderConfig();
  }

  function closeEditor(keep) {
    const i = S.editing;
    if (!keep) {
      if (S.backup === null) S.draft.services.splice(i, 1);
      else S.draft.services[i] = S.backup;
    }
    S.editing = null;
    renderConfig();
  }

  function editor(i) {
    const s = S.draft.services[i];
    const p = 'services.' + i + '.';
    const reals = s.real_servers = s.real_servers || [];
    const hc = s.health_check;
    const checkBox = el('div', { id: 'check-fields' });
    const renderCheck = () => {
      const c = s.health_check;
      if (!c) { checkBox.replaceChildren(el('p', { class: 'muted', text: 'No health check: the real servers count as up.' })); return; }
      checkBox.replaceChildren(el('div', { class: 'grid' }, CHECK_FIELDS.filter(([, , , types]) => types.includes(c.type)).map(([k, kind, label, , dflt]) =>
        field(label, bound(c, k, kind, p + 'health_check.' + k, { placeholder: dflt || null })))));
    };
    renderCheck();
    const typeSelect = el('select', {
      data: { path: p + 'health_check.type' }, id: 'check-type',
      onchange: (e) => {
        const t = e.target.value;
        if (!t) delete s.health_check;
        else s.health_check = Object.assign(s.health_check || {}, { type: t });
        renderCheck();
      },
    }, ['', ...CHECKS].map((t) => el('option', { value: t, text: t || '(none)', selected: (hc ? hc.type : '') === t })));
    const realRows = el('tbody');
    const renderReals = () => realRows.replaceChildren(...reals.map((r, j) => el('tr', {},
      el('td', {}, bound(r, 'address', 'text', p + 'real_servers.' + j + '.address', { placeholder: '192.0.2.11', class: 'real-address' })),
      el('td', {}, bound(r, 'weight', 'num', p + 'real_servers.' + j + '.weight', { placeholder: '1', size: 5, class: 'real-weight' })),
      el('td', {}, bound(r, 'upper_threshold', 'num', p + 'real_servers.' + j + '.upper_threshold', { size: 5 })),
      el('td', {}, bound(r, 'lower_threshold', 'num', p + 'real_servers.' + j + '.lower_threshold', { size: 5 })),
      el('td', {}, el('input', { type: 'checkbox', checked: r.active !== false, onchange: (e) => { if (e.target.checked) delete r.active; else r.active = false; } })),
      el('td', {}, el('button', { class: 'small danger', onclick: () => { reals.splice(j, 1); renderReals(); }, text: 'Remove' })))));
    renderReals();
    return el('div', { class: 'panel', id: 'editor' },
      el('h2', { text: S.backup === null ? 'New virtual service' : 'Edit ' + serviceLabel(s) }),
      el('div', { class: 'grid' },
        field('Protocol', bound(s, 'protocol', 'select', p + 'protocol', { options: ['', 'tcp', 'udp'] })),
        field('Virtual IP', bound(s, 'address', 'text', p + 'address', { placeholder: '192.0.2.10' })),
        field('Port', bound(s, 'port', 'num', p + 'port')),
        field('Port group (instead)', bound(s, 'port_group', 'text', p + 'port_group')),
        field('Firewall mark (instead)', bound(s, 'fwmark', 'num', p + 'fwmark')),
        field('Scheduler', bound(s, 'scheduler', 'select', p + 'scheduler', { options: SCHEDULERS })),
        field('Scheduler flags', bound(s, 'flags', 'args', p + 'flags', { placeholder: 'mh-port mh-fallback' })),
        field('Persistence (s)', bound(s, 'persistent', 'num', p + 'persistent', { placeholder: 'off' })),
        field('Persistence netmask (prefix)', bound(s, 'netmask', 'num', p + 'netmask', { placeholder: '32' })),
        field('On failure', bound(s, 'on_failure', 'select', p + 'on_failure', { options: ['quiesce', 'remove'] })),
        field('Sorry server', bound(s, 'sorry_server', 'text', p + 'sorry_server')),
        field('Quorum (total weight)', bound(s, 'quorum', 'num', p + 'quorum', { placeholder: '1' })),
        field('Hysteresis', bound(s, 'hysteresis', 'num', p + 'hysteresis', { placeholder: '0' })),
        el('label', { class: 'check' }, bound(s, 'one_packet', 'bool', p + 'one_packet'), 'One-packet scheduling (UDP)'),
        el('label', { class: 'check' }, bound(s, 'joinable', 'bool', p + 'joinable'), 'Real servers may join')),
      el('h3', { text: 'Real servers' }),
      el('div', { class: 'table-wrap' }, el('table', { class: 'reals-edit' },
        el('thead', {}, el('tr', {}, ['Address', 'Weight', 'Upper thr.', 'Lower thr.', 'Active', ''].map((h) => el('th', { text: h })))),
        realRows)),
      el('div', { class: 'buttons' }, el('button', { id: 'editor-add-real', onclick: () => { reals.push({ address: '', weight: 1 }); renderReals(); const a = $$('.real-address', realRows); if (a.length) a[a.length - 1].focus(); }, text: 'Add real server' })),
      el('h3', { text: 'Health check' }),
      field('Type', typeSelect),
      checkBox,
      el('p', { class: 'error', id: 'editor-error' }),
      el('div', { class: 'buttons' },
        el('button', { id: 'editor-review', class: 'primary', onclick: () => review({ config: S.draft }), text: 'Review changes' }),
        el('button', { id: 'editor-done', onclick: () => closeEditor(true), text: 'Back to the list (keep edits)' }),
        el('button', { id: 'editor-cancel', onclick: () => closeEditor(false), text: 'Cancel' })));
  }

  // ---- YAML --------------------------------------------------------------
  async function renderYaml() {
    // The draft as YAML is lbd's business: ask for the exported text.
    const r = await fetch('/api/config.yaml', { credentials: 'same-origin' }).catch(() => null);
    if (!r || !r.ok) { $('#yaml-error').textContent = 'cannot read the configuration'; return; }
    const text = await r.text();
    S.yamlVersion = r.headers.get('X-Config-Version');
    // The console section (password hashes) is left out: it cannot be changed here.
    $('#yaml-text').value = text;
    $('#yaml-review').disabled = !S.session.can_edit;
  }

  // ---- review and apply --------------------------------------------------
  function clearErrors() {
    $$('.bad').forEach((e) => e.classList.remove('bad'));
    $$('.field-error').forEach((e) => e.remove());
    for (const id of ['editor-error', 'config-error', 'yaml-error', 'review-error']) { const e = $('#' + id); if (e) e.textContent = ''; }
  }

  // Puts the loader's message next to the field it names (the nearest
  // enclosing field on the page), and the whole message in the panel.
  function showError(body, fromYaml) {
    const where = fromYaml ? $('#yaml-error') : ($('#editor-error') || $('#config-error'));
    if (where) where.textContent = body.error;
    else banner(body.error);
    if (!body.field || fromYaml) return;
    let path = body.field.replace(/\[(\d+)\]/g, '.$1');
    while (path) {
      const input = $('[data-path="' + CSS.escape(path) + '"]');
      if (input) {
        input.classList.add('bad');
        input.insertAdjacentElement('afterend', el('span', { class: 'field-error', data: { errorFor: path }, text: body.message || body.error }));
        input.focus();
        return;
      }
      path = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
    }
  }

  async function review(change) {
    clearErrors();
    banner('');
    const body = Object.assign({ version: change.yaml !== undefined ? S.yamlVersion : S.version }, change);
    const r = await api('POST', '/api/plan', body);
    if (!r.ok) { banner(r.body.error || ('refused (' + r.status + ')')); if (r.status === 401) show(S.tab); return; }
    if (!r.body.ok) {
      if (stale(r.body)) return;
      if (S.tab === 'configure' && S.editing === null) renderConfig();
      showError(r.body, change.yaml !== undefined);
      return;
    }
    S.reviewing = { body, from: S.tab === 'review' ? 'configure' : S.tab };
    const changes = r.body.changes;
    $('#review-changes').replaceChildren(...(changes.length ? changes.map((c) => el('li', { text: c })) : [el('li', { text: 'No change.' })]));
    $('#review-apply').disabled = !changes.length;
    for (const id of ['monitor', 'login', 'configure', 'yaml']) $('#' + id).hidden = true;
    $('#review').hidden = false;
    $('#review-apply').focus();
  }

  // lbadm or another session changed the configuration since this page
  // read it: read it again (the edits made here are lost, and said so).
  function stale(body) {
    if (!/changed since it was read/.test(body.error || '')) return false;
    banner(body.error + ' The configuration was read again: make the change again.');
    S.reviewing = null;
    $('#review').hidden = true;
    S.config = null;
    S.editing = null;
    show(S.tab === 'yaml' ? 'yaml' : 'configure');
    return true;
  }

  async function applyReviewed() {
    const rv = S.reviewing;
    if (!rv) return;
    $('#review-apply').disabled = true;
    const r = await api('POST', '/api/apply', rv.body);
    if (r.ok && stale(r.body)) return;
    if (!r.ok || !r.body.ok) {
      $('#review-error').textContent = r.body.error || ('refused (' + r.status + ')');
      $('#review-apply').disabled = false;
      return;
    }
    S.reviewing = null;
    // Applies so far (what a script driving the page can wait on).
    document.body.dataset.applied = String(Number(document.body.dataset.applied || 0) + 1);
    banner('Applied: ' + r.body.changes.length + ' change' + (r.body.changes.length === 1 ? '' : 's') + '.', true, 5000);
    S.config = null;
    show(rv.from);
  }

  function backFromReview() {
    const rv = S.reviewing;
    S.reviewing = null;
    $('#review').hidden = true;
    show(rv ? rv.from : 'configure');
  }

  // ---- start -------------------------------------------------------------
  async function start() {
    $$('#tabs button').forEach((b) => b.addEventListener('click', () => show(b.dataset.tab)));
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', logout);
    $('#show-login').addEventListener('click', () => show('configure'));
    $('#review-apply').addEventListener('click', applyReviewed);
    $('#review-back').addEventListener('click', backFromReview);
    $('#yaml-review').addEventListener('click', () => review({ yaml: $('#yaml-text').value }));
    $('#yaml-reload').addEventListener('click', () => { clearErrors(); renderYaml(); });
    const r = await api('GET', '/api/session');
    S.session = r.ok ? r.body : { logins: false };
    renderWho();
    show('monitor');
    setInterval(poll, POLL_MS);
    document.addEventListener('visibilitychange', poll);
  }

  start();
})();
