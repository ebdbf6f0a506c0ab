// Arbor dashboard: polls /api/cluster and /api/metrics/history (served by
// `arbor dashboard`, see cli/cli_dashboard.h) and draws them. Plain DOM and
// SVG; no library, no network beyond the dashboard server itself.
'use strict';

const REFRESH_MS = 1500;
const CHART_POINTS = 120;
const SVG_NS = 'http://www.w3.org/2000/svg';

function $(sel) { return document.querySelector(sel); }

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : String(k));
  return e;
}

function s(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + u[i];
}

function count(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

function lagText(n) {
  if (n === null || n === undefined) return '—';
  return n === 0 ? '0 (caught up)' : bytes(n);
}

function msText(ms) {
  return ms === null || ms === undefined ? '—' : `${ms.toFixed(1)} ms`;
}

// ---- health ------------------------------------------------------------------

function row(k, v, cls) {
  return h('tr', {}, h('td', {}, k), h('td', { class: 'v ' + (cls || '') }, v));
}

function branchOf(data, timelineId) {
  const b = (data.branches || []).find((x) => x.timeline_id === timelineId);
  return b ? b.branch : timelineId.slice(0, 8) + '…';
}

function componentCard(c, data) {
  const up = c.state === 'up';
  const card = h('div', { class: 'comp ' + (up ? 'up' : 'down'), 'data-name': c.name,
                          'data-kind': c.kind, 'data-state': c.state });
  card.append(h('div', { class: 'head' },
    h('span', {}, h('span', { class: 'name' }, c.name), h('span', { class: 'kind' }, c.kind)),
    h('span', { class: 'state ' + (up ? 'up' : 'down') }, up ? 'up' : 'down')));
  card.append(h('div', { class: 'detail' }, c.detail || ''));
  const t = h('table', {});
  // One card per daemon, whatever the number of branches: totals, the
  // worst timeline, and main's position (the per-branch detail is in the
  // searchable branch table).
  if (c.kind === 'safekeeper' && up) {
    const tls = c.timelines || [];
    const lagging = tls.filter((tl) => tl.lag_bytes > 0);
    const worst = lagging.reduce((a, tl) => (!a || tl.lag_bytes > a.lag_bytes ? tl : a), null);
    t.append(row('node / term', `${c.node_id} / ${c.term}`));
    t.append(row('timelines', count(tls.length)));
    const main = tls.find((tl) => branchOf(data, tl.timeline_id) === 'main');
    if (main) {
      t.append(row('main commit', main.commit_lsn));
      t.append(row('main flush', main.flush_lsn));
    }
    t.append(row('lagging behind best', count(lagging.length), lagging.length ? 'lagging' : ''));
    if (worst) {
      t.append(row('worst: ' + branchOf(data, worst.timeline_id), lagText(worst.lag_bytes),
                   'lagging'));
    }
  } else if (c.kind === 'pageserver' && up) {
    const tls = c.timelines || [];
    const lagging = tls.filter((tl) => tl.ingest_lag_bytes > 0);
    const worst = lagging.reduce((a, tl) =>
      (!a || tl.ingest_lag_bytes > a.ingest_lag_bytes ? tl : a), null);
    t.append(row('timelines', count(tls.length)));
    const main = tls.find((tl) => tl.branch === 'main');
    if (main) t.append(row('main ingested', main.last_record_lsn));
    t.append(row('lagging in ingest', count(lagging.length), lagging.length ? 'lagging' : ''));
    if (worst) {
      t.append(row('worst: ' + worst.branch,
                   `${lagText(worst.ingest_lag_bytes)} · ${msText(worst.ingest_lag_ms)}`,
                   'lagging'));
    }
  } else if (c.branch !== undefined && up) {
    t.append(row('branch', c.branch));
    t.append(row('endpoint', c.endpoint));
    t.append(row('role', c.role || '—'));
    t.append(row('LSN', c.lsn || '—'));
    if (c.replica_lag_ms !== undefined) {
      t.append(row('replica lag', `${lagText(c.replica_lag_bytes)} · ${msText(c.replica_lag_ms)}`,
                   c.replica_lag_bytes > 0 ? 'lagging' : ''));
    }
    t.append(row('pg port / sessions', `${c.pg_port ?? '—'} / ${c.sessions ?? '—'}`));
  }
  card.append(t);
  return card;
}

function renderHealth(data) {
  const box = $('#health');
  box.replaceChildren(...(data.components || []).map((c) => componentCard(c, data)));
  const down = (data.components || []).filter((c) => c.state !== 'up');
  const sum = $('#summary');
  if (data.error) {
    sum.textContent = data.error;
    sum.className = 'summary bad';
  } else if (down.length) {
    sum.textContent = `${down.length} down: ${down.map((c) => c.name).join(', ')}`;
    sum.className = 'summary bad';
  } else {
    sum.textContent = `all ${(data.components || []).length} components up`;
    sum.className = 'summary ok';
  }
  const when = new Date(data.sampled_at_ms || Date.now());
  $('#updated').textContent = `${data.dir || ''} · tenant ${data.tenant_id || '—'} · ` +
    `sampled ${when.toLocaleTimeString()}`;
}

// ---- branch tree ---------------------------------------------------------------

// The tree draws at most TREE_MAX branches (those matching the search box,
// with their ancestors); the table lists up to TABLE_MAX matching rows.
const TREE_MAX = 60;
const TABLE_MAX = 200;
let lastData = null;

function searchText() {
  const el = $('#branch-search');
  return el ? el.value.trim().toLowerCase() : '';
}

function matches(b, q) {
  return !q || b.branch.toLowerCase().includes(q);
}

// Matching branches plus their ancestors, in tree order.
function treeSubset(branches, q) {
  if (!q) return branches;
  const byName = new Map(branches.map((b) => [b.branch, b]));
  const keep = new Set();
  for (const b of branches) {
    if (!matches(b, q)) continue;
    for (let x = b; x && !keep.has(x.branch); x = byName.get(x.parent)) keep.add(x.branch);
  }
  return branches.filter((b) => keep.has(b.branch));
}

function renderBranchTable(data) {
  const q = searchText();
  const all = data.branches || [];
  const hits = all.filter((b) => matches(b, q));
  const rows = hits.slice(0, TABLE_MAX).map((b) => h('tr', { 'data-branch': b.branch },
    h('td', {}, b.branch), h('td', {}, b.parent ? `${b.parent}@${b.ancestor_lsn}` : 'root'),
    h('td', {}, b.last_record_lsn), h('td', {}, bytes(b.logical_size_bytes)),
    h('td', {}, bytes(b.physical_size_bytes)), h('td', {}, bytes(b.branch_only_size_bytes)),
    h('td', {}, bytes(b.local_size_bytes)),
    h('td', {}, b.remote_size_bytes ? bytes(b.remote_size_bytes) : '—'),
    h('td', {}, bytes(b.billed_size_bytes)),
    h('td', {}, (b.endpoints || []).map((e) => `${e.name} ${e.state}`).join(', ') || '—'),
    h('td', { class: b.ingest_lag_bytes > 0 ? 'lagging' : '' }, lagText(b.ingest_lag_bytes))));
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' },
      h('td', { colspan: 11 }, q ? `no branch matches "${q}"` : 'no branches')));
  }
  $('#branches tbody').replaceChildren(...rows);
  $('#branch-count').textContent = `${count(Math.min(hits.length, TABLE_MAX))} shown · ` +
    `${count(hits.length)} match · ${count(all.length)} branches`;
}

