// obs-agent web UI: plain JavaScript, no build step, no dependencies.
// Every view keeps its filters and time range in the URL (so it can be
// shared) and, while "live" is on, re-reads the JSON API when the server
// says the store changed (Server-Sent Events on /api/events), at most every
// MIN_GAP_MS, and leaving as long as the last draw took (up to MAX_GAP_MS)
// between draws, so that a busy store (which changes all the time) and a
// slow page keep the server busy half the time at most; without the event
// stream it polls every POLL_MS.
'use strict';

const POLL_MS = 2000;
const MIN_GAP_MS = 400;
const MAX_GAP_MS = 1000;
const VIEWS = [['/', 'Overview'], ['/functions', 'Functions'], ['/errors', 'Errors'], ['/resources', 'Resources'], ['/store', 'Store']];
const RANGES = [['5m', '5 min'], ['15m', '15 min'], ['1h', '1 hour'], ['6h', '6 hours'], ['24h', '24 hours'], ['0', 'all time']];
// Parameters that follow the user from view to view.
const SHARED = ['since', 'until', 'pid'];

const params = () => new URLSearchParams(location.search);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function fmtDur(ns) {
  if (ns === null || ns === undefined) return '-';
  if (ns < 1e3) return ns + 'ns';
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + 'µs';
  if (ns < 1e9) return (ns / 1e6).toFixed(2) + 'ms';
  return (ns / 1e9).toFixed(3) + 's';
}
// fmtWindow writes a retention window as Go prints it, less the zero
// units: 6h, 1h30m, 90m45s.
function fmtWindow(ns) {
  let s = Math.round(ns / 1e9), out = '';
  for (const [u, n] of [['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= n) { out += Math.floor(s / n) + u; s %= n; }
  }
  return out || '0s';
}
const fmtNum = n => (n === null || n === undefined) ? '-' : Number(n).toLocaleString('en-US');
function fmtBytes(b) {
  if (b === null || b === undefined) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : b) + ' ' + u[i];
}
const tms = s => s ? Date.parse(s) : null; // RFC 3339 → ms (sub-ms digits dropped)
const fmtTime = s => s ? s.replace('T', ' ').replace(/\.(\d{3})\d*Z$/, '.$1Z') : '-';

// href builds a view URL carrying the shared parameters plus extra ones.
function href(path, extra) {
  const p = new URLSearchParams();
  const cur = params();
  for (const k of SHARED) if (cur.has(k)) p.set(k, cur.get(k));
  for (const [k, v] of Object.entries(extra || {})) if (v !== '' && v !== undefined && v !== null) p.set(k, v);
  const q = p.toString();
  return path + (q ? '?' + q : '');
}
const callLink = (id, text) => el('a', { href: href('/call', { id }) }, text || String(id));
const fnLink = name => el('a', { href: href('/function', { name }) }, name);
const status = s => el('span', { class: 'st-' + s }, s);

// setParam changes the URL without a reload and redraws.
function setParam(k, v) {
  const p = params();
  if (v === '' || v === null || v === undefined) p.delete(k); else p.set(k, v);
  history.replaceState(null, '', location.pathname + (p.toString() ? '?' + p : ''));
  header();
  refresh(true);
}

class APIError extends Error {}
async function api(path, extra, opts) {
  const p = new URLSearchParams();
  const cur = params();
  if (!(opts && opts.noRange)) for (const k of SHARED) if (cur.has(k)) p.set(k, cur.get(k));
  for (const [k, v] of Object.entries(extra || {})) if (v !== '' && v !== undefined && v !== null) p.set(k, v);
  let r, body;
  try {
    r = await fetch('/api/' + path + (p.toString() ? '?' + p : ''), { credentials: 'same-origin' });
    body = await r.json();
  } catch (e) {
    // The server is gone (the session of `run --ui` ended) or answered
    // something else than the API's JSON: say so; the page keeps trying.
    throw new APIError('cannot read /api/' + path + ' from the obs-agent UI server (' + e.message + '); retrying');
  }
  if (!r.ok) throw new APIError((body.param ? body.param + ': ' : '') + body.error);
  return body;
}

// The range a chart's time axis spans: since..until in ms.
function rangeMs(fallbackStart) {
  const p = params(), now = Date.now();
  const w = (v, def) => {
    if (!v || v === '0') return def;
    if (/^\d+$/.test(v)) return Number(v);
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v);
    if (m) return now - Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 36e5 }[m[2]];
    const t = Date.parse(v);
    return isNaN(t) ? def : t;
  };
  const until = w(p.get('until'), now);
  let since = w(p.has('since') ? p.get('since') : '1h', null);
  if (since === null) since = fallbackStart || until - 36e5;
  return [since, until];
}

// ---- charts on canvas ----
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

