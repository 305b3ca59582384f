// acevisor dashboard: renders the state document from /ui/events (Server-Sent Events), updating
// rows in place (keyed by name) so nothing jumps; durations tick locally every second.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  let offset = 0; // server clock minus this browser's clock, in ms
  let es = null;

  const esc = (s) => String(s == null ? '' : s).replace(/[&<>"']/g, (c) =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const nowMs = () => Date.now() + offset;
  function dur(sec) {
    if (sec == null || !isFinite(sec)) return '—';
    sec = Math.max(0, Math.floor(sec));
    const d = Math.floor(sec / 86400), h = Math.floor((sec % 86400) / 3600);
    const m = Math.floor((sec % 3600) / 60), s = sec % 60;
    return d ? d + 'd ' + h + 'h' : h ? h + 'h ' + m + 'm' : m ? m + 'm ' + s + 's' : s + 's';
  }
  const age = (iso) => (iso ? (nowMs() - Date.parse(iso)) / 1000 : null);
  function clock(iso) {
    if (!iso) return '—';
    const t = new Date(iso);
    const hms = t.toLocaleTimeString([], { hour12: false });
    return new Date(nowMs()).toDateString() === t.toDateString()
      ? hms : t.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + hms;
  }
  const since = (iso) => '<span class="since" data-since="' + esc(iso || '') + '">' + dur(age(iso)) + '</span>';
  const pill = (s, text) => '<span class="pill s-' + esc(s) + '">' + esc(text || s) + '</span>';
  function bytes(n) {
    if (n == null) return '—';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  // Replaces the rows of `tbody` by `rows` ([{key, html, attrs}]) in order, touching only changes.
  function keyed(tbody, rows, empty, cols) {
    const old = new Map();
    const heads = Array.from(tbody.parentElement.querySelectorAll('thead th')).map((th) => th.textContent);
    for (const tr of Array.from(tbody.children)) old.set(tr.dataset.key, tr);
    if (!rows.length) rows = [{ key: '__empty', cls: 'empty', html: '<td colspan="' + cols + '">' + esc(empty) + '</td>', attrs: {} }];
    rows.forEach((r, i) => {
      let tr = old.get(r.key);
      old.delete(r.key);
      if (!tr) { tr = document.createElement('tr'); tr.dataset.key = r.key; }
      if (tr._html !== r.html) {
        tr.innerHTML = r.html;
        tr._html = r.html;
        // Labels for the stacked layout of narrow screens.
        Array.from(tr.children).forEach((td, j) => { if (td.colSpan === 1) td.dataset.label = heads[j] || ''; });
      }
      if (r.cls) tr.className = r.cls;
      for (const [k, v] of Object.entries(r.attrs)) if (tr.getAttribute(k) !== String(v)) tr.setAttribute(k, v);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const tr of old.values()) tr.remove();
  }

  function renderAlerts(d) {
    const e = d.emergency, box = $('alerts');
    let html;
    if (e.state === 'emergency') {
      const moved = d.streams.ended.filter((s) => s.end_reason === 'engine_gone' && e.entered_at && s.ended_at >= e.entered_at).length;
      html = '<div class="alert emergency" role="alert" data-testid="emergency-banner"><strong>Emergency: VPN ' +
        esc(e.failed_vpns.join(', ')) + ' failed</strong><p>Since ' + clock(e.entered_at) + ' (' + since(e.entered_at) +
        '). Serving on ' + esc(e.healthy_vpns.join(', ')) + ' with ' + d.capacity.ready + ' ready engine(s) of ' +
        d.capacity.max_replicas + ' max' + (moved ? '; ' + moved + ' stream(s) ended on the failed VPN and must move' : '') + '.</p></div>';
    } else if (e.state === 'outage') {
      html = '<div class="alert outage" role="alert" data-testid="outage-banner"><strong>Outage: no VPN is up</strong><p>' +
        esc(e.failed_vpns.join(', ')) + ' down since ' + clock(e.entered_at) + ' (' + since(e.entered_at) + '). Nothing can be served.</p></div>';
    } else {
      const last = d.incidents.find((i) => i.kind === 'emergency_exited' || i.kind === 'outage_exited');
      const up = d.vpns.filter((v) => v.status === 'up').length;
      html = '<div class="alert ok"><strong>' + (d.mode === 'none' ? 'No VPN configured' : up + ' of ' + d.vpns.length + ' VPN(s) up') +
        '</strong><p>' + (last ? 'Last ' + esc(last.kind.split('_')[0]) + ' ended ' + clock(last.at) + ' after ' + dur(last.duration_seconds) + '.' : 'No emergency since start.') + '</p></div>';
    }
    if (box._html !== html) { box.innerHTML = html; box._html = html; }
  }

  function renderVpns(d) {
    $('mode').textContent = '(' + d.mode + ')';
    const box = $('vpns');
    const want = d.vpns.map((v) => {
      const ports = v.forwarded_ports || (v.forwarded_port == null ? [] : [v.forwarded_port]);
      const html = '<h3><span>' + esc(v.name) + '</span>' + pill(v.status) + '</h3><dl>' +
        '<dt>For</dt><dd>' + since(v.since) + '</dd>' +
        '<dt>Forwarded ' + (ports.length > 1 ? 'ports' : 'port') + '</dt><dd>' + esc(ports.length ? ports.join(', ') : '—') + '</dd>' +
        '<dt>Public IP</dt><dd data-testid="public-ip">' + esc(v.public_ip || '—') + '</dd>' +
        '<dt>Container IP</dt><dd>' + esc(v.ip || '—') + '</dd>' +
        '<dt>Engines</dt><dd>' + (v.engines.length ? esc(v.engines.join(', ')) : 'none') + '</dd>' +
        (v.last_error ? '<dt>Error</dt><dd>' + esc(v.last_error) + '</dd>' : '') + '</dl>';
      return { key: v.name, html, v };
    });
    const old = new Map(Array.from(box.children).map((c) => [c.dataset.key, c]));
    want.forEach((w, i) => {
      let el = old.get(w.key);
      old.delete(w.key);
      if (!el) {
        el = document.createElement('article');
        el.className = 'card';
        el.dataset.key = w.key;
        el.setAttribute('data-testid', 'vpn-card');
      }
      if (el._html !== w.html) { el.innerHTML = w.html; el._html = w.html; }
      el.dataset.name = w.v.name;
      el.dataset.status = w.v.status;
      el.dataset.port = w.v.forwarded_port == null ? '' : w.v.forwarded_port;
      el.dataset.ports = (w.v.forwarded_ports || []).join(',');
      if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
    });
    for (const el of old.values()) el.remove();
  }

  function renderSystem(d) {
    const html = '<dt>Status</dt><dd>' + pill(d.status) + '</dd>' +
      '<dt>Docker</dt><dd>' + (d.docker.ok ? pill('up', 'reachable') : pill('down', 'unreachable') + ' ' + esc(d.docker.error)) + '</dd>' +
      '<dt>Creation breaker</dt><dd>' + pill(d.breaker.state) + (d.breaker.pending_provisions ? ' ' + d.breaker.pending_provisions + ' waiting' : '') + '</dd>' +
      '<dt>Capacity</dt><dd>' + d.capacity.ready + ' ready (min ' + d.capacity.min_replicas + ', max ' + d.capacity.max_replicas + ')</dd>' +
      '<dt>Emergency</dt><dd>' + pill(d.emergency.state) + '</dd>' +
      '<dt>acevisor up</dt><dd>' + since(d.started_at) + '</dd>';
    const box = $('system');
    if (box._html !== html) { box.innerHTML = html; box._html = html; }
    const o = $('overall');
    o.className = 'pill s-' + d.status;
    o.textContent = d.status;
  }

  function renderEngines(d) {
    $('engine-count').textContent = '(' + d.engines.length + ')';
    keyed($('engines'), d.engines.map((e) => {
      const i = e.intensity;
      const restarts = i ? i.restarts_in_window + (i.backing_off_until ? ', backing off' : '') : '0';
      return {
        key: e.container_name,
        attrs: { 'data-testid': 'engine-row', 'data-name': e.container_name, 'data-vpn': e.vpn_container || '',
          'data-state': e.state, 'data-forwarded': e.forwarded, 'data-p2p': e.p2p_port },
        html: '<td>' + esc(e.container_name) + '</td><td>' + esc(e.vpn_container || '—') + '</td><td>' +
          (e.forwarded ? '★ forwarded' : '—') + '</td><td>' + e.http_port + ' / ' + e.p2p_port + '</td><td>' +
          pill(e.state) + '</td><td>' + e.active_streams + ' / ' + e.viewers + '</td><td>' + (e.uptime_since ? since(e.uptime_since) : '—') +
          '</td><td>' + esc(restarts) + '</td>',
      };
    }), 'No engines.', 8);
  }

  function renderStreams(d) {
    const all = d.streams.active.concat(d.streams.ended);
    $('stream-count').textContent = '(' + d.streams.active.length + ' active)';
    keyed($('streams'), all.map((s) => ({
      key: s.id,
      attrs: { 'data-testid': 'stream-row', 'data-status': s.status },
      html: '<td title="' + esc(s.key) + '">' + esc(s.key.length > 16 ? s.key.slice(0, 16) + '…' : s.key) + '</td><td>' +
        esc(s.container_name) + '</td><td>' + esc(s.peers == null ? '—' : s.peers) + '</td><td>' + bytes(s.downloaded) +
        ' / ' + bytes(s.uploaded) + '</td><td>' + esc(s.viewers == null ? '—' : s.viewers) + '</td><td>' +
        bytes(s.bytes_delivered) + '</td><td>' + esc(s.failovers == null ? '—' : s.failovers) +
        '</td><td>' + clock(s.started_at) + '</td><td>' +
        (s.ended_at ? pill('ended') + ' ' + esc(s.end_reason || '') : pill('up', 'playing')) + '</td>',
    })), 'No streams.', 9);
  }

  const KIND = { vpn_failed: ['down', 'VPN failed'], vpn_recovered: ['up', 'VPN recovered'], port_changed: ['starting', 'port changed'],
    emergency_entered: ['emergency', 'emergency entered'], emergency_exited: ['up', 'emergency over'],
    outage_entered: ['outage', 'outage entered'], outage_exited: ['up', 'outage over'] };
  function renderIncidents(d) {
    keyed($('incidents'), d.incidents.map((i) => {
      const k = KIND[i.kind] || ['ended', i.kind];
      return {
        key: String(i.seq),
        attrs: { 'data-testid': 'incident-row', 'data-kind': i.kind },
        html: '<td>' + clock(i.at) + '</td><td>' + pill(k[0], k[1]) + '</td><td>' + esc(i.vpn || '—') + '</td><td class="wrap">' +
          esc(i.detail) + '</td><td>' + dur(i.duration_seconds) + '</td><td>' +
          (i.trace_url ? '<a href="' + esc(i.trace_url) + '" target="_blank" rel="noopener">trace</a>' : (i.trace_id ? esc(i.trace_id.slice(0, 8)) : '—')) + '</td>',
      };
    }), 'No incidents since start.', 6);
  }

  function render(d) {
    if (d.unavailable) { $('conn').textContent = 'acevisor is not answering: ' + d.unavailable; return; }
    renderAlerts(d); renderVpns(d); renderSystem(d); renderEngines(d); renderStreams(d); renderIncidents(d);
    $('conn').textContent = 'live · updated ' + clock(d.generated_at);
    document.body.dataset.generatedAt = d.generated_at;
  }

  function connect() {
    es = new EventSource('/ui/events');
    es.addEventListener('state', (ev) => {
      const d = JSON.parse(ev.data);
      if (d.generated_at) offset = Date.parse(d.generated_at) - Date.now();
      render(d);
    });
    es.onerror = () => {
      $('conn').textContent = 'connection lost; reconnecting…';
      if (es.readyState === EventSource.CLOSED) { es = null; setTimeout(connect, 3000); }
    };
  }

  setInterval(() => {
    for (const el of document.querySelectorAll('.since[data-since]')) {
      const t = dur(age(el.dataset.since));
      if (el.textContent !== t) el.textContent = t;
    }
  }, 1000);
  connect();
})();
