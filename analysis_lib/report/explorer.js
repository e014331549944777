// The book's attention explorer (analysis_lib/report/explorer_page.py writes its data files).
// attentionExplorer(root, config) builds the controls and panels inside `root` and loads a
// (dataset, seed)'s file (_static/explorer/<name>_seed<k>.js) the first time it is picked.
// root.dataset.state is "loading" while a file loads and "ready" once the view is drawn; the
// root's data-key, data-image, data-block, data-head, data-text-head (-1: mean over heads) and data-mode name
// what is drawn, so a test can recompute it from the data file.
function attentionExplorer(root, config) {
  "use strict";
  var store = (window.attentionExplorerData = window.attentionExplorerData || {});
  var SIZE = 200;  // the canvases' pixels; on the page they scale with the column (four across)

  function siteRoot() {
    var root = document.documentElement.getAttribute("data-content_root");
    if (root !== null) return root;
    var options = document.querySelector('script[src$="documentation_options.js"]');
    return options ? options.getAttribute("src").replace(/_static\/documentation_options\.js.*$/, "") : "";
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { node.append(c); });
    return node;
  }

  function bytes(b64) { var s = atob(b64), out = new Uint8Array(s.length); for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i); return out; }
  function floats(b64) { return new Float32Array(bytes(b64).buffer); }
  function fmt(v) { return Number(v).toPrecision(4); }
  function key(name, seed) { return name + " seed " + seed; }

  // --- controls (above the panels, wrapping on a phone) -----------------------------------
  function control(label, input, value) {
    return el("label", { style: "margin:0 1em 0.3em 0;white-space:nowrap;max-width:100%" }, [label + " ", input].concat(value ? [" ", value] : []));
  }
  function select(name, options) {
    return el("select", { name: name, style: "max-width:100%" }, options.map(function (o) { return el("option", { value: o[0] }, [o[1]]); }));
  }
  var datasetSelect = select("dataset", config.datasets.map(function (d) { return [d, d]; }));
  var seedSelect = select("seed", []);
  var imageSelect = select("image", []);
  var block = el("input", { type: "range", name: "block", min: 0, max: 0, step: 1, value: 0, style: "max-width:8em" });
  var head = el("input", { type: "range", name: "head", min: 0, max: 0, step: 1, value: 0, style: "max-width:8em" });
  var textHead = el("input", { type: "range", name: "text_head", min: 0, max: 0, step: 1, value: 0, style: "max-width:8em" });
  var meanHeads = el("input", { type: "checkbox", name: "mean_heads" });
  var view = select("view", [["raw", "attention of this block"], ["rollout", "rollout up to this block"]]);
  var overviewPanel = select("overview_panel", config.panels.map(function (p) { return [p, p]; }));
  overviewPanel.value = "W";
  var blockValue = el("span"), headValue = el("span"), textHeadValue = el("span");
  var readout = el("div", { class: "ae-readout", style: "font-weight:600;margin:0.2em 0" });
  var note = el("div", { class: "ae-note", style: "display:none;font-size:0.85em;background:#fff4d6;border-left:3px solid #e0a000;padding:0.2em 0.5em;margin:0.2em 0" });
  var hover = el("div", { class: "ae-hover", style: "font-size:0.85em;min-height:1.3em;font-variant-numeric:tabular-nums" }, ["Hover over a patch or a bar for its value."]);
  var status = el("div", { class: "ae-status", style: "font-size:0.85em;color:#666" });
  var numbers = el("div", { class: "ae-numbers", style: "margin:0.3em 0" });

  // --- panels: CLIP, W/O, W on one sequential scale, W − CLIP on a diverging one ----------------
  var titles = { "CLIP": "CLIP (zero-shot)", "W/O": "W/O: prompts' keys dropped, renormalised", "W": "W: prompted, as run",
    "W − CLIP": "W − CLIP (blue: less, red: more)" };
  var canvases = {};
  var panelRow = el("div", { class: "ae-panels", style: "display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:6px;max-width:" + (4 * SIZE + 18) + "px" });
  config.panels.concat(["W − CLIP"]).forEach(function (p) {
    var canvas = el("canvas", { width: SIZE, height: SIZE, "data-panel": p, style: "width:100%;height:auto;aspect-ratio:1;display:block;cursor:crosshair" });
    canvases[p] = canvas;
    panelRow.append(el("figure", { style: "margin:0;min-width:0;text-align:center" }, [canvas, el("figcaption", { style: "font-size:0.75em;line-height:1.2" }, [titles[p]])]));
  });
  function colourBar(kind) {
    var canvas = el("canvas", { width: 256, height: 10, style: "width:100%;height:10px;display:block" });
    var low = el("span"), mid = el("span"), high = el("span");
    var box = el("div", { class: "ae-colourbar", "data-kind": kind, style: "min-width:0" }, [canvas,
      el("div", { style: "display:flex;flex-wrap:wrap;justify-content:space-between;font-size:0.7em;font-variant-numeric:tabular-nums" }, [low, mid, high])]);
    return { box: box, canvas: canvas, low: low, mid: mid, high: high };
  }
  var seqBar = colourBar("attention"), divBar = colourBar("difference");
  seqBar.box.style.gridColumn = "1 / span 3";
  var barRow = el("div", { style: "display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:6px;margin-top:2px;max-width:" + (4 * SIZE + 18) + "px" }, [seqBar.box, divBar.box]);

  // --- every head of the block (small multiples; a click selects the head) ---------------------
  var overview = el("div", { class: "ae-overview", style: "display:grid;grid-template-columns:repeat(auto-fill,minmax(56px,1fr));gap:4px;max-width:" + (4 * SIZE + 18) + "px" });
  var overviewCaption = el("div", { style: "font-size:0.85em;margin-top:0.6em" });

  var bars = {};
  var textRow = el("div", { class: "ae-text", style: "display:flex;flex-wrap:wrap;gap:24px;margin-top:0.5em;max-width:100%;overflow-x:auto" });
  config.textModels.forEach(function (m) {
    bars[m] = el("div", { class: "ae-bars", "data-model": m, style: "display:flex;align-items:flex-end;height:140px;gap:2px" });
    var axis = el("div", { class: "ae-axis", style: "display:flex;flex-direction:column;justify-content:space-between;height:104px;margin-bottom:36px;font-size:9px;text-align:right;padding-right:3px;border-right:1px solid #999" });
    bars[m].axis = axis;
    textRow.append(el("div", { style: "flex:0 0 auto" }, [el("div", { style: "display:flex;align-items:flex-end" }, [axis, bars[m]]),
      el("div", { style: "font-size:0.85em;color:#666" }, ["[EOS] attention over the class prompt: " + m])]));
  });
  var legend = el("div", { style: "font-size:0.8em" }, Object.keys(config.tokenColours).map(function (t) {
    return el("span", { style: "margin-right:0.8em" }, [el("span", { style: "display:inline-block;width:0.8em;height:0.8em;background:" + config.tokenColours[t] }), " " + t]);
  }));
  root.style.maxWidth = "100%";
  root.append(
    el("div", { class: "ae-controls", style: "display:flex;flex-wrap:wrap;align-items:center;margin-bottom:0.3em;max-width:100%" }, [
      control("dataset", datasetSelect), control("seed", seedSelect), control("image", imageSelect), control("view", view),
      control("block", block, blockValue), control("head", head, headValue), control("", meanHeads, "mean over heads"),
      control("text head", textHead, textHeadValue)]),
    readout, note, panelRow, barRow, hover, numbers,
    overviewCaption, el("div", { style: "font-size:0.85em" }, [control("heads of the panel", overviewPanel)]), overview,
    textRow, legend, status);

  // --- data -----------------------------------------------------------------------------
  var decoded = {};
  function dataset(k) {
    if (decoded[k]) return decoded[k];
    var raw = store[k];
    var d = { raw: raw, cls: bytes(raw.cls.codes), clsScale: floats(raw.cls.scale), roll: bytes(raw.rollout.codes),
      rollScale: floats(raw.rollout.scale), share: floats(raw.prompt_share), lam: floats(raw.lam), text: {}, pictures: [] };
    raw.images.forEach(function (image) { var img = new Image(); img.src = image.picture; d.pictures.push(img); });
    Object.keys(raw.text).forEach(function (c) {
      d.text[c] = {};
      Object.keys(raw.text[c]).forEach(function (m) {
        var t = raw.text[c][m];
        d.text[c][m] = { tokens: t.tokens, types: t.types, att: bytes(t.attention.codes), attScale: floats(t.attention.scale),
          roll: bytes(t.rollout.codes), rollScale: floats(t.rollout.scale) };
      });
    });
    decoded[k] = d;
    return d;
  }

  function load(k, then) {
    if (store[k]) return then();
    root.dataset.state = "loading";
    status.textContent = "loading " + k + " …";
    var script = el("script", { src: siteRoot() + config.files[k] });
    script.onload = then;
    script.onerror = function () { root.dataset.state = "error"; status.textContent = "could not load " + config.files[k]; };
    document.head.append(script);
  }

  // A row of n dequantised values: codes[offset..offset+n) / 255 * scale.
  function row(codes, offset, n, scale) {
    var out = new Float32Array(n);
    for (var j = 0; j < n; j++) out[j] = codes[offset + j] / 255 * scale;
    return out;
  }
  function mean(rows) {
    var out = new Float32Array(rows[0].length);
    rows.forEach(function (r) { for (var j = 0; j < r.length; j++) out[j] += r[j] / rows.length; });
    return out;
  }
  function heads(n, pick) { var out = []; for (var h = 0; h < n; h++) out.push(pick(h)); return out; }
  function maxOf(r) { var m = 0; for (var j = 0; j < r.length; j++) m = Math.max(m, Math.abs(r[j])); return m; }

  // The [CLS] row over the patches of one panel for the current settings.
  function clsRow(d, panel, i, b, h, mode) {
    var r = d.raw, P = r.grid * r.grid, I = r.images.length, L = r.blocks, H = r.heads;
    var p = r.panels.indexOf(panel);
    if (mode === "rollout") {
      var k = (p * I + i) * L + b;
      return row(d.roll, k * P, P, d.rollScale[k]);
    }
    var c = r.code_panel[p];
    var one = function (hh) { return row(d.cls, (((c * I + i) * L + b) * H + hh) * P, P, d.clsScale[((p * I + i) * L + b) * H + hh]); };
    return h < 0 ? mean(heads(H, one)) : one(h);
  }

  function eosRow(t, b, h, mode, H) {
    var T = t.tokens.length;
    if (mode === "rollout") return row(t.roll, b * T, T, t.rollScale[b]);
    var one = function (hh) { return row(t.att, (b * H + hh) * T, T, t.attScale[b * H + hh]); };
    return h < 0 ? mean(heads(H, one)) : one(h);
  }

  // Colour of v in [0, 1] on a list of RGB stops.
  function colour(stops, v) {
    var x = Math.max(0, Math.min(1, v)) * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(x)), f = x - k;
    return stops[k].map(function (a, n) { return Math.round(a + (stops[k + 1][n] - a) * f); });
  }

  // The picture under an opaque-enough layer: low values dark, high values bright (the colour map's ends).
  function drawGrid(canvas, picture, values, grid, toUnit, stops) {
    var ctx = canvas.getContext("2d"), n = canvas.width, cell = n / grid;
    ctx.clearRect(0, 0, n, n);
    if (picture && picture.complete) ctx.drawImage(picture, 0, 0, n, n);
    for (var q = 0; q < values.length; q++) {
      var c = colour(stops, toUnit(values[q]));
      ctx.fillStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + config.opacity + ")";
      ctx.fillRect((q % grid) * cell, Math.floor(q / grid) * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }

  function drawColourBar(bar, stops, low, high) {
    var ctx = bar.canvas.getContext("2d");
    for (var x = 0; x < 256; x++) { var c = colour(stops, x / 255); ctx.fillStyle = "rgb(" + c.join(",") + ")"; ctx.fillRect(x, 0, 1, 10); }
    bar.low.textContent = Number(low).toPrecision(3);
    bar.mid.textContent = low < 0 ? "0" : Number(high / 2).toPrecision(3);
    bar.high.textContent = Number(high).toPrecision(3);
    bar.box.dataset.min = low;
    bar.box.dataset.max = high;
  }

  function drawBars(box, t, values, max) {
    box.axis.replaceChildren(el("span", {}, [fmt(max)]), el("span", {}, [fmt(max / 2)]), el("span", {}, ["0"]));
    box.replaceChildren.apply(box, t.tokens.map(function (token, n) {
      var height = max > 0 ? Math.round(90 * values[n] / max) : 0;
      var text = "[EOS] → " + token + " (" + t.types[n] + ", " + box.dataset.model + "): " + fmt(values[n]);
      var bar = el("div", { class: "ae-bar", title: text, "data-value": values[n], style: "display:flex;flex-direction:column;align-items:center;width:28px" }, [
        el("div", { style: "font-size:8px;font-variant-numeric:tabular-nums" }, [values[n].toFixed(2)]),
        el("div", { style: "width:18px;height:" + height + "px;background:" + (config.tokenColours[t.types[n]] || "#999") }),
        el("div", { style: "font-size:9px;height:28px;overflow:hidden;writing-mode:vertical-rl;transform:rotate(180deg)" }, [token])]);
      bar.addEventListener("mouseenter", function () { hover.textContent = text; });
      return bar;
    }));
  }

  function setRange(input, max) {
    input.max = max;
    if (Number(input.value) > max) input.value = max;
  }

  var current = null, shown = null;  // the data's key; what the panels show (rows per panel)
  function showDataset(name, seed) {
    var seeds = config.seeds[name];
    if (seed === undefined || seeds.indexOf(Number(seed)) < 0) seed = seeds[0];
    seedSelect.replaceChildren.apply(seedSelect, seeds.map(function (s) { return el("option", { value: s }, [String(s)]); }));
    seedSelect.value = seed;
    var k = key(name, seed);
    load(k, function () {
      var d = dataset(k), r = d.raw, image = Number(imageSelect.value) || 0;
      current = k;
      imageSelect.replaceChildren.apply(imageSelect, r.images.map(function (image, i) {
        return el("option", { value: i }, [image.classname + " (" + image.group + ")"]);
      }));
      imageSelect.value = Math.min(image, r.images.length - 1);
      setRange(block, Math.max(r.blocks, r.text_blocks) - 1);
      setRange(head, r.heads - 1);
      setRange(textHead, r.text_heads - 1);
      d.pictures.filter(function (img) { return !img.complete; })
        .forEach(function (img) { img.addEventListener("load", draw, { once: true }); });
      draw();
    });
  }

  function draw() {
    if (!current) return;
    var d = dataset(current), r = d.raw, i = Number(imageSelect.value) || 0, mode = view.value;
    var mh = meanHeads.checked, b = Math.min(Number(block.value), r.blocks - 1), h = mh || mode === "rollout" ? -1 : Number(head.value);
    head.disabled = textHead.disabled = mh || mode === "rollout";
    blockValue.textContent = block.value;
    headValue.textContent = mode === "rollout" ? "–" : mh ? "mean" : head.value;
    textHeadValue.textContent = mode === "rollout" ? "–" : mh ? "mean" : textHead.value;
    var image = r.images[i], what = mode === "rollout" ? "[CLS] rollout up to block " + b + " (heads averaged: rollout has no head)"
      : "[CLS] attention of block " + b + ", " + (mh ? "mean over its " + r.heads + " heads" : "head " + h);
    readout.textContent = "Shown: " + r.name + ", seed " + r.seed + ", image " + (i + 1) + " of " + r.images.length + ": " +
      image.classname + " (" + image.group + " class); " + what + ".";
    Object.assign(root.dataset, { key: current, image: i, block: b, head: h, mode: mode });

    var rows = {}, max = 0;
    r.panels.forEach(function (p) { rows[p] = clsRow(d, p, i, b, h, mode); max = Math.max(max, maxOf(rows[p])); });
    var diff = new Float32Array(rows.W.length);
    for (var q = 0; q < diff.length; q++) diff[q] = rows.W[q] - rows.CLIP[q];
    rows["W − CLIP"] = diff;
    var dmax = maxOf(diff);
    r.panels.forEach(function (p) {
      drawGrid(canvases[p], d.pictures[i], rows[p], r.grid, function (v) { return max > 0 ? v / max : 0; }, config.colormap);
    });
    drawGrid(canvases["W − CLIP"], d.pictures[i], diff, r.grid, function (v) { return dmax > 0 ? 0.5 + v / (2 * dmax) : 0.5; }, config.diverging);
    drawColourBar(seqBar, config.colormap, 0, max);
    drawColourBar(divBar, config.diverging, -dmax, dmax);
    shown = { rows: rows, grid: r.grid };

    var k = (i * r.blocks + b) * r.heads, share = 0, lam = 0, H = h < 0 ? r.heads : 1, h0 = h < 0 ? 0 : h;
    for (var hh = h0; hh < h0 + H; hh++) { share += d.share[k + hh] / H; lam += d.lam[k + hh] / H; }
    var heads_ = h < 0 ? "mean over heads" : "head " + h;
    numbers.textContent = "Prompted model, block " + b + ", " + heads_ + ": the prompts take " + (100 * share).toFixed(1) +
      " % of the [CLS] attention; λ (mass left to the original tokens, mean over [CLS] and patch queries) = " + lam.toFixed(3) + ".";
    note.style.display = share >= config.nearAll ? "" : "none";
    note.textContent = share >= config.nearAll ? "Here the prompts take " + (100 * share).toFixed(1) + " % of the [CLS] attention (" +
      heads_ + "), so W's patches share the remaining " + (100 * (1 - share)).toFixed(1) + " % and look dark on the common scale; " +
      "W/O shows the same row renormalised without the prompts." : "";

    drawOverview(d, i, b);
    var text = d.text[image.classname], tb = Math.min(Number(block.value), r.text_blocks - 1), th = mh ? -1 : Number(textHead.value);
    root.dataset.textHead = th;
    var values = {}, tmax = 0;
    Object.keys(bars).forEach(function (m) { values[m] = eosRow(text[m], tb, th, mode, r.text_heads); tmax = Math.max(tmax, maxOf(values[m])); });
    Object.keys(bars).forEach(function (m) { drawBars(bars[m], text[m], values[m], tmax); });
    status.textContent = r.name + ", seed " + r.seed + ": " + r.images.length + " test images, " + r.blocks + " blocks × " + r.heads +
      " heads; values quantised to within " + (100 * config.tolerance).toFixed(2) + " % of each row's maximum.";
    root.dataset.state = "ready";
  }

  function drawOverview(d, i, b) {
    var r = d.raw, p = overviewPanel.value, rows = heads(r.heads, function (hh) { return clsRow(d, p, i, b, hh, "raw"); });
    var max = Math.max.apply(null, rows.map(maxOf)), selected = meanHeads.checked || view.value === "rollout" ? -1 : Number(head.value);
    overviewCaption.textContent = "Every head of block " + b + " (" + p + " panel, one scale from 0 to " + fmt(max) + "); click one to show it above.";
    if (overview.children.length !== r.heads) {
      overview.replaceChildren.apply(overview, heads(r.heads, function (hh) {
        var c = el("canvas", { width: 64, height: 64, class: "ae-head", "data-head": hh, title: "head " + hh, style: "width:100%;height:auto;aspect-ratio:1;display:block;cursor:pointer" });
        c.addEventListener("click", function () {
          meanHeads.checked = false;
          view.value = "raw";
          head.value = hh;
          draw();
        });
        return el("figure", { style: "margin:0;text-align:center;font-size:0.7em" }, [c, el("figcaption", {}, ["head " + hh])]);
      }));
    }
    [].forEach.call(overview.querySelectorAll("canvas"), function (c, hh) {
      drawGrid(c, d.pictures[i], rows[hh], r.grid, function (v) { return max > 0 ? v / max : 0; }, config.colormap);
      c.style.outline = hh === selected ? "3px solid #1f77b4" : "none";
    });
  }

  function onHover(panel, event) {
    if (!shown) return;
    var c = canvases[panel], box = c.getBoundingClientRect(), g = shown.grid;
    var col = Math.min(g - 1, Math.floor((event.clientX - box.left) / box.width * g));
    var rw = Math.min(g - 1, Math.floor((event.clientY - box.top) / box.height * g)), q = rw * g + col;
    hover.dataset.patch = q;
    hover.textContent = "patch (row " + rw + ", column " + col + "): " + Object.keys(shown.rows).map(function (p) {
      return p + " " + fmt(shown.rows[p][q]);
    }).join(", ");
    c.title = hover.textContent;
  }

  Object.keys(canvases).forEach(function (p) { canvases[p].addEventListener("mousemove", function (e) { onHover(p, e); }); });
  datasetSelect.addEventListener("change", function () { showDataset(datasetSelect.value); });
  seedSelect.addEventListener("change", function () { showDataset(datasetSelect.value, seedSelect.value); });
  [imageSelect, block, head, textHead, meanHeads, view, overviewPanel].forEach(function (input) {
    input.addEventListener("input", draw);
    input.addEventListener("change", draw);
  });
  showDataset(config.datasets[0]);
}