// lineChart draws series [{name, pts: [[xms, y|null]...]}] over [x0, x1];
// marks.spans shade [a, b] ranges (probe gaps), marks.ticks draw red
// lines (error times). It records its point count in data-points.
function lineChart(canvas, series, x0, x1, yfmt, marks) {
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || 600, H = canvas.clientHeight || 180;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.font = '11px system-ui, sans-serif';
  const L = 64, R = 8, T = 18, B = 20;
  let ymax = 0, n = 0;
  for (const s of series) for (const [, y] of s.pts) if (y !== null) { ymax = Math.max(ymax, y); n++; }
  canvas.dataset.points = n;
  if (ymax === 0) ymax = 1;
  if (x1 <= x0) x1 = x0 + 1;
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const Y = y => T + (1 - y / ymax) * (H - T - B);
  g.fillStyle = '#f3e8ff';
  for (const [a, b] of (marks && marks.spans) || []) g.fillRect(X(Math.max(a, x0)), T, Math.max(2, X(Math.min(b, x1)) - X(Math.max(a, x0))), H - T - B);
  g.strokeStyle = 'rgba(220,38,38,.45)';
  for (const t of (marks && marks.ticks) || []) { if (t < x0 || t > x1) continue; g.beginPath(); g.moveTo(X(t), T); g.lineTo(X(t), H - B); g.stroke(); }
  g.strokeStyle = '#e3e6eb'; g.fillStyle = '#6b7280'; g.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const y = ymax * i / 4;
    g.beginPath(); g.moveTo(L, Y(y)); g.lineTo(W - R, Y(y)); g.stroke();
    g.fillText(yfmt(y), L - 4, Y(y) + 4);
  }
  g.textAlign = 'center';
  for (let i = 0; i <= 4; i++) {
    const x = x0 + (x1 - x0) * i / 4;
    g.fillText(new Date(x).toISOString().slice(11, 19), X(x), H - 5);
  }
  g.textAlign = 'left';
  let lx = L;
  series.forEach((s, i) => {
    const c = s.color || COLORS[i % COLORS.length];
    g.strokeStyle = c; g.fillStyle = c; g.lineWidth = 1.5;
    g.beginPath();
    let pen = false;
    for (const [x, y] of s.pts) {
      if (y === null) { pen = false; continue; }
      if (pen) g.lineTo(X(x), Y(y)); else g.moveTo(X(x), Y(y));
      pen = true;
    }
    g.stroke();
    // Dots where a line can't show: few points, or a point with no neighbour.
    s.pts.forEach(([x, y], i) => {
      const lone = (i === 0 || s.pts[i - 1][1] === null) && (i === s.pts.length - 1 || s.pts[i + 1][1] === null);
      if (y !== null && (lone || s.pts.length < 60)) g.fillRect(X(x) - 2, Y(y) - 2, 4, 4);
    });
    g.fillText(s.name, lx, 12); lx += g.measureText(s.name).width + 14;
    g.lineWidth = 1;
  });
}

function chartBox(title, cls) {
  const c = el('canvas', { class: 'chart' + (cls ? ' ' + cls : '') });
  return [el('div', { class: 'chartbox' }, el('h3', {}, title), c), c];
}

// ---- tables ----
function table(cols, rows, opts) {
  opts = opts || {};
  const sort = opts.sort;
  const head = el('tr', {}, cols.map(c => {
    const th = el('th', { class: (c.num ? 'num ' : '') + (c.key && opts.onSort ? 'sortable ' : '') + (sort && sort.replace(/^-/, '') === c.key ? 'sorted' : '') }, c.title);
    if (c.key && opts.onSort) th.addEventListener('click', () => opts.onSort(sort === '-' + c.key ? c.key : '-' + c.key));
    return th;
  }));
  const body = rows.map(r => el('tr', {}, cols.map(c => el('td', { class: (c.num ? 'num' : '') + (c.cls ? ' ' + c.cls : '') }, c.cell(r)))));
  return el('table', { id: opts.id }, el('thead', {}, head), el('tbody', {}, body));
}
function sortRows(rows, sort) {
  if (!sort) return rows;
  const desc = sort.startsWith('-'), k = sort.replace(/^-/, '');
  return rows.slice().sort((a, b) => {
    const x = a[k], y = b[k];
    const c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x ?? '').localeCompare(String(y ?? ''));
    return desc ? -c : c;
  });
}

// ---- header: navigation, range, pid, live ----
function header() {
  const nav = document.getElementById('nav');
  nav.replaceChildren(...VIEWS.map(([p, name]) => el('a', { href: href(p), class: location.pathname === p ? 'active' : '' }, name)));
  const p = params();
  const since = p.has('since') ? p.get('since') : '1h';
  const sel = el('select', { id: 'range', title: 'time range', onchange: e => setParam('since', e.target.value) },
    RANGES.map(([v, t]) => el('option', { value: v, selected: v === since ? 'selected' : null }, t)));
  if (!RANGES.some(([v]) => v === since)) sel.append(el('option', { value: since, selected: 'selected' }, 'since ' + since));
  const pid = el('input', { id: 'pid', size: 7, placeholder: 'pid', value: p.get('pid') || '', onchange: e => setParam('pid', e.target.value.trim()) });
  const live = el('input', { type: 'checkbox', id: 'live', checked: p.get('live') === '0' ? null : 'checked', onchange: e => setParam('live', e.target.checked ? '' : '0') });
  const ctl = document.getElementById('controls');
  ctl.replaceChildren(sel, pid, el('label', {}, live, ' live'));
  if (p.get('until')) ctl.append(el('span', { class: 'muted' }, 'until ' + p.get('until')));
}

