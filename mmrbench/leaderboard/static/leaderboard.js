/* mmrbench leaderboard page.
 * Reads the board from <script type="application/json" id="lb-data">; builds every element with
 * createElement + textContent (no HTML-string assignment anywhere), so model names and responses stay text.
 * Works from file:// with no server and no network.
 */
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('lb-data').textContent);
  var METRIC_TITLES = { accuracy: 'Acc', recall: 'Recall', precision: 'Precision' };
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var state = { bench: (data.benchmarks[0] || { key: null }).key, sub: 'all', metric: 'all', status: 'all', part: 'det', sortSub: null, sortMetric: null, sortDir: -1 };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function pct(v) { return (v === null || v === undefined) ? '\u2013' : (100 * v).toFixed(1); }
  function cellText(c, e) {
    if (!c || (c.det == null && c.loc == null)) { return ''; }
    return pct(c.det) + '/' + (c.loc == null ? (e && e.loc_reported === false ? 'not reported' : '-') : pct(c.loc));
  }
  function isImageUrl(u) { return typeof u === 'string' && u.indexOf('data:image/') === 0; }
  function bench() {
    return data.benchmarks.filter(function (b) { return b.key === state.bench; })[0] || { subdatasets: [] };
  }
  function isMmad() { return bench().kind === 'mmad'; }
  function mmadRow() { return state.sub === 'all' ? 'Average' : state.sub; }
  function columns(section) {
    if (isMmad()) {  // MMAD: the subtask columns of one dataset row (the Average row unless one is picked)
      if (section !== 'main') { return []; }
      return (bench().columns || []).map(function (c) { return { sub: mmadRow(), metric: c }; });
    }
    var all = bench().subdatasets;
    if (section === 'ablation') {  // only the subdatasets the ablation rows have (Table 5: MVTecAD, VisA)
      all = all.filter(function (s) {
        return data.entries.some(function (e) { return e.benchmark === state.bench && e.section === 'ablation' && e.cells[s]; });
      });
    }
    var subs = state.sub === 'all' ? all : all.filter(function (s) { return s === state.sub; });
    var metrics = state.metric === 'all' ? data.metrics : [state.metric];
    var cols = [];
    subs.forEach(function (s) { metrics.forEach(function (m) { cols.push({ sub: s, metric: m }); }); });
    return cols;
  }
  function value(entry, sub, metric) {
    if (entry.mmad) {
      var r = entry.mmad.rows[sub];
      return (r && typeof r[metric] === 'number') ? r[metric] : null;
    }
    var c = (entry.cells[sub] || {})[metric];
    return c ? c[state.part] : null;
  }
  function visibleEntries(section) {
    return data.entries.map(function (e, i) { return { e: e, i: i }; }).filter(function (x) {
      return x.e.benchmark === state.bench && x.e.section === section &&
        (state.status === 'all' || x.e.status === state.status);
    });
  }
  function sortedEntries(section) {
    var list = visibleEntries(section);
    if (state.sortSub === null) { return list; }
    return list.slice().sort(function (a, b) {
      var va = value(a.e, state.sortSub, state.sortMetric), vb = value(b.e, state.sortSub, state.sortMetric);
      if (va == null && vb == null) { return a.i - b.i; }
      if (va == null) { return 1; }
      if (vb == null) { return -1; }
      return va === vb ? a.i - b.i : state.sortDir * (va - vb);
    });
  }

  function renderTable() {
    renderSection('lb-table', 'main');
    var n = renderSection('lb-ablation', 'ablation');
    document.getElementById('ablations').hidden = n === 0;
  }

  function renderSection(tableId, section) {
    var table = document.getElementById(tableId);
    while (table.firstChild) { table.removeChild(table.firstChild); }
    var cols = columns(section);
    var count = 0;
    var thead = el('thead'), hr = el('tr');
    hr.appendChild(el('th', { 'class': 'model' }, 'Model'));
    hr.appendChild(el('th', null, 'Status'));
    cols.forEach(function (c) {
      var th = el('th', { 'class': 'sortable', 'data-sub': c.sub, 'data-metric': c.metric },
        isMmad() ? c.metric : c.sub + ' ' + METRIC_TITLES[c.metric]);
      if (state.sortSub === c.sub && state.sortMetric === c.metric) {
        th.classList.add(state.sortDir < 0 ? 'sorted-desc' : 'sorted-asc');
      }
      th.addEventListener('click', function () { sortBy(c.sub, c.metric); });
      hr.appendChild(th);
    });
    hr.appendChild(el('th', null, 'Samples'));
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el('tbody');
    var grouped = state.sortSub === null && section === 'main';
    var lastKind = null;
    sortedEntries(section).forEach(function (x) {
      var e = x.e;
      count += 1;
      if (grouped && e.kind !== lastKind) {
        var title = (data.groups.filter(function (g) { return g.kind === e.kind; })[0] || { title: e.kind }).title;
        var gr = el('tr', { 'class': 'group' });
        gr.appendChild(el('td', { colspan: String(cols.length + 3) }, title));
        tbody.appendChild(gr);
        lastKind = e.kind;
      }
      var tr = el('tr', { 'class': 'entry', 'data-index': String(x.i) });
      var name = el('td', { 'class': 'model' });
      name.appendChild(el('span', { 'class': 'name' }, e.name + (e.variant && e.variant !== 'default' ? ' [' + e.variant + ']' : '')));
      var kindText = e.mmad ? (e.detail || '') : e.kind + (e.source ? ' \u00b7 ' + e.source.split(' - ')[0] : '');
      if (e.recipe) { kindText = 'run of recipe ' + e.recipe + ' (beside \u201c' + e.ablation_row + '\u201d)'; }
      var kind = el('span', { 'class': 'kind' }, kindText);
      if (e.source) { kind.setAttribute('title', e.source); }
      name.appendChild(kind);
      tr.appendChild(name);
      var st = el('td');
      st.appendChild(el('span', { 'class': 'badge badge-' + (e.status === 'verified' || e.status === 'reported' ? e.status : 'unverified') }, e.status));
      if (e.reasons && e.reasons.length) { st.appendChild(el('span', { 'class': 'reasons' }, e.reasons.join('; '))); }
      tr.appendChild(st);
      cols.forEach(function (c) {
        var cell = (e.cells[c.sub] || {})[c.metric];
        var text = e.mmad ? (e.mmad.rows[c.sub] ? (value(e, c.sub, c.metric) === null ? '\u2013' : value(e, c.sub, c.metric).toFixed(1)) : '')
          : cellText(cell, e);
        var td = el('td', { 'class': 'cell', 'data-sub': c.sub, 'data-metric': c.metric }, text);
        var ci = e.ci && e.ci.subdatasets && e.ci.subdatasets[c.sub];
        if (ci) {
          var d = ci.det[c.metric], l = ci.loc[c.metric];
          td.setAttribute('title', '95% CI det [' + pct(d.low) + ', ' + pct(d.high) + '] loc [' + pct(l.low) + ', ' + pct(l.high) + ']');
        }
        tr.appendChild(td);
      });
      var sv = el('td');
      if (e.samples && e.samples.length) {
        var b = el('button', { 'class': 'view-samples', type: 'button' }, 'view ' + e.samples.length);
        b.addEventListener('click', function () { openViewer(x.i); });
        sv.appendChild(b);
      }
      tr.appendChild(sv);
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    return count;
  }

  function sortBy(sub, metric) {
    if (state.sortSub === sub && state.sortMetric === metric) { state.sortDir = -state.sortDir; }
    else { state.sortSub = sub; state.sortMetric = metric; state.sortDir = -1; }
    renderTable();
  }

  function openViewer(index) {
    var e = data.entries[index];
    var viewer = document.getElementById('viewer');
    viewer.hidden = false;
    viewer.setAttribute('data-index', String(index));
    document.getElementById('viewer-title').textContent = e.name + ' \u2014 ' + e.samples.length + ' samples';
    var list = document.getElementById('sample-list');
    while (list.firstChild) { list.removeChild(list.firstChild); }
    e.samples.forEach(function (s, j) {
      var b = el('button', { 'class': 'sample-link', type: 'button', 'data-sample': s.id },
        s.id + ' (' + s.category + ', ' + s.label + ')');
      b.addEventListener('click', function () { showSample(index, j); });
      list.appendChild(b);
    });
    if (e.samples.length) { showSample(index, 0); }
    viewer.scrollIntoView();
  }

  function drawBoxes(svg, boxes, cls) {
    boxes.forEach(function (b) {
      var r = svgEl('rect', { 'class': cls, x: String(b[0]), y: String(b[1]),
        width: String(Math.max(0, b[2] - b[0])), height: String(Math.max(0, b[3] - b[1])) });
      if (b.length > 4 && b[4]) {
        var t = svgEl('title', {});
        t.textContent = String(b[4]);
        r.appendChild(t);
      }
      svg.appendChild(r);
    });
  }

  function showSample(index, j) {
    var e = data.entries[index], s = e.samples[j];
    Array.prototype.forEach.call(document.querySelectorAll('#sample-list button'), function (b, k) {
      b.classList.toggle('active', k === j);
    });
    var pair = document.getElementById('sample-pair');
    while (pair.firstChild) { pair.removeChild(pair.firstChild); }
    var f1 = el('figure');
    if (isImageUrl(s.reference)) { f1.appendChild(el('img', { 'class': 'ref', src: s.reference, alt: 'reference' })); }
    f1.appendChild(el('figcaption', null, 'normal reference'));
    pair.appendChild(f1);
    var f2 = el('figure');
    var svg = svgEl('svg', { id: 'query-svg', viewBox: '0 0 ' + s.width + ' ' + s.height,
      'data-width': String(s.width), 'data-height': String(s.height) });
    if (isImageUrl(s.image)) {
      svg.appendChild(svgEl('image', { href: s.image, x: '0', y: '0', width: String(s.width), height: String(s.height),
        preserveAspectRatio: 'none' }));
    }
    drawBoxes(svg, s.gt, 'gt-box');
    drawBoxes(svg, s.pred, 'pred-box');
    f2.appendChild(svg);
    var verdict = s.missing ? 'no prediction' : (s.decision === true ? 'answer: Yes' : s.decision === false ? 'answer: No' : 'answer: invalid');
    f2.appendChild(el('figcaption', null, 'query ' + s.id + ' \u00b7 ' + s.label + ' \u00b7 ' + verdict +
      ' \u00b7 ' + s.gt.length + ' ground-truth, ' + s.pred.length + ' predicted boxes'));
    pair.appendChild(f2);
    document.getElementById('sample-response').textContent = s.response;
  }

  function fillSelect(id, values, current, onChange) {
    var sel = document.getElementById(id);
    values.forEach(function (v) {
      var o = el('option', { value: v[0] }, v[1]);
      if (v[0] === current) { o.selected = true; }
      sel.appendChild(o);
    });
    sel.addEventListener('change', function () { onChange(sel.value); renderTable(); });
  }

  function showBenchmark() {
    Array.prototype.forEach.call(document.querySelectorAll('section.bench-charts'), function (sec) {
      sec.hidden = sec.getAttribute('data-benchmark') !== state.bench;
    });
    var sel = document.getElementById('filter-sub');
    while (sel.firstChild) { sel.removeChild(sel.firstChild); }
    var subs = isMmad()
      ? [['all', 'Average (of the datasets)']].concat((bench().datasets || []).filter(function (d) { return d !== 'Average'; }).map(function (d) { return [d, d]; }))
      : [['all', 'all']].concat(bench().subdatasets.map(function (s) { return [s, s]; }));
    document.getElementById('filter-metric').disabled = isMmad();
    document.getElementById('sort-part').disabled = isMmad();
    subs.forEach(function (v) {
      sel.appendChild(el('option', { value: v[0] }, v[1]));
    });
    state.sub = 'all';
    state.sortSub = null;
    document.getElementById('viewer').hidden = true;
    document.getElementById('bench-title').textContent = bench().name || '';
  }

  fillSelect('filter-bench', data.benchmarks.map(function (b) { return [b.key, b.name]; }), state.bench,
    function (v) { state.bench = v; showBenchmark(); });
  document.getElementById('filter-sub').addEventListener('change', function () {
    state.sub = document.getElementById('filter-sub').value; renderTable();
  });
  fillSelect('filter-metric', [['all', 'all']].concat(data.metrics.map(function (m) { return [m, METRIC_TITLES[m]]; })), 'all',
    function (v) { state.metric = v; });
  fillSelect('sort-part', [['det', 'detection'], ['loc', 'localization']], 'det', function (v) { state.part = v; });
  fillSelect('filter-status', [['all', 'all'], ['verified', 'verified'], ['reported', 'reported'], ['unverified', 'unverified']],
    'all', function (v) { state.status = v; });
  showBenchmark();
  renderTable();
  document.body.setAttribute('data-ready', '1');
}());
