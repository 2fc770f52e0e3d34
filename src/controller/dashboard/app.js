// The ffcluster dashboard: polls the status document every second and draws
// nodes, jobs and the chunk timeline of split jobs. Everything from the
// controller goes into the page as text (textContent), never as markup: job
// arguments come from whoever submitted them.
'use strict';

(() => {
  const KEY = 'ffcluster.token';
  const POLL_MS = 1000;
  // Distinct on light backgrounds; a node keeps its colour while the page is open.
  const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f', '#ff9da7', '#e15759', '#bab0ac'];
  const colours = new Map();
  let selected = null; // job id whose timeline is shown; null: the newest split job
  let timer = null;
  let detailsOpen = true; // the chunk table, kept as the user left it across redraws
  let logJob = null; // job id whose log is shown
  let logState = null; // its state when last fetched: a finished job's log is fetched once

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'style') Object.assign(e.style, v);
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else if (k === 'title') e.title = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function colour(node) {
    if (!colours.has(node)) colours.set(node, PALETTE[colours.size % PALETTE.length]);
    return colours.get(node);
  }

  // Token: from the fragment (never sent to the server), else from this tab's storage.
  function takeToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY);
  }

  function showLogin(message) {
    clearTimeout(timer);
    $('main').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    setLive('off', 'no token');
  }

  function setLive(kind, text) {
    const live = $('live');
    live.className = 'live ' + kind;
    live.textContent = text;
  }

  async function poll() {
    clearTimeout(timer);
    const token = sessionStorage.getItem(KEY);
    if (!token) return showLogin('');
    try {
      const r = await fetch('api/v1/status', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      if (r.status === 401) {
        sessionStorage.removeItem(KEY);
        return showLogin('The controller refused that token.');
      }
      if (!r.ok) throw new Error('the controller answered ' + r.status);
      const doc = await r.json();
      $('login').hidden = true;
      $('main').hidden = false;
      $('forget').hidden = false;
      render(doc);
      refreshLog(doc);
      setLive('on', 'live · ' + new Date(doc.now_unix_ms || Date.now()).toLocaleTimeString());
    } catch (e) {
      setLive('err', 'disconnected: ' + e.message);
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // ---- formatting

  function secs(ms) {
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(Math.floor(s % 60)).padStart(2, '0') + 's';
    return Math.floor(s / 3600) + 'h' + String(Math.floor((s % 3600) / 60)).padStart(2, '0') + 'm';
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + ' ' + units[i];
  }

  function clock(unixMs) {
    return unixMs ? new Date(unixMs).toLocaleTimeString() : '–';
  }

  function media(t) {
    return t.toFixed(t < 100 ? 2 : 1) + ' s';
  }

  function badge(state) {
    return el('span', { class: 'badge ' + state }, state);
  }

  // ---- rendering

  function render(doc) {
    $('controller').textContent = 'controller ' + doc.version + ' · protocol ' + doc.protocol + ' · up ' + secs(doc.uptime_ms);
    // Colours in a stable order: connected nodes first, then names only chunks remember.
    [...doc.nodes.map((n) => n.name).sort(), ...doc.jobs.flatMap((j) => (j.chunks || []).map((c) => c.node)).sort()].forEach(colour);
    renderNodes(doc);
    renderJobs(doc);
    renderTimeline(doc);
    document.body.dataset.updated = String(doc.now_unix_ms);
  }

  function renderNodes(doc) {
    $('node-count').textContent = doc.nodes.length === 1 ? '1 connected' : doc.nodes.length + ' connected';
    const cards = doc.nodes.map((n) => {
      const caps = n.caps || {};
      const hw = (caps.hwaccels || []).filter((h) => h);
      const version = (n.ffmpeg_version || '').replace(/^ffmpeg version /, '').split(/\s/)[0] || '?';
      const load = n.slots > 0 ? n.running / n.slots : 1;
      return el('article', { class: 'card node ' + n.state, 'data-node': n.name },
        el('div', { class: 'card-head' },
          el('span', { class: 'swatch', style: { background: colour(n.name) } }),
          el('h3', {}, n.name),
          badge(n.state)),
        el('div', { class: 'load', title: n.running + ' of ' + n.slots + ' slots in use' },
          el('div', { class: 'load-fill', style: { width: Math.min(100, load * 100) + '%' } })),
        el('dl', {},
          el('dt', {}, 'load'), el('dd', {}, n.running + '/' + n.slots + ' running'),
          el('dt', {}, 'speed'), el('dd', {}, Math.round(n.speed) + ' fps'),
          el('dt', {}, 'cpus'), el('dd', {}, n.cpus),
          el('dt', {}, 'ffmpeg'), el('dd', {}, version),
          el('dt', {}, 'caps'), el('dd', {}, (caps.encoders || []).length + ' encoders, ' + (caps.filters || []).length + ' filters'),
          el('dt', {}, 'hwaccels'), el('dd', {}, hw.length ? hw.join(', ') : 'none'),
          el('dt', {}, 'health'), el('dd', {}, 'seen ' + secs(n.last_seen_ms_ago) + ' ago, connected ' + secs(n.connected_ms)),
          el('dt', {}, 'address'), el('dd', {}, n.address)));
    });
    $('nodes').replaceChildren(...(cards.length ? cards : [el('p', { class: 'muted' }, 'No nodes connected.')]));
  }

  function where(j) {
    if (j.mode !== 'split') return j.node || '–';
    const done = j.chunks_done || 0;
    const planned = j.chunks_planned || 0;
    const on = (j.nodes || []).length ? ' on ' + j.nodes.join(', ') : '';
    return el('span', { class: 'where' },
      el('span', { class: 'mini' }, el('span', { style: { width: (planned ? (100 * done) / planned : 0) + '%' } })),
      ' ' + done + '/' + planned + ' chunks' + on + (j.reissued ? ' · ' + j.reissued + ' re-issued' : ''));
  }

  // Why a job ran as it did beyond the shim's offload reason: [what, {code, detail}].
  function reasons(j) {
    return [['not split', j.not_split], ['resumed', j.resumed], ['fell back', j.fallback]].filter(([, w]) => w);
  }

  // The most telling reason code (the shim's offload reason when nothing else
  // happened), with the details on hover.
  function reasonCell(j) {
    const whys = reasons(j);
    if (!whys.length) return el('td', { class: 'reason' }, el('code', {}, j.reason));
    return el('td', { class: 'reason', title: 'offload reason: ' + j.reason },
      ...whys.map(([what, w]) => el('code', { class: 'why', 'data-why': w.code, title: what + ': ' + w.detail }, w.code)));
  }

  function renderJobs(doc) {
    const running = doc.jobs.filter((j) => j.state === 'running').length;
    $('job-count').textContent = running + ' running, ' + (doc.jobs.length - running) + ' recent';
    const rows = doc.jobs.map((j) => {
      const exit = j.exit_code !== null && j.exit_code !== undefined ? String(j.exit_code) : j.error ? '!' : '–';
      const args = j.args.length > 140 ? j.args.slice(0, 139) + '…' : j.args;
      const tr = el('tr', { class: 'job ' + j.state, 'data-job': j.id, title: j.error || j.reason },
        el('td', {}, '#' + j.id),
        el('td', {}, j.mode),
        el('td', {}, badge(j.state)),
        el('td', {}, where(j)),
        el('td', {}, clock(j.started_unix_ms)),
        el('td', {}, secs(j.duration_ms)),
        el('td', {}, exit),
        reasonCell(j),
        el('td', { class: 'args', title: j.args }, args, j.error ? el('span', { class: 'error' }, ' ' + j.error) : null,
          ...reasons(j).map(([what, w]) => el('span', { class: 'why-detail' }, ' ' + what + ': ' + w.detail))),
        el('td', {}, logButton(j)));
      if (j.mode === 'split') {
        tr.classList.add('clickable');
        tr.addEventListener('click', () => { selected = j.id; poll(); });
      }
      return tr;
    });
    $('jobs').tBodies[0].replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 10, class: 'muted' }, 'No jobs yet.'))]));
  }

  // ---- the job log (GET api/v1/jobs/{id}/log, text that reads like ffmpeg's)

  function logButton(j) {
    const b = el('button', { type: 'button', class: 'log-button', 'data-log': j.id, title: 'Show the log of job #' + j.id }, 'log');
    b.addEventListener('click', (e) => {
      e.stopPropagation(); // the row's own click selects the timeline
      logJob = j.id;
      logState = null;
      $('log').textContent = 'loading…';
      poll();
    });
    return b;
  }

  async function refreshLog(doc) {
    const section = $('log-section');
    if (logJob === null) { section.hidden = true; return; }
    section.hidden = false;
    const job = doc.jobs.find((j) => j.id === logJob);
    const state = job ? job.state : 'gone';
    // A finished log no longer changes: fetch it once more after the job ends, then stop.
    if (logState !== null && logState !== 'running' && state !== 'running') return;
    const token = sessionStorage.getItem(KEY);
    const pre = $('log');
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    try {
      const r = await fetch('api/v1/jobs/' + logJob + '/log', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      const text = await r.text();
      pre.textContent = text;
      logState = r.ok ? r.headers.get('x-ffcluster-job-state') || state : 'gone';
      pre.dataset.job = String(logJob);
      pre.dataset.state = logState;
    } catch (e) {
      pre.textContent = 'cannot fetch the log: ' + e.message;
    }
    $('log-title').textContent = '· job #' + logJob + ' · ' + (logState || state);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function niceStep(span, ticks) {
    const raw = span / ticks;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  // Ticks over [0, span], labelled from `origin` (media time does not start at 0 after a seek).
  function axis(span, unit, origin = 0) {
    const step = niceStep(span, 8);
    const first = Math.ceil(origin / step) * step - origin;
    const ticks = [];
    for (let t = first; t <= span + 1e-9; t += step) {
      const at = (100 * t) / span;
      ticks.push(el('span', { class: 'tick' + (at > 96 ? ' end' : at < 2 ? ' start' : ''), style: { left: at + '%' } },
        (+(t + origin).toFixed(3)) + unit));
    }
    return el('div', { class: 'axis' }, ticks);
  }

  function renderTimeline(doc) {
    const splits = doc.jobs.filter((j) => j.mode === 'split' && (j.chunks || []).length);
    const job = splits.find((j) => j.id === selected) || splits[0];
    for (const tr of $('jobs').tBodies[0].rows) tr.classList.toggle('selected', job !== undefined && tr.dataset.job === String(job.id));
    if (!job) {
      $('timeline-title').textContent = '';
      $('timeline').replaceChildren(el('p', { class: 'muted' }, 'No split jobs yet. For each split job this shows which node encoded which chunk, when, and how fast.'));
      return;
    }
    const chunks = job.chunks;
    const t0 = job.started_unix_ms;
    const end = job.state === 'running' ? doc.now_unix_ms : t0 + job.duration_ms;
    const last = Math.max(end, ...chunks.map((c) => c.finished_unix_ms || doc.now_unix_ms));
    const span = Math.max(1, last - t0);
    const done = chunks.filter((c) => c.state === 'done');
    const first = done.length ? Math.min(...done.map((c) => c.finished_unix_ms)) - t0 : null;
    const mediaStart = Math.min(...chunks.map((c) => c.start));
    const mediaEnd = Math.max(...chunks.map((c) => c.end));
    $('timeline-title').textContent = '· job #' + job.id + ' · ' + job.state + ' · ' + (job.chunks_done || 0) + '/' + (job.chunks_planned || 0) +
      ' chunks · ' + media(mediaEnd - mediaStart) + ' of media in ' + secs(job.duration_ms) +
      (first !== null ? ' · first chunk after ' + secs(first) : '');

    const lanes = [...new Set(chunks.map((c) => c.node))].sort();
    const wall = lanes.map((node) => {
      const bars = chunks.filter((c) => c.node === node).map((c) => {
        const from = c.started_unix_ms - t0;
        const to = (c.finished_unix_ms || doc.now_unix_ms) - t0;
        const secsWall = Math.max(0.001, (to - from) / 1000);
        const speed = (c.end - c.start) / secsWall;
        const tip = 'chunk ' + c.chunk + ' · ' + media(c.start) + '–' + media(c.end) + ' · ' + node + ' · ' + c.state +
          ' · ' + secsWall.toFixed(2) + ' s wall · ' + speed.toFixed(1) + '× real time · ' + bytes(c.bytes) + (c.error ? ' · ' + c.error : '');
        return el('div', {
          class: 'bar ' + c.state + (c.reissue ? ' reissue' : ''),
          'data-chunk': c.chunk, 'data-node': node, 'data-state': c.state, title: tip,
          style: { left: (100 * from) / span + '%', width: (100 * Math.max(0, to - from)) / span + '%', background: colour(node) },
        }, el('span', { class: 'bar-label' }, '#' + c.chunk + ' ' + node));
      });
      return el('div', { class: 'lane' },
        el('div', { class: 'lane-name' }, el('span', { class: 'swatch', style: { background: colour(node) } }), node),
        el('div', { class: 'lane-track' }, bars));
    });

    // Media position: the attempt that counts for each chunk (the winner, else the newest).
    const byChunk = new Map();
    for (const c of chunks) {
      const had = byChunk.get(c.chunk);
      if (!had || c.state === 'done' || (had.state !== 'done' && c.started_unix_ms >= had.started_unix_ms)) byChunk.set(c.chunk, c);
    }
    const mspan = Math.max(1e-6, mediaEnd - mediaStart);
    const mediaBars = [...byChunk.values()].map((c) => el('div', {
      class: 'bar ' + c.state, 'data-chunk': c.chunk, 'data-node': c.node, 'data-state': c.state,
      title: 'chunk ' + c.chunk + ' · ' + media(c.start) + '–' + media(c.end) + ' · ' + c.node + ' · ' + c.state,
      style: { left: (100 * (c.start - mediaStart)) / mspan + '%', width: (100 * (c.end - c.start)) / mspan + '%', background: colour(c.node) },
    }, el('span', { class: 'bar-label' }, '#' + c.chunk)));

    const rows = chunks.map((c) => {
      const to = c.finished_unix_ms || doc.now_unix_ms;
      const wallS = Math.max(0.001, (to - c.started_unix_ms) / 1000);
      return el('tr', { class: 'chunk ' + c.state, 'data-chunk': c.chunk, 'data-node': c.node },
        el('td', {}, '#' + c.chunk + (c.reissue ? ' (re-issue)' : '')),
        el('td', {}, media(c.start) + ' – ' + media(c.end)),
        el('td', {}, el('span', { class: 'swatch', style: { background: colour(c.node) } }), c.node),
        el('td', {}, '+' + secs(c.started_unix_ms - t0)),
        el('td', {}, c.finished_unix_ms ? '+' + secs(c.finished_unix_ms - t0) : 'running'),
        el('td', {}, wallS.toFixed(2) + ' s'),
        el('td', {}, ((c.end - c.start) / wallS).toFixed(1) + '×'),
        el('td', {}, bytes(c.bytes)),
        el('td', {}, badge(c.state), c.error ? el('span', { class: 'error' }, ' ' + c.error) : null));
    });

    $('timeline').replaceChildren(
      el('div', { class: 'gantt', 'data-job': job.id },
        el('div', { class: 'gantt-caption' }, 'Wall clock since the job started: one lane per node, a bar per chunk attempt'),
        wall,
        el('div', { class: 'lane axis-lane' }, el('div', { class: 'lane-name' }), el('div', { class: 'lane-track' }, axis(span / 1000, ' s')))),
      el('div', { class: 'gantt media' },
        el('div', { class: 'gantt-caption' }, 'Media timeline: which node encoded each part of the input'),
        el('div', { class: 'lane' }, el('div', { class: 'lane-name' }, 'media'), el('div', { class: 'lane-track' }, mediaBars)),
        el('div', { class: 'lane axis-lane' }, el('div', { class: 'lane-name' }),
          el('div', { class: 'lane-track' }, axis(mspan, ' s', mediaStart))),
      ),
      el('details', { class: 'chunk-table' },
        el('summary', {}, chunks.length + ' chunk attempts'),
        el('table', {},
          el('thead', {}, el('tr', {}, ['Chunk', 'Media', 'Node', 'Started', 'Ended', 'Wall', 'Speed', 'Bytes', 'State'].map((h) => el('th', {}, h)))),
          el('tbody', {}, rows))));
    const det = $('timeline').querySelector('details');
    det.open = detailsOpen;
    det.addEventListener('toggle', () => { detailsOpen = det.open; });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, $('token').value.trim());
      $('token').value = '';
      poll();
    });
    $('log-close').addEventListener('click', () => {
      logJob = null;
      logState = null;
      $('log-section').hidden = true;
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(KEY);
      showLogin('');
    });
    if (takeToken()) poll();
    else showLogin('');
  });
})();