// ---- views ----
const views = {};

views['/'] = async main => {
  const [sessions, stats, gaps, latest] = await Promise.all([api('sessions', {}, { noRange: true }), api('stats'), api('gaps', { limit: 1000 }),
    api('calls', { order: 'newest', limit: 15 })]);
  const rows = stats.rows;
  const tot = { calls: 0, errors: 0, panics: 0, recorded: 0, lost: 0, dropped: 0 };
  for (const r of rows) for (const k in tot) tot[k] += r[k];
  const lostS = sessions.reduce((a, s) => a + s.calls_lost, 0);
  const card = (t, v, badIf) => el('div', { class: 'card' + (badIf ? ' bad' : '') }, el('div', { class: 'muted' }, t), el('div', { class: 'v' }, v));
  const top = (k, title, fmt) => {
    const r = rows.slice().sort((a, b) => b[k] - a[k]).filter(r => r[k] > 0).slice(0, 10);
    return el('div', {}, el('h2', {}, title), table([
      { title: 'function', cls: 'fn', cell: r => fnLink(r.function) },
      { title: k.replace('_ns', ''), num: true, cell: r => fmt(r[k]) }], r));
  };
  main.replaceChildren(
    el('h1', {}, 'Overview'),
    el('div', { class: 'cards', id: 'health' },
      card('calls', fmtNum(tot.calls)), card('errors', fmtNum(tot.errors), tot.errors > 0), card('panics', fmtNum(tot.panics), tot.panics > 0),
      card('recorded', fmtNum(tot.recorded)), card('lost (range)', fmtNum(tot.lost), tot.lost > 0), card('dropped', fmtNum(tot.dropped), tot.dropped > 0),
      card('lost (sessions)', fmtNum(lostS), lostS > 0), card('probe gaps', fmtNum(gaps.length), gaps.length > 0)),
    el('h2', {}, 'Sessions'),
    table([
      { title: 'id', cell: s => s.id }, { title: 'pid', num: true, cell: s => s.pid }, { title: 'binary', cls: 'fn', cell: s => s.binary },
      { title: 'go', cell: s => s.go_version }, { title: 'start', cell: s => fmtTime(s.start) }, { title: 'end', cell: s => s.end ? fmtTime(s.end) : 'running' },
      { title: 'exit', cell: s => s.exit_reason || '-' }, { title: 'recorded', num: true, cell: s => fmtNum(s.calls_recorded) },
      { title: 'lost', num: true, cell: s => fmtNum(s.calls_lost) }], sessions.slice().reverse(), { id: 'sessions' }),
    el('div', { class: 'grid' }, top('calls', 'Top functions by calls', fmtNum), top('errors', 'Top functions by errors', fmtNum), top('p99_ns', 'Top functions by p99', fmtDur)),
    el('h2', {}, 'Latest calls'),
    latestTable(latest));
};

// latestTable lists calls newest first; each row carries its call's end
// (start + duration, Unix ms) so a test can tell how fresh the page is.
function latestTable(calls) {
  if (!calls.length) return el('p', { class: 'muted', id: 'latest' }, 'No calls in this range yet.');
  const t = table([
    { title: 'start', cell: c => fmtTime(c.start) }, { title: 'function', cls: 'fn', cell: c => fnLink(c.function) },
    { title: 'duration', num: true, cell: c => fmtDur(c.duration_ns) }, { title: 'status', cell: c => status(c.status) },
    { title: 'pid', num: true, cell: c => c.pid }, { title: 'goid', num: true, cell: c => c.goid }, { title: 'call', cell: c => callLink(c.id) }], calls, { id: 'latest' });
  t.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.end = String(tns(calls[i].start) / 1e6 + calls[i].duration_ns / 1e6); tr.dataset.id = calls[i].id; });
  return t;
}

const gapSpans = (gaps, end) => gaps.map(g => [tms(g.start), g.end ? tms(g.end) : end]);

views['/functions'] = async main => {
  const p = params();
  const by = p.get('by') || 'function';
  const sort = p.get('sort') || '-calls';
  const stats = await api('stats', { by, func: p.get('func') || '' });
  const key = by;
  const filter = el('input', { id: 'glob', placeholder: 'glob, e.g. main.*', value: p.get('func') || '', size: 30, onchange: e => setParam('func', e.target.value.trim()) });
  const group = el('select', { id: 'by', onchange: e => setParam('by', e.target.value) },
    ['function', 'package', 'module'].map(v => el('option', { value: v, selected: v === by ? 'selected' : null }, v)));
  const rows = sortRows(stats.rows.map(r => Object.assign({ key: r[key] }, r)), sort);
  main.replaceChildren(
    el('h1', {}, 'Functions'),
    el('div', { class: 'toolbar' }, 'filter ', filter, ' group by ', group, el('span', { class: 'muted' }, rows.length + ' rows · exact aggregates; percentiles are log2-bucket upper bounds')),
    table([
      { title: by, key: 'key', cls: 'fn', cell: r => by === 'function' ? fnLink(r.key) : (r.key ?? '(unknown)') },
      ...[['calls', fmtNum], ['errors', fmtNum], ['panics', fmtNum], ['recorded', fmtNum], ['lost', fmtNum],
        ['p50_ns', fmtDur], ['p90_ns', fmtDur], ['p99_ns', fmtDur], ['max_ns', fmtDur], ['gaps', fmtNum]].map(([k, f]) => ({ title: k.replace('_ns', ''), key: k, num: true, cell: r => f(r[k]) }))],
    rows, { id: 'stats', sort, onSort: s => setParam('sort', s) }));
};