function renderTree(data) {
  const svg = $('#tree');
  const subset = treeSubset(data.branches || [], searchText());
  const branches = subset.slice(0, TREE_MAX);
  const note = $('#tree-note');
  note.hidden = !(data.branches_stale || branches.length === 0 || subset.length > TREE_MAX);
  note.textContent = data.branches_stale
    ? 'pageserver down: last known tree'
    : branches.length === 0 ? 'no branches (is the pageserver up?)'
      : `the tree shows ${TREE_MAX} of ${count(subset.length)} branches: search to narrow it`;
  const rowH = 58;
  const indent = 34;
  svg.replaceChildren();
  const pos = {};
  let width = 600;
  branches.forEach((b, i) => {
    const x = 16 + b.depth * indent;
    const y = 22 + i * rowH;
    pos[b.branch] = { x, y };
    const g = s('g', { class: 'branch', 'data-branch': b.branch });
    if (b.parent && pos[b.parent]) {
      const p = pos[b.parent];
      g.append(s('path', { class: 'edge', d: `M${p.x},${p.y + 7} V${y} H${x - 7}` }));
    }
    g.append(s('circle', { class: 'node', cx: x, cy: y, r: 7 }));
    const name = s('text', { class: 'bname', x: x + 14, y: y + 5 }, b.branch);
    g.append(name);
    const from = b.parent ? `from ${b.parent}@${b.ancestor_lsn}` : 'root';
    const meta = `${from} · head ${b.last_record_lsn} · logical ${bytes(b.logical_size_bytes)}` +
      ` · physical ${bytes(b.physical_size_bytes)} · branch-only ${bytes(b.branch_only_size_bytes)}` +
      ` · ingest lag ${lagText(b.ingest_lag_bytes)} / ${msText(b.ingest_lag_ms)}`;
    g.append(s('text', { class: 'meta', x: x + 14, y: y + 23 }, meta));
    let px = x + 24 + b.branch.length * 9;
    for (const ep of b.endpoints || []) {
      const label = `${ep.name} ${ep.state === 'up' ? '●' : 'down'}`;
      const w = 14 + label.length * 6.6;
      g.append(s('rect', { class: 'pill-bg ' + (ep.state === 'up' ? 'up' : 'down'),
                           x: px, y: y - 9, width: w, height: 18, rx: 9 }));
      g.append(s('text', { class: 'pill', x: px + 7, y: y + 4 }, label));
      px += w + 6;
    }
    width = Math.max(width, x + 40 + meta.length * 7, px + 20);
    svg.append(g);
  });
  svg.setAttribute('width', width);
  svg.setAttribute('height', Math.max(40, 22 + branches.length * rowH));
}

