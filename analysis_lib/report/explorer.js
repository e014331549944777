// The book's attention explorer (analysis_lib/report/explorer_page.py writes its data files).
// attentionExplorer(root, config) builds the controls and panels inside `root` and loads a
// dataset's file (_static/explorer/<name>.js) the first time that dataset is picked.
// root.dataset.state is "loading" while a file loads and "ready" once the view is drawn.
function attentionExplorer(root, config) {
  "use strict";
  var store = (window.attentionExplorerData = window.attentionExplorerData || {});
  var SIZE = 200;  // three panels side by side in the book's text column

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

  // --- controls -------------------------------------------------------------------------
  function control(label, input, value) {
    return el("label", { style: "margin-right:1em;white-space:nowrap" }, [label + " ", input].concat(value ? [" ", value] : []));
  }
  var datasetSelect = el("select", { name: "dataset" }, config.datasets.map(function (d) { return el("option", { value: d }, [d]); }));
  var imageSelect = el("select", { name: "image" });
  var block = el("input", { type: "range", name: "block", min: 0, max: 0, step: 1, value: 0 });
  var head = el("input", { type: "range", name: "head", min: 0, max: 0, step: 1, value: 0 });
  var textHead = el("input", { type: "range", name: "text_head", min: 0, max: 0, step: 1, value: 0 });
  var meanHeads = el("input", { type: "checkbox", name: "mean_heads" });
  var view = el("select", { name: "view" }, [el("option", { value: "raw" }, ["attention of this block"]),
    el("option", { value: "rollout" }, ["rollout up to this block (heads averaged)"])]);
  var blockValue = el("span"), headValue = el("span"), textHeadValue = el("span");
  var status = el("div", { class: "ae-status", style: "font-size:0.85em;color:#666" });
  var numbers = el("div", { class: "ae-numbers", style: "margin:0.3em 0" });
  var scaleNote = el("div", { class: "ae-scale", style: "font-size:0.85em" });

  var panels = {};
  var panelRow = el("div", { class: "ae-panels", style: "display:flex;flex-wrap:wrap;gap:12px" });
  var titles = { "CLIP": "CLIP (zero-shot)", "W/O": "W/O: prompts' keys dropped, renormalised", "W": "W: prompted, as run" };
  ["CLIP", "W/O", "W"].forEach(function (p) {
    var canvas = el("canvas", { width: SIZE, height: SIZE, "data-panel": p, style: "width:" + SIZE + "px;height:" + SIZE + "px" });
    panels[p] = canvas;
    panelRow.append(el("figure", { style: "margin:0;flex:0 0 auto;text-align:center;width:" + SIZE + "px" }, [canvas, el("figcaption", { style: "font-size:0.85em" }, [titles[p]])]));
  });
  var bars = {};
  var textRow = el("div", { class: "ae-text", style: "display:flex;flex-wrap:wrap;gap:24px;margin-top:0.5em" });
  ["CLIP", "prompted"].forEach(function (m) {
    bars[m] = el("div", { class: "ae-bars", "data-model": m, style: "display:flex;align-items:flex-end;height:120px;gap:2px" });
    textRow.append(el("div", { style: "flex:0 0 auto" }, [bars[m], el("div", { style: "font-size:0.85em;color:#666" }, ["[EOS] attention over the class prompt: " + m])]));
  });
  var legend = el("div", { style: "font-size:0.8em" }, Object.keys(config.tokenColours).map(function (t) {
    return el("span", { style: "margin-right:0.8em" }, [el("span", { style: "display:inline-block;width:0.8em;height:0.8em;background:" + config.tokenColours[t] }), " " + t]);
  }));
  root.append(
    el("div", { class: "ae-controls", style: "display:flex;flex-wrap:wrap;align-items:center;margin-bottom:0.5em" }, [
      control("dataset", datasetSelect), control("image", imageSelect), control("block", block, blockValue),
      control("head", head, headValue), control("", meanHeads, "mean over heads"),
      control("text head", textHead, textHeadValue), control("view", view)]),
    panelRow, scaleNote, numbers, textRow, legend, status);

  // --- data -----------------------------------------------------------------------------
  var decoded = {};
  function dataset(name) {
    if (decoded[name]) return decoded[name];
    var raw = store[name];
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
    decoded[name] = d;
    return d;
  }

  function load(name, then) {
    if (store[name]) return then();
    root.dataset.state = "loading";
    status.textContent = "loading " + name + " …";
    var script = el("script", { src: siteRoot() + config.files[name] });
    script.onload = then;
    script.onerror = function () { root.dataset.state = "error"; status.textContent = "could not load " + config.files[name]; };
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

  function textRow_(t, b, h, mode, H) {
    var T = t.tokens.length;
    if (mode === "rollout") return row(t.roll, b * T, T, t.rollScale[b]);
    var one = function (hh) { return row(t.att, (b * H + hh) * T, T, t.attScale[b * H + hh]); };
    return h < 0 ? mean(heads(H, one)) : one(h);
  }

  function colour(v) {
    var cm = config.colormap, x = Math.max(0, Math.min(1, v)) * (cm.length - 1), k = Math.min(cm.length - 2, Math.floor(x)), f = x - k;
    return cm[k].map(function (a, n) { return Math.round(a + (cm[k + 1][n] - a) * f); });
  }

  function drawPanel(canvas, picture, values, grid, max) {
    var ctx = canvas.getContext("2d"), cell = SIZE / grid;
    ctx.clearRect(0, 0, SIZE, SIZE);
    ctx.imageSmoothingEnabled = true;
    if (picture.complete) ctx.drawImage(picture, 0, 0, SIZE, SIZE);
    for (var q = 0; q < values.length; q++) {
      var v = max > 0 ? values[q] / max : 0, c = colour(v);
      ctx.fillStyle = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + (config.alpha[0] + config.alpha[1] * v) + ")";
      ctx.fillRect((q % grid) * cell, Math.floor(q / grid) * cell, cell, cell);
    }
  }

  function drawBars(box, t, values, max) {
    box.replaceChildren.apply(box, t.tokens.map(function (token, n) {
      var height = max > 0 ? Math.round(90 * values[n] / max) : 0;
      return el("div", { title: token + " (" + t.types[n] + "): " + values[n].toFixed(3), style: "display:flex;flex-direction:column;align-items:center;width:26px" }, [
        el("div", { style: "width:18px;height:" + height + "px;background:" + (config.tokenColours[t.types[n]] || "#999") }),
        el("div", { style: "font-size:9px;height:28px;overflow:hidden;writing-mode:vertical-rl;transform:rotate(180deg)" }, [token])]);
    }));
  }

  function setRange(input, max) {
    input.max = max;
    if (Number(input.value) > max) input.value = max;
  }

  var current = null;
  function showDataset(name) {
    load(name, function () {
      var d = dataset(name), r = d.raw;
      current = name;
      imageSelect.replaceChildren.apply(imageSelect, r.images.map(function (image, i) {
        return el("option", { value: i }, [image.classname + " (" + image.group + ")"]);
      }));
      setRange(block, Math.max(r.blocks, r.text_blocks) - 1);
      setRange(head, r.heads - 1);
      setRange(textHead, r.text_heads - 1);
      var pending = d.pictures.filter(function (img) { return !img.complete; });
      pending.forEach(function (img) { img.addEventListener("load", draw, { once: true }); });
      draw();
    });
  }

  function draw() {
    if (!current) return;
    var d = dataset(current), r = d.raw, i = Number(imageSelect.value) || 0, mode = view.value;
    var mh = meanHeads.checked, b = Math.min(Number(block.value), r.blocks - 1), h = mh ? -1 : Number(head.value);
    head.disabled = textHead.disabled = mh || mode === "rollout";
    blockValue.textContent = block.value;
    headValue.textContent = mh ? "mean" : head.value;
    textHeadValue.textContent = mh ? "mean" : textHead.value;
    var rows = {}, max = 0;
    r.panels.forEach(function (p) { rows[p] = clsRow(d, p, i, b, h, mode); rows[p].forEach(function (v) { max = Math.max(max, v); }); });
    r.panels.forEach(function (p) { drawPanel(panels[p], d.pictures[i], rows[p], r.grid, max); });
    scaleNote.textContent = "Colour: [CLS] " + (mode === "rollout" ? "rollout" : "attention") + " to each patch, from 0 (dark) to " +
      max.toPrecision(3) + " (bright), the same scale in the three panels.";
    var k = (i * r.blocks + b) * r.heads, share = 0, lam = 0, H = mh ? r.heads : 1, h0 = mh ? 0 : h;
    for (var hh = h0; hh < h0 + H; hh++) { share += d.share[k + hh] / H; lam += d.lam[k + hh] / H; }
    numbers.textContent = "Prompted model, block " + b + ", " + (mh ? "mean over heads" : "head " + h) + ": the prompts take " +
      (100 * share).toFixed(1) + " % of the [CLS] attention; λ (mass left to the original tokens, mean over [CLS] and patch queries) = " + lam.toFixed(3) + ".";
    var text = d.text[r.images[i].classname], tb = Math.min(Number(block.value), r.text_blocks - 1), th = mh ? -1 : Number(textHead.value);
    var values = {}, tmax = 0;
    Object.keys(bars).forEach(function (m) { values[m] = textRow_(text[m], tb, th, mode, r.text_heads); values[m].forEach(function (v) { tmax = Math.max(tmax, v); }); });
    Object.keys(bars).forEach(function (m) { drawBars(bars[m], text[m], values[m], tmax); });
    status.textContent = r.name + ": " + r.images.length + " test images, " + r.blocks + " blocks × " + r.heads + " heads; values quantised to within " +
      (100 * config.tolerance).toFixed(2) + " % of each row's maximum.";
    root.dataset.state = "ready";
  }

  datasetSelect.addEventListener("change", function () { showDataset(datasetSelect.value); });
  [imageSelect, block, head, textHead, meanHeads, view].forEach(function (input) {
    input.addEventListener("input", draw);
    input.addEventListener("change", draw);
  });
  showDataset(config.datasets[0]);
}