views['/function'] = async main => {
  const name = params().get('name');
  if (!name) throw new APIError('name: missing (open a function from the Functions table)');
  const sessions = await api('sessions', {}, { noRange: true });
  const [x0, x1] = rangeMs(sessions.length ? tms(sessions[0].start) : null);
  const [stats, series, errs] = await Promise.all([
    api('stats', { func: name }),
    api('series', { func: name, since: String(Math.floor(x0)), until: String(Math.ceil(x1)), buckets: 60 }, { noRange: true }),
    api('errors', { func: name, limit: 20 })]);
  const row = stats.rows.find(r => r.function === name) || {};
  // The slowest calls: read only the three buckets with the highest
  // maximum, and there only calls of at least half that maximum (reading
  // every call of a busy function over hours would be slow).
  const top = series.filter(s => s.calls > 0).sort((a, b) => b.max_ns - a.max_ns).slice(0, 3);
  const lists = await Promise.all(top.map(s => api('calls', { func: name, since: String(tms(s.data_start)), until: String(tms(s.data_end) + 1), min_duration: Math.floor(s.max_ns / 2) + 'ns', limit: 200 }, { noRange: true })));
  const slow = lists.flat().filter(c => c.function === name).sort((a, b) => b.duration_ns - a.duration_ns).slice(0, 20);
  const mid = s => (tms(s.start) + tms(s.end)) / 2;
  const [b1, c1] = chartBox('calls per bucket'), [b2, c2] = chartBox('errors and panics per bucket'), [b3, c3] = chartBox('latency (p50, p90, p99)');
  main.replaceChildren(
    el('h1', {}, name),
    el('div', { class: 'cards' }, ...['calls', 'errors', 'panics', 'lost'].map(k => el('div', { class: 'card' }, el('div', { class: 'muted' }, k), el('div', { class: 'v' }, fmtNum(row[k] || 0)))),
      ...['p50_ns', 'p99_ns', 'max_ns'].map(k => el('div', { class: 'card' }, el('div', { class: 'muted' }, k.replace('_ns', '')), el('div', { class: 'v' }, fmtDur(row[k] || 0))))),
    el('div', { class: 'grid' }, b1, b2, b3),
    el('h2', {}, 'Slowest calls ', el('span', { class: 'muted' }, '(in the three buckets with the highest maximum)')),
    table([{ title: 'start', cell: c => fmtTime(c.start) }, { title: 'duration', num: true, cell: c => fmtDur(c.duration_ns) },
      { title: 'status', cell: c => status(c.status) }, { title: 'goid', num: true, cell: c => c.goid }, { title: 'call', cell: c => callLink(c.id) }], slow, { id: 'slowest' }),
    el('h2', {}, 'Latest errors'),
    errorTable(errs.filter(e => e.function === name)));
  lineChart(c1, [{ name: 'calls', pts: series.map(s => [mid(s), s.calls]) }], x0, x1, fmtNum);
  lineChart(c2, [{ name: 'errors', pts: series.map(s => [mid(s), s.errors]) }, { name: 'panics', pts: series.map(s => [mid(s), s.panics]) }], x0, x1, fmtNum);
  const lat = k => series.map(s => [mid(s), s.calls ? s[k] : null]);
  lineChart(c3, [{ name: 'p50', pts: lat('p50_ns') }, { name: 'p90', pts: lat('p90_ns') }, { name: 'p99', pts: lat('p99_ns') }], x0, x1, fmtDur);
};

function errorTable(errs, id) {
  if (!errs.length) return el('p', { class: 'muted', id: id || 'errors' }, 'No errors, panics or unfinished calls in this range.');
  return table([
    { title: 'start', cell: e => fmtTime(e.start) },
    { title: 'status', cell: e => status(e.status) },
    { title: 'function / error / chain', cls: 'fn', cell: e => [fnLink(e.function),
      el('div', { class: 'errtext' }, (e.error_type ? e.error_type + ': ' : '') + (e.error ?? '') + (e.error_truncated ? '…' : '')),
      el('div', { class: 'chain' }, 'chain: ', e.chain.length ? e.chain.flatMap((c, i) => [i ? ' › ' : '', callLink(c.id, c.function)]) : '(root)', ' › ', e.function)] },
    { title: 'duration', num: true, cell: e => fmtDur(e.duration_ns) },
    { title: 'call', cell: e => callLink(e.id) }], errs, { id: id || 'errors' });
}