// ---- charts --------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart(svg, samples, series) {
  const W = svg.clientWidth || 420;
  const H = svg.clientHeight || 170;
  const L = 44;
  const R = 8;
  const T = 18;
  const B = 18;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const pts = samples.slice(-CHART_POINTS);
  let max = 0;
  for (const sr of series) for (const p of pts) if (p[sr.key] > max) max = p[sr.key];
  max = niceMax(max);
  for (let i = 0; i <= 3; i++) {
    const y = T + (H - T - B) * (1 - i / 3);
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y, y2: y }));
    const v = (max * i) / 3;
    svg.append(s('text', { class: 'axis', x: L - 4, y: y + 3, 'text-anchor': 'end' },
                 v >= 100 ? v.toFixed(0) : v.toPrecision(2)));
  }
  if (pts.length) {
    const span = Math.max(1, (pts[pts.length - 1].t_ms - pts[0].t_ms) / 1000);
    svg.append(s('text', { class: 'axis', x: L, y: H - 4 }, `-${span.toFixed(0)} s`));
    svg.append(s('text', { class: 'axis', x: W - R, y: H - 4, 'text-anchor': 'end' }, 'now'));
  }
  const t0 = pts.length ? pts[0].t_ms : 0;
  const t1 = pts.length ? pts[pts.length - 1].t_ms : 1;
  const xOf = (t) => L + ((W - L - R) * (t - t0)) / Math.max(1, t1 - t0);
  const yOf = (v) => T + (H - T - B) * (1 - v / max);
  let any = false;
  series.forEach((sr, i) => {
    let d = '';
    let pen = false;
    for (const p of pts) {
      const v = p[sr.key];
      if (v === null || v === undefined) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${xOf(p.t_ms).toFixed(1)},${yOf(v).toFixed(1)} `;
      pen = true;
      any = true;
    }
    if (d) svg.append(s('path', { d, fill: 'none', stroke: sr.color, 'stroke-width': 2 }));
    const last = [...pts].reverse().find((p) => p[sr.key] !== null && p[sr.key] !== undefined);
    const lv = last ? last[sr.key] : null;
    svg.append(s('text', { class: 'legend', x: L + 4 + i * 150, y: 11, fill: sr.color },
                 `${sr.name}: ${lv === null ? '—' : Number(lv).toFixed(lv >= 100 ? 0 : 2)}`));
  });
  if (!any) {
    svg.append(s('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
                 'no activity in this window'));
  }
}

function renderCharts(hist) {
  const xs = (hist.samples || []).map((p) => Object.assign({}, p, {
    wal_kib_per_s: p.wal_bytes_per_s === null ? null : p.wal_bytes_per_s / 1024,
    ingest_kib_per_s: p.ingest_bytes_per_s === null ? null : p.ingest_bytes_per_s / 1024,
  }));
  const src = xs.length ? xs[xs.length - 1].commit_source : 'compute';
  $('#cap-commit').textContent = src === 'compute'
    ? 'Commit latency at the computes (ms)'
    : 'Commit latency: WAL flush at the safekeepers (ms)';
  drawChart($('#chart-commit'), xs, [
    { key: 'commit_p50_ms', name: 'p50', color: '#2563eb' },
    { key: 'commit_p99_ms', name: 'p99', color: '#dc2626' }]);
  drawChart($('#chart-throughput'), xs, [
    { key: 'commits_per_s', name: 'commits/s', color: '#16a34a' },
    { key: 'wal_kib_per_s', name: 'WAL KiB/s', color: '#f59e0b' }]);
  drawChart($('#chart-getpage'), xs, [
    { key: 'getpage_p50_ms', name: 'p50', color: '#2563eb' },
    { key: 'getpage_p99_ms', name: 'p99', color: '#dc2626' }]);
  drawChart($('#chart-pages'), xs, [
    { key: 'pages_per_s', name: 'pages/s', color: '#7c3aed' },
    { key: 'ingest_kib_per_s', name: 'ingest KiB/s', color: '#f59e0b' }]);
}

// ---- usage ---------------------------------------------------------------------

function renderUsage(data) {
  const body = $('#usage tbody');
  const rows = (data.usage || []).map((u) => {
    const total = (u.cache_hits || 0) + (u.cache_misses || 0);
    const ratio = u.cache_hits === null ? '—'
      : total ? ((100 * u.cache_hits) / total).toFixed(1) + ' %' : '—';
    return h('tr', { 'data-endpoint': u.endpoint },
      h('td', {}, u.branch), h('td', {}, u.endpoint),
      h('td', { class: u.state === 'up' ? '' : 'down' }, u.state),
      h('td', {}, count(u.queries)), h('td', {}, count(u.rows_read)),
      h('td', {}, count(u.rows_written)),
      h('td', {}, u.cpu_ms === null ? '—' : (u.cpu_ms / 1000).toFixed(2) + ' s'),
      h('td', {}, count(u.pages_fetched)), h('td', {}, ratio));
  });
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' },
      h('td', { colspan: 9 }, 'no compute endpoints (arbor endpoint start)')));
  }
  body.replaceChildren(...rows);
}

// ---- serverless endpoints (arbor-control's API) -----------------------------------

function renderControl(data) {
  const c = data.control;
  const body = $('#serverless tbody');
  const summary = $('#control-summary');
  if (!c) {
    summary.textContent = '(arbor-control not reachable)';
    body.replaceChildren(h('tr', { class: 'empty' },
      h('td', { colspan: 9 }, 'no control plane API (arbor start runs it)')));
    return;
  }
  const s = c.status || {};
  summary.textContent = `— ${s.endpoints_active || 0} active, wakes ${s.wakes || 0}, ` +
    `suspends ${s.suspends || 0}, crashes ${s.crashes || 0}` +
    (s.pool_ready >= 0 ? `, pool ${s.pool_ready} ready` : '') +
    (s.sk_deletes_pending > 0
      ? `, ${s.sk_deletes_pending} deleted timeline(s) still on a safekeeper` : '');
  const rows = (c.endpoints || []).map((e) => h('tr', { 'data-endpoint': e.name },
    h('td', {}, e.name), h('td', {}, e.branch || '—'), h('td', {}, e.kind),
    h('td', { class: e.state === 'active' ? '' : 'down' }, e.state),
    h('td', {}, e.suspend_timeout_s < 0 ? 'never' : `${e.suspend_timeout_s} s`),
    h('td', {}, e.compute_seconds == null ? '—' : `${Number(e.compute_seconds).toFixed(1)} s`),
    h('td', {}, count(e.queries)), h('td', {}, count(e.rows_written)),
    h('td', {}, count(e.bytes_written))));
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' },
      h('td', { colspan: 9 }, 'no serverless endpoints (POST /v1/projects/ID/endpoints)')));
  }
  body.replaceChildren(...rows);
}

// ---- webhooks of the change feed (arbor-control's API) -------------------------------

function renderWebhooks(data) {
  const c = data.control;
  const body = $('#webhooks tbody');
  const summary = $('#webhooks-summary');
  const list = (c && c.webhooks) || [];
  const dead = list.filter((w) => w.state === 'dead_letter').length;
  summary.textContent = c ? `— ${list.length} webhooks` + (dead ? `, ${dead} dead letter` : '')
                          : '(arbor-control not reachable)';
  const when = (t) => (t ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) : '—');
  const rows = list.map((w) => h('tr', { 'data-webhook': String(w.id) },
    h('td', {}, String(w.id)), h('td', {}, w.branch || '—'),
    h('td', { class: w.state === 'active' ? '' : 'down' }, w.state),
    h('td', {}, w.cursor_lsn || '—'), h('td', {}, count(w.delivered_changes)),
    h('td', { class: w.failures ? 'down' : '' }, String(w.failures)),
    h('td', {}, when(w.last_success_at)),
    h('td', {}, w.state === 'dead_letter' && w.last_error
      ? `${w.url} — ${w.last_error} (arbor webhook resume ${w.id})` : w.url)));
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' },
      h('td', { colspan: 8 }, 'no webhooks (arbor webhook add BRANCH URL)')));
  }
  body.replaceChildren(...rows);
}

// ---- arbor-proxy (its /metrics, both doors) -----------------------------------------

function renderProxy(data) {
  const p = data.proxy;
  const body = $('#proxy tbody');
  const summary = $('#proxy-summary');
  if (!p) {
    summary.textContent = '(arbor-proxy not running)';
    body.replaceChildren(h('tr', { class: 'empty' },
      h('td', { colspan: 8 }, 'no proxy (arbor start runs it)')));
    return;
  }
  const n = (k) => p[k] || 0;
  summary.textContent = `— ${count(n('active_connections'))} PostgreSQL sessions open, ` +
    `${count(n('wakes_cold_total') + n('http_wakes_cold_total'))} cold wakes, ` +
    `${count(n('auth_failures_total'))} auth failures`;
  body.replaceChildren(
    h('tr', { 'data-door': 'pg' }, h('td', {}, 'PostgreSQL'),
      h('td', {}, count(n('connections_total'))), h('td', {}, count(n('active_connections'))),
      h('td', {}, count(n('wakes_cold_total'))), h('td', {}, count(n('wakes_warm_total'))),
      h('td', {}, count(n('auth_failures_total'))),
      h('td', {}, count(n('auth_rate_limited_total') + n('connection_limited_total'))),
      h('td', {}, count(n('errors_total')))),
    h('tr', { 'data-door': 'http' }, h('td', {}, 'HTTP (SQL, Hrana)'),
      h('td', {}, count(n('http_requests_total'))), h('td', {}, '—'),
      h('td', {}, count(n('http_wakes_cold_total'))), h('td', {}, count(n('http_wakes_warm_total'))),
      h('td', {}, count(n('http_unauthorized_total'))),
      h('td', {}, count(n('http_rate_limited_total'))),
      h('td', {}, count(n('http_errors_total')))));
}

// ---- loop ----------------------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  const banner = $('#banner');
  try {
    const [data, hist] = await Promise.all([getJSON('/api/cluster'),
                                            getJSON('/api/metrics/history')]);
    banner.hidden = true;
    renderHealth(data);
    lastData = data;
    renderTree(data);
    renderBranchTable(data);
    renderCharts(hist);
    renderUsage(data);
    renderControl(data);
    renderWebhooks(data);
    renderProxy(data);
    document.body.dataset.ready = 'yes';
  } catch (e) {
    banner.hidden = false;
    banner.textContent = `dashboard server not answering (${e.message}); retrying…`;
  }
}

$('#branch-search').addEventListener('input', () => {
  if (lastData) {
    renderTree(lastData);
    renderBranchTable(lastData);
  }
});
refresh();
setInterval(refresh, REFRESH_MS);
