// vmlineage forensics view. Vanilla JS, no network assets: everything here is
// served by the vmlineage binary. The tree is laid out here (a simple tidy
// tree, left to right) and drawn as one SVG string, so 10,000 VMs cost one
// innerHTML assignment; events are delegated to the container, never bound
// per node.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const W = 188, H = 42, COL = 240, ROW = 52, PAD = 24; // node box and grid, px

  const S = {
    pool: '', nodes: [], index: new Map(), els: [], selected: -1,
    at: null, // null: now (live); else ms
    first: 0, last: 0, zoom: 1, width: 0, height: 0,
    atStates: null, // Map uuid -> power state at S.at
    stats: {},
  };
  window.vmlineage = S; // for investigators' consoles and the browser test

  // ---------- API ----------
  let token = sessionStorage.getItem('vmlineage-token') || '';
  {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) { // a link with #token=… (never sent to the server); keep it out of history
      token = decodeURIComponent(m[1]);
      sessionStorage.setItem('vmlineage-token', token);
      history.replaceState(null, '', location.pathname + location.search);
    }
  }
  async function api(path) {
    for (;;) {
      const r = await fetch(path, { headers: token ? { Authorization: 'Bearer ' + token } : {}, cache: 'no-store' });
      if (r.status === 401) { token = await askToken(); continue; }
      if (!r.ok) {
        let msg = r.status + ' ' + r.statusText;
        try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
        throw new Error(msg);
      }
      return r.json();
    }
  }
  function askToken() {
    return new Promise((resolve) => {
      const d = $('token-dialog'), f = $('token-form');
      f.onsubmit = () => {
        const t = $('token-input').value.trim();
        sessionStorage.setItem('vmlineage-token', t);
        resolve(t);
      };
      if (!d.open) d.showModal();
    });
  }

  // ---------- helpers ----------
  const esc = (s) => String(s == null ? '' : s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const short = (u) => (u || '').slice(0, 8);
  // Class names built from store data keep to [a-z0-9_-]: a VM's kind or
  // state must not be able to break out of the attribute.
  const ident = (s, def) => String(s || '').toLowerCase().replace(/[^a-z0-9_-]/g, '') || def;
  const psClass = (ps) => 'ps-' + ident(ps, 'unknown');
  const trunc = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function fmt(ms) {
    if (ms == null || isNaN(ms)) return '';
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  const fmtISO = (iso) => (iso ? fmt(Date.parse(iso)) : '');
  const localInput = (ms) => fmt(ms).replace(' ', 'T');
  function dur(a, b) {
    if (!a || !b) return '';
    const s = (Date.parse(b) - Date.parse(a)) / 1000;
    if (s < 1) return Math.round(s * 1000) + ' ms';
    if (s < 120) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }
  function status(msg, isErr) {
    const el = $('status');
    el.textContent = msg;
    el.classList.toggle('error', !!isErr);
  }
  function markLabel(m) {
    if (!m) return '';
    return m.alerted ? 'alerted' : (m.suspect ? 'suspect' : '');
  }

  // ---------- layout ----------
  // Tidy tree, left to right: depth gives the column; leaves take successive
  // rows and a parent sits midway between its first and last child. O(n),
  // iterative (a 10,000-deep clone chain must not blow the stack), and a
  // corrupt parent cycle is broken by the visited set.
  function layout(nodes) {
    const idx = new Map();
    nodes.forEach((n, i) => idx.set(n.uuid, i));
    const kids = nodes.map(() => []);
    const roots = [];
    nodes.forEach((n, i) => {
      const p = n.parent ? idx.get(n.parent) : undefined;
      if (p === undefined || p === i) roots.push(i); else kids[p].push(i);
    });
    const x = new Float64Array(nodes.length), y = new Float64Array(nodes.length);
    const seen = new Uint8Array(nodes.length);
    let row = 0, maxDepth = 0;
    const place = (root) => {
      const stack = [[root, 0, 0]]; // node, depth, next child
      seen[root] = 1;
      while (stack.length) {
        const top = stack[stack.length - 1];
        const [i, d] = top;
        const ks = kids[i];
        if (top[2] < ks.length) {
          const k = ks[top[2]++];
          if (!seen[k]) { seen[k] = 1; stack.push([k, d + 1, 0]); }
          continue;
        }
        stack.pop();
        x[i] = d; maxDepth = Math.max(maxDepth, d);
        const placed = ks.filter((k) => y[k] >= 0 && seen[k] === 2);
        if (placed.length === 0) y[i] = row++;
        else y[i] = (y[placed[0]] + y[placed[placed.length - 1]]) / 2;
        seen[i] = 2;
      }
    };
    y.fill(-1);
    for (const r of roots) { place(r); row += 0.35; } // a little air between families
    nodes.forEach((n, i) => { if (!seen[i]) { place(i); row += 0.35; } }); // cycles
    return { x, y, rows: Math.max(row, 1), cols: maxDepth + 1, kids };
  }

  // ---------- drawing ----------
  // The SVG has the size of the whole tree, but only the nodes near the
  // viewport (and the edges crossing it) are in the DOM: the layer is
  // rebuilt with one innerHTML when the view leaves what was drawn, so the
  // cost of a draw is what is on screen, whether the pool holds 6 VMs or
  // 100,000. Look (state at the chosen time, marks, selection) is computed
  // while building the string, never by walking the DOM.
  function look(i) {
    const n = S.nodes[i];
    const past = S.at != null;
    const ps = past && S.atStates && S.atStates.has(n.uuid) ? S.atStates.get(n.uuid) : n.power_state;
    const dead = n.destroyed && (!past || S.at >= S.deadAt[i]);
    const host = past && S.atHosts ? S.atHosts.get(n.uuid) : n.host;
    const absent = past && S.exists != null && !S.exists.has(n.uuid);
    let c = 'node k-' + ident(n.kind, 'vm') + ' ' + psClass(ps);
    if (dead) c += ' destroyed';
    const m = markLabel(n.marks);
    if (m) c += ' ' + m;
    if (n.via) c += ' via-' + ident(n.via, 'other');
    if (absent) c += ' absent';
    if (i === S.selected) c += ' selected';
    let sub = dead ? 'destroyed' : String(ps || 'unknown').toLowerCase();
    if (!dead && host && ps === 'Running') sub += ' on ' + host;
    return { c, sub, m };
  }

  function nodeMarkup(i, parts) {
    const n = S.nodes[i], L = S.layout;
    const px = PAD + L.x[i] * COL, py = PAD + L.y[i] * ROW;
    const lk = look(i);
    parts.push(`<g class="${lk.c}" id="vm-${esc(n.uuid)}" data-i="${i}" transform="translate(${px},${py})">`);
    const p = S.parentIdx[i];
    if (p >= 0) { // incoming edge, in this node's group so it hides with it
      const gap = COL - W;
      parts.push(`<path class="edge" d="M${-gap},${PAD + L.y[p] * ROW - py + H / 2}H${-gap / 2}V${H / 2}H0"/>`);
    }
    const rx = n.kind === 'snapshot' ? 18 : n.kind === 'template' ? 0 : 6;
    if (lk.m) parts.push(`<rect class="halo" x="-4" y="-4" width="${W + 8}" height="${H + 8}" rx="${rx + 3}"/>`);
    parts.push(`<rect class="box" width="${W}" height="${H}" rx="${rx}"/>`);
    parts.push(`<text class="name" x="12" y="17">${esc(trunc(n.name || '(no name)', 21))}</text>`);
    parts.push(`<text class="sub" x="12" y="33"><tspan class="u">${esc(short(n.uuid))}</tspan> · <tspan class="st">${esc(lk.sub)}</tspan></text>`);
    if (n.kind === 'template' || n.kind === 'snapshot') parts.push(`<text class="tag" x="${W - 8}" y="12" text-anchor="end">${n.kind.toUpperCase()}</text>`);
    if (lk.m) parts.push(`<g class="markdot"><circle r="8"/><text y="4">${lk.m === 'alerted' ? '!' : '?'}</text></g>`);
    parts.push('</g>');
  }

  function render() {
    const t0 = performance.now();
    const L = layout(S.nodes);
    S.layout = L;
    const N = S.nodes.length;
    // Per node: the vertical and horizontal extent of its box and incoming
    // edge, in tree coordinates, for the window test.
    S.parentIdx = new Int32Array(N).fill(-1);
    S.top = new Float64Array(N); S.bot = new Float64Array(N); S.left = new Float64Array(N);
    S.deadAt = new Float64Array(N);
    for (let i = 0; i < N; i++) {
      const n = S.nodes[i];
      const p = n.parent ? S.index.get(n.parent) : undefined;
      const y = PAD + L.y[i] * ROW;
      let top = y, bot = y + H;
      if (p !== undefined && p !== i && L.x[p] === L.x[i] - 1) {
        S.parentIdx[i] = p;
        const py = PAD + L.y[p] * ROW;
        top = Math.min(top, py); bot = Math.max(bot, py + H);
      }
      S.top[i] = top; S.bot[i] = bot; S.left[i] = PAD + L.x[i] * COL - (COL - W);
      S.deadAt[i] = n.destroyed ? Date.parse(n.destroyed_at) : Infinity;
    }
    const t1 = performance.now();
    S.width = PAD * 2 + (L.cols - 1) * COL + W + 30;
    S.height = PAD * 2 + (L.rows - 1) * ROW + H;
    const tree = $('tree');
    tree.innerHTML = `<svg id="tree-svg" xmlns="http://www.w3.org/2000/svg" class="${$('show-absent').checked ? 'show-absent' : ''}" width="${S.width * S.zoom}" height="${S.height * S.zoom}" viewBox="0 0 ${S.width} ${S.height}">` +
      '<defs><pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="7" height="7" fill="#f7f7f8"/><line x1="0" y1="0" x2="0" y2="7" stroke="#e2e4e8" stroke-width="3"/></pattern></defs><g id="layer"></g></svg>';
    S.svg = tree.firstChild;
    S.layer = S.svg.lastChild;
    S.drawn = null;
    drawWindow(true);
    const t2 = performance.now();
    S.stats.layoutMs = t1 - t0; S.stats.domMs = t2 - t1;
    $('tree-count').textContent = `${N.toLocaleString('en')} VMs · ${L.cols} generation${L.cols === 1 ? '' : 's'}`;
  }

  // drawWindow (re)builds the layer for the viewport plus one screen of
  // margin on each side; unless forced it does nothing while the viewport is
  // still inside what was drawn.
  function drawWindow(force) {
    if (!S.layer) return;
    const tree = $('tree'), z = S.zoom;
    const vt = tree.scrollTop / z, vb = (tree.scrollTop + tree.clientHeight) / z;
    const vl = tree.scrollLeft / z, vr = (tree.scrollLeft + tree.clientWidth) / z;
    const d = S.drawn;
    if (!force && d && vt >= d.t && vb <= d.b && vl >= d.l && vr <= d.r) return;
    const mh = (vb - vt) || 800, mw = (vr - vl) || 1200;
    const w = { t: vt - mh, b: vb + mh, l: vl - mw, r: vr + mw };
    const parts = [];
    let count = 0;
    for (let i = 0; i < S.nodes.length; i++) {
      if (S.bot[i] < w.t || S.top[i] > w.b || S.left[i] > w.r || S.left[i] + COL < w.l) continue;
      nodeMarkup(i, parts);
      count++;
    }
    S.layer.innerHTML = parts.join('');
    S.drawn = w;
    S.stats.drawn = count;
  }

  // redraw keeps the view and refreshes every drawn node's look.
  const applyTime = () => drawWindow(true);

  function setZoom(z) {
    const tree = $('tree');
    const cx = (tree.scrollLeft + tree.clientWidth / 2) / S.zoom, cy = (tree.scrollTop + tree.clientHeight / 2) / S.zoom;
    S.zoom = Math.min(2.5, Math.max(0.1, z));
    if (S.svg) { S.svg.setAttribute('width', S.width * S.zoom); S.svg.setAttribute('height', S.height * S.zoom); }
    tree.scrollLeft = cx * S.zoom - tree.clientWidth / 2; tree.scrollTop = cy * S.zoom - tree.clientHeight / 2;
    $('zoom-reset').textContent = Math.round(S.zoom * 100) + '%';
    drawWindow(true);
  }

  // ---------- loading ----------
  async function loadPools() {
    const pools = await api('api/pools');
    const sel = $('pool');
    sel.innerHTML = pools.map((p) => `<option value="${esc(p.pool_uuid)}">${esc(p.name || short(p.pool_uuid))}</option>`).join('') + '<option value="">all pools</option>';
    const want = new URLSearchParams(location.search).get('pool');
    S.pool = want != null ? want : (pools[0] ? pools[0].pool_uuid : '');
    sel.value = S.pool;
  }

  async function loadTree() {
    const t0 = performance.now();
    const tr = await api('api/tree?pool=' + encodeURIComponent(S.pool));
    const t1 = performance.now();
    const sel = S.selected >= 0 && S.nodes[S.selected] ? S.nodes[S.selected].uuid : null;
    S.nodes = tr.nodes;
    S.index = new Map();
    S.nodes.forEach((n, i) => S.index.set(n.uuid, i));
    S.selected = sel != null && S.index.has(sel) ? S.index.get(sel) : -1; // new VMs may shift indexes
    S.first = Date.parse(tr.first) || Date.now();
    S.last = Math.max(Date.parse(tr.last) || 0, S.first + 1000);
    S.stats.fetchMs = t1 - t0;
    S.stats.nodes = S.nodes.length;
    setupSlider();
    render();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))); // painted
    S.stats.treeMs = performance.now() - t0;
    status(`${S.nodes.length.toLocaleString('en')} VMs · drawn in ${Math.round(S.stats.treeMs)} ms`);
  }

  // ---------- time control ----------
  function setupSlider() {
    const span = S.last - S.first;
    const margin = Math.max(span * 0.02, 5000);
    const sl = $('time-slider');
    sl.min = Math.floor((S.first - margin) / 1000);
    sl.max = Math.ceil((S.last + margin) / 1000);
    sl.value = S.at == null ? sl.max : Math.round(S.at / 1000);
    $('time-input').min = localInput(S.first - margin);
    $('time-input').max = localInput(S.last + margin);
    if (S.at == null) $('time-input').value = '';
  }

  let atSeq = 0, atTimer = 0;
  function setTime(ms, immediate) {
    S.at = ms;
    $('time-live').classList.toggle('on', ms == null);
    const lbl = $('time-label');
    lbl.textContent = ms == null ? 'now (live)' : 'pool at ' + fmt(ms) + ' UTC';
    lbl.classList.toggle('past', ms != null);
    if (ms != null) {
      $('time-input').value = localInput(ms);
      $('time-slider').value = Math.round(ms / 1000);
    } else {
      $('time-input').value = '';
      $('time-slider').value = $('time-slider').max;
    }
    clearTimeout(atTimer);
    if (immediate) return loadAt();
    atTimer = setTimeout(loadAt, 120); // dragging the slider: ask once it rests
    return Promise.resolve();
  }

  async function loadAt() {
    const seq = ++atSeq;
    const t = S.at == null ? 'now' : String(S.at);
    let r;
    try {
      r = await api(`api/at?pool=${encodeURIComponent(S.pool)}&t=${t}`);
    } catch (e) { status('pool at time: ' + e.message, true); return; }
    if (seq !== atSeq) return; // a newer request is under way
    if (S.at == null) { S.exists = null; S.atStates = null; S.atHosts = null; } else {
      S.exists = new Set(r.exists);
      S.atStates = new Map(); S.atHosts = new Map();
      for (const h of r.hosts) for (const v of h.vms) { S.atStates.set(v.uuid, v.power_state); S.atHosts.set(v.uuid, h.name); }
      for (const v of r.unplaced) S.atStates.set(v.uuid, v.power_state);
    }
    applyTime();
    drawHosts(r);
    document.body.dataset.at = S.at == null ? 'now' : r.at;
  }

  function drawHosts(r) {
    $('pool-at-when').textContent = S.at == null ? 'now' : 'at ' + fmt(Date.parse(r.at)) + ' UTC';
    const chip = (v) => `<span class="chip ${psClass(v.power_state)} ${markLabel(v.marks)}" data-uuid="${esc(v.uuid)}" title="${esc(v.uuid)}">${esc(v.name || short(v.uuid))}<span class="st">${esc(String(v.power_state).toLowerCase())}</span></span>`;
    const LIMIT = 200; // a big host lists its first VMs; the tree shows the rest
    const chips = (vms) => vms.slice(0, LIMIT).map(chip).join('') + (vms.length > LIMIT ? `<span class="more">+${vms.length - LIMIT} more</span>` : '');
    let html = '';
    for (const h of r.hosts) {
      html += `<div class="host" data-host="${esc(h.host_uuid)}"><div class="host-head"><span>${esc(h.name || short(h.host_uuid))}</span><span class="dim">${h.address ? esc(h.address) + ' · ' : ''}${h.vms.length} VM${h.vms.length === 1 ? '' : 's'}</span></div>`;
      html += `<div class="chips">${h.vms.length ? chips(h.vms) : '<span class="more">no VM resident</span>'}</div></div>`;
    }
    if (r.unplaced.length) {
      html += `<div class="host unplaced"><div class="host-head"><span>Not resident</span><span class="dim">halted, suspended · ${r.unplaced.length}</span></div><div class="chips">${chips(r.unplaced)}</div></div>`;
    }
    $('hosts').innerHTML = html || '<p class="dim">No VM existed then.</p>';
  }

  // ---------- details ----------
  async function select(i, scroll) {
    S.selected = i;
    if (!S.svg || i < 0 || i >= S.nodes.length) return;
    if (scroll) {
      const tree = $('tree');
      const L = S.layout;
      const cx = (PAD + L.x[i] * COL + W / 2) * S.zoom, cy = (PAD + L.y[i] * ROW + H / 2) * S.zoom;
      tree.scrollTo({ left: cx - tree.clientWidth / 2, top: cy - tree.clientHeight / 2 });
    }
    for (const e of S.svg.querySelectorAll('g.node.selected')) e.classList.remove('selected');
    drawWindow(false);
    const el = document.getElementById('vm-' + S.nodes[i].uuid);
    if (el) el.classList.add('selected');
    const n = S.nodes[i];
    const box = $('details');
    box.dataset.uuid = '';
    box.innerHTML = `<h2>${esc(n.name)}</h2><p class="dim">loading…</p>`;
    let d;
    try { d = await api('api/vm/' + encodeURIComponent(n.uuid)); } catch (e) { box.innerHTML = `<h2>${esc(n.name)}</h2><p class="error">${esc(e.message)}</p>`; return; }
    if (S.selected !== i) return;
    box.innerHTML = detailsHTML(d);
    box.dataset.uuid = n.uuid;
  }

  function vmLink(v) {
    return `<a class="vm" data-uuid="${esc(v.uuid)}" title="${esc(v.uuid)}">${esc(v.name || short(v.uuid))}</a>`;
  }

  function detailsHTML(d) {
    const v = d.vm;
    const m = v.marks;
    let h = `<h2>${esc(v.name || '(no name)')}</h2><div>`;
    h += `<span class="badge ${psClass(v.power_state)}">${esc(String(v.power_state || 'unknown').toLowerCase())}</span>`;
    if (v.kind !== 'vm') h += `<span class="badge">${esc(v.kind)}</span>`;
    if (v.destroyed) h += `<span class="badge destroyed">destroyed ${esc(fmtISO(v.destroyed_at))}</span>`;
    if (m && m.alerted) h += '<span class="badge alerted">alerted</span>';
    if (m && m.suspect) h += '<span class="badge suspect">suspect</span>';
    h += '</div>';
    if (m && (m.alerted || m.suspect) && (m.reason || m.score)) {
      h += `<p class="reason ${m.alerted ? 'alerted' : ''}">${esc(m.reason || '')}${m.score ? ` <span class="dim">(score ${esc(m.score)})</span>` : ''}</p>`;
    }
    h += '<dl class="kv">';
    h += `<dt>uuid</dt><dd class="mono">${esc(v.uuid)}</dd>`;
    if (v.host) h += `<dt>host</dt><dd>${esc(v.host)}</dd>`;
    h += `<dt>first seen</dt><dd>${esc(fmtISO(v.first_seen))} UTC</dd>`;
    if (v.parent) h += `<dt>made by</dt><dd>${esc(v.via || 'derived')} of ${d.ancestors.length ? vmLink(d.ancestors[0]) : esc(short(v.parent))}</dd>`;
    else if (v.via) h += `<dt>made by</dt><dd>${esc(v.via)} of a VM never seen</dd>`;
    const ips = d.attrs.filter((a) => a.kind === 'ip'), macs = d.attrs.filter((a) => a.kind === 'mac');
    const spans = (as) => as.map((a) => `<span class="mono">${esc(a.value)}</span> <span class="dim">${esc(fmtISO(a.from))}${a.to ? ' → ' + esc(fmtISO(a.to)) : ' → now'}</span>`).join('<br>');
    if (ips.length) h += `<dt>IP</dt><dd>${spans(ips)}</dd>`;
    if (macs.length) h += `<dt>MAC</dt><dd>${spans(macs)}</dd>`;
    h += '</dl>';
    h += '<h3>Ancestors</h3>';
    if (d.ancestors.length) {
      h += `<div class="chain ancestors"><b>${esc(v.name)}</b>` + d.ancestors.map((a) => `<span class="arrow">←</span>${vmLink(a)}${a.destroyed ? ' <span class="dim">(destroyed)</span>' : ''}`).join('') + '</div>';
    } else h += '<p class="dim">none: this VM is a family root.</p>';
    if (d.children.length) {
      h += `<h3>Children (${d.children.length})</h3><div class="chain">` + d.children.slice(0, 60).map(vmLink).join(', ') + (d.children.length > 60 ? ' …' : '') + '</div>';
    }
    h += `<h3>Lifecycle timeline (${d.timeline.length}${d.timeline_truncated ? ', the newest; older records not shown' : ''})</h3>`;
    if (!d.timeline.length) return h + '<p class="dim">No record.</p>';
    h += '<table class="timeline"><thead><tr><th>start</th><th>end</th><th>activity</th><th>result</th><th>host</th></tr></thead><tbody>';
    for (const r of d.timeline) {
      const other = r.role === 'parent' ? ` <span class="as-parent">→ ${esc(r.vm_name || short(r.vm_uuid))}</span>` : '';
      h += `<tr class="row" data-t="${Date.parse(r.start)}" data-activity="${esc(r.activity)}" title="click: show the pool at this time${r.error ? '\n' + esc(r.error) : ''}">`;
      h += `<td class="t">${esc(fmtISO(r.start))}</td><td class="t">${r.end ? esc(fmtISO(r.end).slice(11)) + ` <span class="dim">${esc(dur(r.start, r.end))}</span>` : '…'}</td>`;
      h += `<td class="act">${esc(r.activity === 'other' ? r.operation : r.activity)}${other}</td><td class="res-${esc(r.result)}">${esc(r.result)}</td><td>${esc(r.host_name || short(r.host_uuid) || '–')}</td></tr>`;
    }
    return h + '</tbody></table>';
  }

  function selectUUID(uuid, scroll) {
    const i = S.index.get(uuid);
    if (i !== undefined) select(i, scroll);
  }

  // ---------- search ----------
  let searchTimer = 0, searchSeq = 0, hits = [];
  async function search(q) {
    const seq = ++searchSeq;
    const ul = $('search-results');
    if (!q.trim()) { ul.hidden = true; return; }
    let res;
    try { res = await api('api/search?q=' + encodeURIComponent(q)); } catch (e) { status('search: ' + e.message, true); return; }
    if (seq !== searchSeq) return;
    hits = res;
    ul.innerHTML = res.length ? res.map((h, k) => `<li data-k="${k}" class="${k === 0 ? 'active' : ''}"><b>${esc(h.name || short(h.uuid))}</b><span class="mono dim">${esc(short(h.uuid))}</span>${h.destroyed ? '<span class="badge destroyed">destroyed</span>' : ''}<span class="why">${esc(h.match)}: ${esc(h.value)}${h.from ? ' · ' + esc(fmtISO(h.from)) + (h.to ? ' → ' + esc(fmtISO(h.to)) : ' → now') : ''}</span></li>`).join('')
      : '<li class="dim">no VM matches</li>';
    ul.hidden = false;
  }
  async function pickHit(h) {
    $('search-results').hidden = true;
    if (!h) return;
    if (S.pool && h.pool_uuid && h.pool_uuid !== S.pool) {
      S.pool = h.pool_uuid; $('pool').value = S.pool;
      await loadTree(); await loadAt();
    }
    selectUUID(h.uuid, true);
  }

  // ---------- tooltip ----------
  function tooltipHTML(n) {
    const ps = S.atStates && S.atStates.has(n.uuid) ? S.atStates.get(n.uuid) : n.power_state;
    let h = `<b>${esc(n.name)}</b><br><span class="mono">${esc(n.uuid)}</span><br>`;
    h += `${esc(n.kind)} · ${esc(String(ps || 'unknown').toLowerCase())}${S.at != null ? ' (at ' + esc(fmt(S.at)) + ')' : ''}`;
    const host = S.at != null && S.atHosts ? S.atHosts.get(n.uuid) : n.host;
    if (host && ps === 'Running') h += ' on ' + esc(host);
    if (n.via) h += `<br>${esc(n.via)} of ${n.parent ? esc((S.nodes[S.index.get(n.parent)] || {}).name || short(n.parent)) : 'a VM never seen'}`;
    h += `<br>first seen ${esc(fmtISO(n.first_seen))}`;
    if (n.destroyed) h += `<br>destroyed ${esc(fmtISO(n.destroyed_at))}`;
    if (n.marks) h += `<br><b>${esc(markLabel(n.marks))}</b> ${esc(n.marks.reason || '')}`;
    return h;
  }

  // ---------- wiring (delegated) ----------
  function nodeIndexOf(target) {
    const g = target.closest && target.closest('g.node');
    return g ? Number(g.dataset.i) : -1;
  }
  function wire() {
    const tree = $('tree'), tip = $('tooltip');
    tree.addEventListener('click', (e) => { const i = nodeIndexOf(e.target); if (i >= 0) select(i, false); });
    tree.addEventListener('mousemove', (e) => {
      const i = nodeIndexOf(e.target);
      if (i < 0) { tip.hidden = true; return; }
      if (tip.dataset.i !== String(i)) { tip.innerHTML = tooltipHTML(S.nodes[i]); tip.dataset.i = i; }
      tip.hidden = false;
      const x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      const y = Math.min(e.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
      tip.style.left = x + 'px'; tip.style.top = y + 'px';
    });
    tree.addEventListener('mouseleave', () => { tip.hidden = true; });
    let pending = false;
    const onView = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; drawWindow(false); });
    };
    tree.addEventListener('scroll', onView, { passive: true });
    window.addEventListener('resize', onView);
    document.querySelector('.side').addEventListener('click', (e) => {
      const a = e.target.closest('[data-uuid]');
      if (a && a.dataset.uuid && !a.classList.contains('panel')) { selectUUID(a.dataset.uuid, true); return; }
      const row = e.target.closest('tr.row');
      if (row) setTime(Number(row.dataset.t), true);
    });
    $('time-slider').addEventListener('input', (e) => setTime(Number(e.target.value) * 1000));
    $('time-input').addEventListener('change', (e) => {
      const v = e.target.value;
      if (!v) { setTime(null, true); return; }
      const ms = Date.parse(v.length === 16 ? v + ':00Z' : v + 'Z'); // the input is UTC
      if (!isNaN(ms)) setTime(ms, true);
    });
    $('time-live').addEventListener('click', () => setTime(null, true));
    $('show-absent').addEventListener('change', (e) => { if (S.svg) S.svg.classList.toggle('show-absent', e.target.checked); });
    $('zoom-in').addEventListener('click', () => setZoom(S.zoom * 1.25));
    $('zoom-out').addEventListener('click', () => setZoom(S.zoom / 1.25));
    $('zoom-reset').addEventListener('click', () => setZoom(1));
    $('pool').addEventListener('change', async (e) => { S.pool = e.target.value; S.selected = -1; await loadTree(); await loadAt(); });
    $('refresh').addEventListener('click', () => refresh());
    const si = $('search');
    si.addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => search(si.value), 180); });
    si.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); clearTimeout(searchTimer); search(si.value).then(() => pickHit(hits[0])); }
      if (e.key === 'Escape') $('search-results').hidden = true;
    });
    $('search-results').addEventListener('click', (e) => { const li = e.target.closest('li[data-k]'); if (li) pickHit(hits[Number(li.dataset.k)]); });
    document.addEventListener('click', (e) => { if (!e.target.closest('.search')) $('search-results').hidden = true; });
  }

  async function refresh() {
    document.body.dataset.state = 'loading';
    const sx = $('tree').scrollLeft, sy = $('tree').scrollTop;
    try {
      await loadTree();
      await loadAt();
      $('tree').scrollLeft = sx; $('tree').scrollTop = sy;
      if (S.selected >= 0) select(S.selected, false);
      document.body.dataset.state = 'ready';
    } catch (e) { status(e.message, true); document.body.dataset.state = 'error'; }
  }

  async function main() {
    wire();
    try {
      await loadPools();
      // The live pool state does not need the layout: ask for both at once.
      await Promise.all([loadTree(), setTime(null, true)]);
      S.stats.readyMs = performance.now();
      document.body.dataset.state = 'ready';
    } catch (e) {
      status(e.message, true);
      document.body.dataset.state = 'error';
    }
    setInterval(() => { if (document.visibilityState === 'visible' && S.at == null) refreshMarks(); }, 30000);
  }

  // refreshMarks re-reads only the alert marks: cheap enough to poll.
  async function refreshMarks() {
    let marks;
    try { marks = await api('api/marks'); } catch (e) { return; }
    let changed = false;
    S.nodes.forEach((n) => {
      const m = marks[n.uuid];
      const was = markLabel(n.marks), now = markLabel(m);
      n.marks = now ? m : undefined;
      if (was !== now) changed = true;
    });
    if (changed) drawWindow(true);
  }

  main();
})();