views['/errors'] = async main => {
  const p = params();
  const [errs, groups] = await Promise.all([
    api('errors', { func: p.get('func') || '', status: p.get('status') || '', limit: 100 }),
    api('errors/groups', { func: p.get('func') || '', status: p.get('status') || '' })]);
  const st = el('select', { id: 'status', onchange: e => setParam('status', e.target.value) },
    [['', 'all'], ['error', 'error'], ['panic', 'panic'], ['unfinished', 'unfinished']].map(([v, t]) => el('option', { value: v, selected: (p.get('status') || '') === v ? 'selected' : null }, t)));
  const filter = el('input', { id: 'glob', placeholder: 'function glob', value: p.get('func') || '', onchange: e => setParam('func', e.target.value.trim()) });
  main.replaceChildren(
    el('h1', {}, 'Errors'),
    el('div', { class: 'toolbar' }, 'status ', st, ' function ', filter),
    el('h2', {}, 'Grouped by function, type and text', el('span', { class: 'muted' }, groups.partial ? ` (of the newest ${groups.scanned} only)` : '', groups.total_groups > groups.groups.length ? ` (top ${groups.groups.length} of ${groups.total_groups})` : '')),
    table([{ title: 'count', num: true, cell: g => fmtNum(g.count) }, { title: 'status', cell: g => status(g.status) },
      { title: 'function', cls: 'fn', cell: g => fnLink(g.function) },
      { title: 'error', cls: 'errtext', cell: g => (g.error_type ? g.error_type + ': ' : '') + (g.error ?? '') },
      { title: 'first', cell: g => fmtTime(g.first) }, { title: 'last', cell: g => fmtTime(g.last) }, { title: 'latest', cell: g => callLink(g.last_id) }],
    groups.groups, { id: 'groups' }),
    el('h2', {}, 'Newest errors, panics and unfinished calls'),
    errorTable(errs));
};

// ---- a call: ancestors, tree, waterfall, icicle ----
const callState = { collapsed: new Set(), filter: params().get('filter') || '' };

views['/call'] = async main => {
  const p = params();
  const id = p.get('id');
  if (!id) throw new APIError('id: missing');
  const [call, tree] = await Promise.all([api('call/' + encodeURIComponent(id), {}, { noRange: true }), api('tree/' + encodeURIComponent(id), { limit: p.get('limit') || '' }, { noRange: true })]);
  const c = call.call;
  const calls = tree.calls;
  const byId = new Map(calls.map(x => [x.id, x]));
  const kids = new Map();
  for (const x of calls) if (x.parent_id !== null && byId.has(x.parent_id) && x.id !== c.id) {
    if (!kids.has(x.parent_id)) kids.set(x.parent_id, []);
    kids.get(x.parent_id).push(x);
  }
  const fin = el('input', { id: 'treefilter', placeholder: 'filter by function', title: 'show only calls whose function contains this, and the calls above them', value: callState.filter, oninput: e => {
    callState.filter = e.target.value;
    // Kept in the URL (without a reload) so the filtered tree can be shared.
    const q = params();
    if (callState.filter) q.set('filter', callState.filter); else q.delete('filter');
    history.replaceState(null, '', location.pathname + '?' + q);
    drawTree();
  } });
  const treeBox = el('div', { class: 'tree scroll', id: 'tree' });
  const drawTree = () => {
    const rows = [];
    const hidden = new Set();
    // A filter keeps the matching calls and the path down to them.
    let keep = null;
    if (callState.filter) {
      keep = new Set();
      for (const x of calls) if (x.function.includes(callState.filter)) {
        for (let y = x; y && !keep.has(y.id); y = y.id === c.id ? null : byId.get(y.parent_id)) keep.add(y.id);
      }
    }
    for (const x of calls) {
      const parent = byId.get(x.parent_id);
      if (x.id !== c.id && (hidden.has(x.parent_id) || callState.collapsed.has(x.parent_id) || (keep && !keep.has(x.id)))) { hidden.add(x.id); continue; }
      const n = (kids.get(x.id) || []).length;
      const spawned = parent && x.id !== c.id && parent.goid !== x.goid;
      const hl = callState.filter && x.function.includes(callState.filter);
      rows.push(el('div', { class: 'row' + (hl ? ' hl' : ''), 'data-id': x.id, 'data-depth': x.depth },
        '\u00a0'.repeat(x.depth * 2),
        el('span', { class: 'tog', onclick: () => { if (callState.collapsed.has(x.id)) callState.collapsed.delete(x.id); else callState.collapsed.add(x.id); drawTree(); } }, n ? (callState.collapsed.has(x.id) ? '▸' : '▾') : ' '),
        spawned ? el('span', { class: 'go', title: 'started on a new goroutine by its parent' }, 'go ' + x.goid) : '',
        el('a', { href: href('/call', { id: x.id }), title: 'focus on this subtree' }, x.function), ' ',
        el('span', { class: 'dim' }, fmtDur(x.duration_ns)), ' ', status(x.status),
        x.error ? el('span', { class: 'dim' }, ' ' + (x.error_type ? x.error_type + ': ' : '') + x.error) : '',
        n && callState.collapsed.has(x.id) ? el('span', { class: 'dim' }, ` (${n} children hidden)`) : ''));
    }
    treeBox.replaceChildren(...rows);
  };
  const wf = el('canvas', { class: 'chart wide', id: 'waterfall' }), ice = el('canvas', { class: 'chart wide', id: 'icicle' });
  const wtip = el('div', { class: 'tip' }), itip = el('div', { class: 'tip' });
  main.replaceChildren(
    el('h1', {}, c.function),
    el('div', { class: 'crumbs', id: 'ancestors' }, 'ancestors: ', call.ancestors.length ? call.ancestors.flatMap(a => [callLink(a.id, a.function), ' › ']) : '(root) ', el('b', {}, c.function)),
    el('div', { class: 'cards' },
      ...[['status', status(c.status)], ['duration', fmtDur(c.duration_ns)], ['start', fmtTime(c.start)], ['pid', c.pid], ['goroutine', c.goid], ['calls in tree', fmtNum(calls.length) + (tree.truncated ? '+' : '')]]
        .map(([k, v]) => el('div', { class: 'card' }, el('div', { class: 'muted' }, k), el('div', { class: 'v' }, v)))),
    c.error || c.error_type ? el('p', { class: 'errtext' }, (c.error_type ? c.error_type + ': ' : '') + (c.error ?? '')) : '',
    tree.truncated ? el('p', { class: 'muted' }, 'The tree is truncated; ', el('a', { href: href('/call', { id, limit: 20000 }) }, 'load up to 20,000 calls'), '.') : '',
    el('h2', {}, 'Call tree'), el('div', { class: 'toolbar' }, fin,
      el('button', { onclick: () => { calls.forEach(x => { if (x.depth >= 1 && kids.has(x.id)) callState.collapsed.add(x.id); }); drawTree(); } }, 'collapse all'),
      el('button', { onclick: () => { callState.collapsed.clear(); drawTree(); } }, 'expand all')),
    treeBox,
    el('h2', {}, 'Waterfall (one lane per goroutine)'), wf, wtip,
    el('h2', {}, 'Icicle graph by function (width = total time, tooltip shows self time)'), ice, itip);
  drawTree();
  waterfall(wf, wtip, calls);
  icicle(ice, itip, calls, kids, c);
};

// waterfall: a lane per goroutine, a bar per call at its start and length.
function waterfall(canvas, tip, calls) {
  const lanes = [...new Set(calls.map(c => c.goid))];
  const laneH = 16;
  canvas.style.height = Math.min(600, 24 + lanes.length * laneH * 1.0 + 10) + 'px';
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth || 800, H = canvas.clientHeight;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const g = canvas.getContext('2d'); g.scale(dpr, dpr); g.font = '11px system-ui, sans-serif';
  const t0 = Math.min(...calls.map(c => tns(c.start)));
  const t1 = Math.max(...calls.map(c => tns(c.start) + c.duration_ns));
  const L = 70, X = t => L + (t - t0) / Math.max(1, t1 - t0) * (W - L - 6);
  const laneOf = new Map(lanes.map((gid, i) => [gid, i]));
  const boxes = [];
  g.fillStyle = '#6b7280';
  lanes.forEach((gid, i) => g.fillText('g' + gid, 4, 20 + i * laneH + 11));
  for (const c of calls) {
    const x = X(tns(c.start)), w = Math.max(1, X(tns(c.start) + c.duration_ns) - x), y = 20 + laneOf.get(c.goid) * laneH + Math.min(c.depth, 4);
    g.fillStyle = c.status === 'ok' ? 'rgba(37,99,235,.35)' : 'rgba(220,38,38,.7)';
    g.fillRect(x, y, w, laneH - 6);
    boxes.push([x, y, w, laneH - 6, c]);
  }
  g.fillStyle = '#6b7280';
  g.fillText('0', L, 12); g.textAlign = 'right'; g.fillText(fmtDur(t1 - t0), W - 6, 12);
  canvas.dataset.points = boxes.length;
  hover(canvas, tip, boxes, c => `${c.function}  ${fmtDur(c.duration_ns)}  ${c.status}  goroutine ${c.goid}`);
}
// tns: RFC 3339 with nanoseconds → ns since the epoch as a Number (the
// precision lost above 2^53 ns is far below a pixel).
function tns(s) {
  const m = /\.(\d+)Z$/.exec(s);
  const ms = Date.parse(s.replace(/\.\d+Z$/, 'Z'));
  return ms * 1e6 + (m ? Number((m[1] + '000000000').slice(0, 9)) : 0);
}

// icicle: the subtree merged by function path from the root; width is
// total time, each node's self time is its total minus its same-goroutine
// children (a spawned goroutine runs alongside, not inside, its parent).
function icicle(canvas, tip, calls, kids, rootCall) {
  const mk = name => ({ name, total: 0, self: 0, count: 0, kids: new Map() });
  const root = mk(rootCall.function);
  const walk = (c, node) => {
    node.total += c.duration_ns; node.count++;
    let inner = 0;
    for (const k of kids.get(c.id) || []) {
      if (k.goid === c.goid) inner += k.duration_ns;
      if (!node.kids.has(k.function)) node.kids.set(k.function, mk(k.function));
      walk(k, node.kids.get(k.function));
    }
    node.self += Math.max(0, c.duration_ns - inner);
  };
  const rc = calls.find(c => c.id === rootCall.id) || rootCall;
  walk(rc, root);
  const rowH = 18;
  let depth = 0;
  const measure = (n, d) => { depth = Math.max(depth, d); for (const k of n.kids.values()) measure(k, d + 1); };
  measure(root, 0);
  canvas.style.height = Math.min(800, (depth + 1) * rowH + 4) + 'px';
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth || 800, H = canvas.clientHeight;
  canvas.width = W * dpr; canvas.height = H * dpr;
  const g = canvas.getContext('2d'); g.scale(dpr, dpr); g.font = '11px system-ui, sans-serif';
  const boxes = [];
  // Children may sum past the parent (spawned goroutines outlive it), so
  // each level is scaled to fit the parent's box.
  const draw = (n, x, w, d) => {
    const y = d * rowH;
    g.fillStyle = `hsl(${(hash(n.name) % 40) + 10}, 80%, ${60 + (hash(n.name) % 15)}%)`;
    g.fillRect(x, y, Math.max(1, w - 1), rowH - 1);
    if (w > 30) { g.fillStyle = '#111'; g.save(); g.beginPath(); g.rect(x, y, w - 2, rowH); g.clip(); g.fillText(n.name, x + 3, y + 13); g.restore(); }
    boxes.push([x, y, w, rowH - 1, n]);
    const sum = [...n.kids.values()].reduce((a, k) => a + k.total, 0);
    const scale = sum > n.total ? n.total / sum : 1;
    let cx = x;
    for (const k of n.kids.values()) {
      const kw = n.total ? w * k.total * scale / n.total : 0;
      if (kw >= 0.5) draw(k, cx, kw, d + 1);
      cx += kw;
    }
  };
  draw(root, 0, W, 0);
  canvas.dataset.points = boxes.length;
  hover(canvas, tip, boxes, n => `${n.name}  total ${fmtDur(n.total)}  self ${fmtDur(n.self)}  calls ${n.count}`);
}
function hash(s) { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0; return h; }
function hover(canvas, tip, boxes, text) {
  canvas.onmousemove = e => {
    const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    for (let i = boxes.length - 1; i >= 0; i--) {
      const [bx, by, bw, bh, v] = boxes[i];
      if (x >= bx && x <= bx + bw && y >= by && y <= by + bh) { tip.textContent = text(v); return; }
    }
    tip.textContent = '';
  };
}

views['/resources'] = async main => {
  const [sessions, samples, gaps, errs] = await Promise.all([api('sessions', {}, { noRange: true }), api('resources'), api('gaps', { limit: 1000 }), api('errors', { limit: 300 })]);
  const first = sessions.length ? tms(sessions[0].start) : null;
  const [x0, x1] = rangeMs(first);
  const pids = [...new Set(samples.map(s => s.pid))];
  const marks = { spans: gapSpans(gaps, x1), ticks: errs.map(e => tms(e.start)) };
  const per = (k, f) => pids.map(pid => ({ name: 'pid ' + pid, pts: samples.filter(s => s.pid === pid).map(s => [tms(s.time), f ? f(s, k) : s[k]]) }));
  // I/O counters are cumulative: chart the bytes per second between samples.
  const rate = k => pids.map(pid => {
    const ss = samples.filter(s => s.pid === pid);
    return { name: 'pid ' + pid, pts: ss.slice(1).map((s, i) => { const a = ss[i]; return [tms(s.time), (s[k] === null || a[k] === null) ? null : Math.max(0, s[k] - a[k]) / Math.max(1e-3, (tms(s.time) - tms(a.time)) / 1e3)]; }) };
  });
  const charts = [
    ['CPU %', per('cpu_percent'), v => v.toFixed(1)], ['RSS', per('rss_bytes'), fmtBytes], ['threads', per('threads'), fmtNum],
    ['open FDs', per('open_fds'), fmtNum], ['goroutines', per('goroutines'), fmtNum],
    ['read bytes/s', rate('read_bytes'), fmtBytes], ['write bytes/s', rate('write_bytes'), fmtBytes]];
  const boxes = charts.map(([t]) => chartBox(t));
  main.replaceChildren(el('h1', {}, 'Resources'),
    el('p', { class: 'muted' }, `${samples.length} samples of ${pids.length} process(es); shaded: probe gaps; red lines: error times (newest 300)`),
    el('div', { class: 'grid', id: 'charts' }, boxes.map(b => b[0])));
  charts.forEach(([, s, f], i) => lineChart(boxes[i][1], s, x0, x1, f, marks));
};

views['/store'] = async main => {
  const [parts, ret, sessions, settings] = await Promise.all([api('partitions', {}, { noRange: true }), api('retention', {}, { noRange: true }),
    api('sessions', {}, { noRange: true }), api('retention/settings', {}, { noRange: true })]);
  const rows = parts.reduce((a, p) => a + p.rows, 0), bytes = parts.reduce((a, p) => a + (p.bytes || 0), 0);
  const hours = [...new Set(parts.map(p => p.start))].sort();
  // The window the store is kept to: the shortest of the running agents'
  // (each drops what is older than its own), else the last agent's.
  const window = settings.length ? fmtWindow(Math.min(...settings.map(s => s.retention_ns))) + (settings.some(s => s.running) ? '' : ' (last agent, ended)') : 'unknown';
  main.replaceChildren(el('h1', {}, 'Store'),
    el('div', { class: 'cards' }, ...[['partitions', parts.length], ['rows', fmtNum(rows)], ['bytes', fmtBytes(bytes)], ['sessions', sessions.length],
      ['retention', window], ['oldest hour kept', hours.length ? fmtTime(hours[0]) : '-'], ['newest hour', hours.length ? fmtTime(hours[hours.length - 1]) : '-']]
      .map(([k, v]) => el('div', { class: 'card' }, el('div', { class: 'muted' }, k), el('div', { class: 'v', id: k === 'retention' ? 'retention-window' : undefined }, v)))),
    el('h2', {}, 'Retention configured'),
    settings.length ? table([{ title: 'session', cell: s => s.session }, { title: 'state', cell: s => s.running ? 'running' : 'ended' },
      { title: 'retention', cell: s => fmtWindow(s.retention_ns) }, { title: 'archive', cls: 'fn', cell: s => s.archive || 'none (hours are dropped)' }], settings, { id: 'retention-settings' })
      : el('p', { class: 'muted' }, 'No session recorded its retention (written by an agent older than schema 8).'),
    el('h2', {}, 'Partitions'),
    table([{ title: 'partition', cls: 'fn', cell: p => p.partition }, { title: 'kind', cell: p => p.kind }, { title: 'start', cell: p => p.start },
      { title: 'end', cell: p => p.end }, { title: 'rows', num: true, cell: p => fmtNum(p.rows) }, { title: 'bytes', num: true, cell: p => fmtBytes(p.bytes) }], parts, { id: 'partitions' }),
    el('h2', {}, 'Retention and archive log'),
    ret.length ? table([{ title: 'hour', cell: r => r.hour }, { title: 'state', cell: r => r.state }, { title: 'archive', cls: 'fn', cell: r => r.archive || '-' },
      { title: 'updated', cell: r => r.updated }], ret.slice().reverse(), { id: 'retention' }) : el('p', { class: 'muted' }, 'No hour has been dropped or archived yet.'));
};

// ---- refresh loop ----
let busy = false, timer = null, last = 0, drawMs = 0, pending = false, events = null;
async function refresh(force) {
  clearTimeout(timer);
  if (busy && !force) { pending = true; return; }
  busy = true;
  pending = false;
  const main = document.getElementById('main');
  const st = document.getElementById('status');
  const view = views[location.pathname];
  // Keep the scroll position across redraws.
  const y = window.scrollY;
  try {
    if (!view) throw new APIError('no view ' + location.pathname);
    const t = performance.now();
    await view(main);
    window.scrollTo(0, y);
    last = Date.now();
    drawMs = performance.now() - t;
    st.textContent = `updated ${new Date(last).toISOString().slice(11, 19)} UTC · ${(performance.now() - t).toFixed(0)} ms`;
  } catch (e) {
    if (!(e instanceof APIError)) throw e;
    main.replaceChildren(el('div', { class: 'errbox', id: 'error' }, String(e.message)));
  } finally {
    busy = false;
    // Counts complete draws (tests wait for it).
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    schedule();
  }
}

// schedule plans the next redraw: soon when a change arrived meanwhile,
// else a poll only while the event stream is down.
function schedule() {
  clearTimeout(timer);
  if (!listen()) return;
  if (pending) timer = setTimeout(tick, Math.max(0, last + Math.min(MAX_GAP_MS, Math.max(MIN_GAP_MS, drawMs)) - Date.now()));
  else if (!events || events.readyState !== EventSource.OPEN) timer = setTimeout(tick, POLL_MS);
}

// listen keeps the event stream open while live is on.
function listen() {
  const on = params().get('live') !== '0';
  if (!on && events) { events.close(); events = null; }
  if (on && !events) {
    events = new EventSource('/api/events');
    events.addEventListener('change', () => {
      pending = true;
      if (!busy) schedule();
    });
    // The browser reconnects by itself; meanwhile schedule polls.
    events.onerror = () => { if (!busy) schedule(); };
    events.onopen = () => { if (!busy) schedule(); };
  }
  return on;
}

// tick redraws unless the tab is hidden or the user is typing or selecting
// (a redraw would lose the half-typed filter or the selection).
function tick() {
  const a = document.activeElement;
  const editing = a && (a.tagName === 'INPUT' || a.tagName === 'SELECT') && a.type !== 'checkbox';
  if (document.hidden || editing || String(window.getSelection()).length > 0) { timer = setTimeout(tick, POLL_MS); return; }
  refresh();
}

header();
refresh(true);
