/* Small enhancements for the report; written for this site, no library, no network.
 * Loaded in <head> without `defer` so that the `js` class is set before the first paint (the
 * stylesheet then hides the pre-flipped anagram copies instead of flashing them); everything else
 * waits for the document. Without this script every figure still shows all of its images. */
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  var reduceMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  function each(selector, fn, scope) {
    Array.prototype.forEach.call((scope || document).querySelectorAll(selector), fn);
  }
  function text(el) {
    return el ? el.textContent.replace(/\s+/g, " ").trim() : "";
  }

  /* Zoom: one shared modal <dialog>. Enter on a focused link opens it (a link's click), Escape,
   * the close button or a click anywhere closes it, and focus returns to the link. */
  var dialog = null, dialogImg = null, dialogCaption = null, opener = null;

  function fitDialogImage() {
    if (!dialogImg || !dialogImg.naturalWidth) return;
    var maxW = window.innerWidth * 0.9, maxH = window.innerHeight * 0.72;
    var scale = Math.min(maxW / dialogImg.naturalWidth, maxH / dialogImg.naturalHeight);
    dialogImg.style.width = Math.max(1, Math.floor(dialogImg.naturalWidth * scale)) + "px";
    dialogImg.style.height = "auto";
  }

  function makeDialog() {
    dialog = document.createElement("dialog");
    dialog.className = "lightbox";
    dialog.setAttribute("aria-label", "Enlarged image");
    var close = document.createElement("button");
    close.type = "button";
    close.className = "lightbox-close";
    close.textContent = "Close";
    close.addEventListener("click", function () { dialog.close(); });
    var figure = document.createElement("figure");
    dialogImg = document.createElement("img");
    dialogImg.addEventListener("load", fitDialogImage);
    dialogCaption = document.createElement("figcaption");
    figure.appendChild(dialogImg);
    figure.appendChild(dialogCaption);
    dialog.appendChild(close);
    dialog.appendChild(figure);
    dialog.addEventListener("click", function (event) {
      if (event.target === dialog || event.target === dialogImg || event.target === figure) dialog.close();
    });
    dialog.addEventListener("close", function () {
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
    window.addEventListener("resize", fitDialogImage);
    document.body.appendChild(dialog);
  }

  function openZoom(link) {
    if (!dialog) makeDialog();
    var img = link.querySelector("img");
    var cell = link.closest(".cell");
    var fig = link.closest(".fig");
    var parts = [];
    if (cell) parts.push(text(cell.querySelector("figcaption")));
    if (fig) parts.push(text(fig.querySelector(":scope > figcaption .fig-number")) + " " +
                        text(fig.querySelector(":scope > figcaption .caption-text")));
    opener = link;
    dialogImg.className = img && img.classList.contains("pixelated") ? "pixelated" : "";
    dialogImg.alt = img ? img.alt : "";
    dialogImg.style.width = "";
    dialogImg.src = link.getAttribute("href");
    dialogCaption.textContent = parts.filter(Boolean).join(" · ");
    dialog.showModal();
    if (dialogImg.complete) fitDialogImage();
  }

  function initZoom() {
    document.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest("a.zoom");
      if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      openZoom(link);
    });
  }

  /* Visual anagrams: the button flips every sample of the figure; hover or keyboard focus flips one. */
  function initAnagrams() {
    each(".fig-anagram", function (fig) {
      var tools = fig.querySelector(".fig-tools");
      var button = fig.querySelector(".flip-btn");
      var state = fig.querySelector(".flip-state");
      var states = state ? [state.textContent, state.getAttribute("data-flipped")] : [];
      if (!button) return;
      tools.hidden = false;
      each(".anagram-card", function (card) { card.tabIndex = 0; }, fig);
      each(".flip-img", function (img) { img.setAttribute("data-alt-upright", img.alt); }, fig);
      button.addEventListener("click", function () {
        var flipped = !fig.classList.contains("is-flipped");
        fig.classList.toggle("is-flipped", flipped);
        button.setAttribute("aria-pressed", flipped ? "true" : "false");
        each(".flip-img", function (img) {
          var alt = img.getAttribute(flipped ? "data-alt-flipped" : "data-alt-upright");
          if (alt) img.alt = alt;
        }, fig);
        if (state) state.textContent = states[flipped ? 1 : 0];
      });
    });
  }

  /* Hybrid images: the slider sets the width of each sample's first copy. Below the image's own
   * resolution it shows a far view: the image area-averaged down to the largest of the render's shrunk
   * sizes (data-far, files named by data-far-path) that fits the width, drawn pixel by pixel, as an eye
   * that far away resolves it; at or above it, the image itself. */
  function farView(img, width) {
    var natural = parseInt(img.getAttribute("data-natural"), 10) || img.naturalWidth || 0;
    var sizes = (img.getAttribute("data-far") || "").split(" ").filter(Boolean).map(Number);
    if (width >= natural || !sizes.length) return img.getAttribute("data-src");
    var fits = sizes.filter(function (px) { return px <= width; });
    var px = fits.length ? fits[fits.length - 1] : sizes[0];
    return img.getAttribute("data-far-path").replace("{px}", String(px));
  }

  function initHybrids() {
    each(".fig-hybrid", function (fig) {
      var tools = fig.querySelector(".fig-tools");
      var slider = fig.querySelector(".size-slider");
      var output = fig.querySelector(".size-value");
      if (!slider) return;
      tools.hidden = false;
      function apply() {
        var width = parseInt(slider.value, 10);
        each(".hybrid-live img", function (img) {
          var src = farView(img, width);
          img.style.width = width + "px";
          if (img.getAttribute("src") !== src) img.setAttribute("src", src);
        }, fig);
        if (output) output.textContent = width + " px";
        slider.setAttribute("aria-valuetext", width + " pixels wide");
      }
      slider.addEventListener("input", apply);
    });
  }

  /* Sampling animations: the last frame as a still, then, when the reader asks (play or the frame
   * slider), a frame viewer over the strip PNG of all frames. Nothing heavy loads until then. */
  function initPlayers() {
    each(".gif-player", function (player) {
      var windowEl = player.querySelector(".gif-window");
      var controls = player.querySelector(".gif-controls");
      var poster = player.querySelector(".gif-poster");
      if (!windowEl || !controls || !poster) return;
      var anim = player.querySelector(".gif-anim");
      var slider = player.querySelector(".gif-slider");
      var label = player.querySelector(".gif-label");
      var button = player.querySelector(".gif-play");
      var frames = parseInt(player.getAttribute("data-frames"), 10) || 1;
      var fps = parseFloat(player.getAttribute("data-fps")) || 10;
      var labels = [];
      try { labels = JSON.parse(player.getAttribute("data-labels") || "[]"); } catch (e) { labels = []; }
      var frame = frames - 1, timer = null, hold = 0, strip = null, ready = false, playWhenReady = false;
      var holdTicks = Math.max(1, Math.round(fps * 1.2));
      var idle = "play (" + button.getAttribute("data-size") + ")";

      function show(i) {
        frame = Math.max(0, Math.min(frames - 1, i));
        player.style.setProperty("--frame", frame);
        slider.value = frame;
        var name = labels[frame] || "frame " + (frame + 1) + " of " + frames;
        label.textContent = name;
        slider.setAttribute("aria-valuetext", name);
      }
      function load() {
        if (strip) return;
        strip = document.createElement("img");
        strip.className = "pixelated gif-strip";
        strip.alt = windowEl.getAttribute("data-alt");
        strip.width = parseInt(windowEl.getAttribute("data-width"), 10);
        strip.height = parseInt(windowEl.getAttribute("data-height"), 10);
        strip.addEventListener("load", function () {
          ready = true;
          windowEl.hidden = false;
          poster.hidden = true;
          if (playWhenReady) play(); else pause();
        });
        button.textContent = "loading…";
        strip.src = windowEl.getAttribute("data-src");
        windowEl.appendChild(strip);
      }
      function tick() {
        if (frame >= frames - 1) {
          if (hold++ < holdTicks) return;
          hold = 0;
          show(0);
        } else {
          show(frame + 1);
        }
      }
      function play() {
        if (!ready) { playWhenReady = true; load(); return; }
        if (timer) return;
        if (frame >= frames - 1) { show(0); hold = 0; }
        timer = window.setInterval(tick, 1000 / fps);
        button.textContent = "pause";
        button.setAttribute("aria-label", "pause the animation");
      }
      function pause() {
        playWhenReady = false;
        if (timer) window.clearInterval(timer);
        timer = null;
        button.textContent = ready ? "play" : idle;
        button.setAttribute("aria-label", ready ? "play the animation" : "play the animation (loads " +
                            button.getAttribute("data-size") + ")");
      }
      anim.hidden = true;
      poster.hidden = false;
      controls.hidden = false;
      button.addEventListener("click", function () { if (timer || playWhenReady) pause(); else play(); });
      slider.addEventListener("input", function () { pause(); load(); show(parseInt(slider.value, 10)); });
      show(frames - 1);
      pause();
    });
  }

  /* Contents: the section in view is marked in the list (page.html collapses it on narrow screens). */
  function initToc() {
    var toc = document.querySelector(".toc");
    if (!toc) return;
    if (!("IntersectionObserver" in window)) return;
    var links = {};
    each("a[href^='#']", function (a) { links[a.getAttribute("href").slice(1)] = a; }, toc);
    var current = null;
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (!entry.isIntersecting) return;
        var link = links[entry.target.id];
        if (!link || link === current) return;
        if (current) current.removeAttribute("aria-current");
        link.setAttribute("aria-current", "location");
        current = link;
      });
    }, { rootMargin: "0px 0px -75% 0px" });
    each("main section[id], main h3[id]", function (el) { if (links[el.id]) observer.observe(el); });
  }

  /* A wide equation, table or algorithm scrolls sideways; one that does can take the keyboard focus, so that
   * keyboard users can scroll it too (only those: a focus stop on every equation would be noise). */
  function initScrollers() {
    function mark() {
      each(".math-display, .table-wrap, .algorithm, main > section > table", function (el) {
        if (el.scrollWidth > el.clientWidth + 1) el.setAttribute("tabindex", "0");
        else el.removeAttribute("tabindex");
      });
    }
    mark();
    window.addEventListener("resize", mark);
  }

  /* Search: lunr.js (vendored) and the build's index (a script, so that it loads from file:// too) are
   * fetched when the reader first types; results list up to ten sections, best first, each with the
   * sentence around the first word that matched. Enter opens the first, the arrows move, Escape closes. */
  function initSearch() {
    var form = document.querySelector(".site-search");
    if (!form) return;
    var input = form.querySelector("input"), panel = form.querySelector(".search-panel");
    var status = form.querySelector(".search-status"), list = form.querySelector(".search-list");
    var base = new URL(form.getAttribute("data-index"), location.href);
    var state = "idle", index = null, docs = null, editions = 1;

    function load(src, done) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = done;
      script.onerror = function () {
        state = "failed";
        status.textContent = "The search index could not be loaded; the contents of each page still work.";
      };
      document.head.appendChild(script);
    }
    function ready(then) {
      if (state === "ready") { then(); return; }
      if (state !== "idle") return;
      state = "loading";
      status.textContent = "Loading the search index\u2026";
      load(form.getAttribute("data-engine"), function () {
        load(form.getAttribute("data-index"), function () {
          index = window.SITE_SEARCH.index && window.lunr.Index.load(window.SITE_SEARCH.index);
          docs = window.SITE_SEARCH.docs;
          var seen = {};
          Object.keys(docs).forEach(function (k) { seen[docs[k].edition] = true; });
          editions = Object.keys(seen).length;
          state = "ready";
          update();
        });
      });
    }
    function snippet(text, words) {
      var lower = text.toLowerCase(), at = -1, word = "";
      words.some(function (w) { at = lower.indexOf(w); word = w; return at >= 0; });
      var p = document.createElement("span");
      p.className = "search-snippet";
      if (at < 0) { p.textContent = text.slice(0, 160) + (text.length > 160 ? "\u2026" : ""); return p; }
      var start = Math.max(0, at - 70), end = Math.min(text.length, at + word.length + 90);
      var mark = document.createElement("mark");
      mark.textContent = text.slice(at, at + word.length);
      p.appendChild(document.createTextNode((start ? "\u2026" : "") + text.slice(start, at)));
      p.appendChild(mark);
      p.appendChild(document.createTextNode(text.slice(at + word.length, end) + (end < text.length ? "\u2026" : "")));
      return p;
    }
    function update() {
      var q = input.value.trim();
      if (q.length < 2) { panel.hidden = true; return; }
      panel.hidden = false;
      if (state !== "ready") { ready(function () {}); return; }
      var words = window.lunr.tokenizer(q).map(String).filter(Boolean);
      var hits = words.length && index ? index.query(function (query) {
        words.forEach(function (w) {
          query.term(w, {boost: 10});  // the word itself, stemmed as the index was
          query.term(w, {wildcard: window.lunr.Query.wildcard.TRAILING, usePipeline: false});  // as typed so far
        });
      }) : [];
      list.textContent = "";
      hits.slice(0, 10).forEach(function (hit) {
        var doc = docs[hit.ref], li = document.createElement("li"), a = document.createElement("a");
        a.href = new URL(hit.ref, base).href;
        var title = document.createElement("span"), where = document.createElement("span");
        title.className = "search-title";
        title.textContent = doc.title;
        where.className = "search-where";
        where.textContent = doc.page + (editions > 1 ? " \u00b7 " + doc.edition + " edition" : "");
        a.appendChild(title);
        a.appendChild(where);
        a.appendChild(snippet(doc.text, words));
        a.addEventListener("click", function () { panel.hidden = true; });
        li.appendChild(a);
        list.appendChild(li);
      });
      status.textContent = hits.length === 0 ? "Nothing matches \u201c" + q + "\u201d." :
        hits.length === 1 ? "1 section matches." :
        (hits.length > 10 ? hits.length + " sections match; the best 10:" : hits.length + " sections match.");
    }
    function links() { return Array.prototype.slice.call(list.querySelectorAll("a")); }
    input.addEventListener("focus", function () { if (input.value.trim().length >= 2) update(); });
    input.addEventListener("input", update);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var first = links()[0];
      if (first) first.click();
    });
    form.addEventListener("keydown", function (event) {
      var all = links(), at = all.indexOf(document.activeElement);
      if (event.key === "Escape") { panel.hidden = true; input.focus(); }
      else if (event.key === "ArrowDown" && all.length) { event.preventDefault(); all[Math.min(at + 1, all.length - 1)].focus(); }
      else if (event.key === "ArrowUp" && at >= 0) { event.preventDefault(); (at === 0 ? input : all[at - 1]).focus(); }
    });
    document.addEventListener("click", function (event) { if (!form.contains(event.target)) panel.hidden = true; });
  }

  /* The live sampler: the controls show at once (their space is kept, so nothing moves later); the
   * worker, the runtime and the model load only when the button is pressed. The worker posts every
   * step; the canvases draw x_t and the predicted x0, one cell per digit. When a run ends the
   * sampler dispatches "live-sampler-done" on itself with the final images (the browser tests
   * compare them with Python's). */
  function liveUnsupported() {
    if (location.protocol === "file:") {
      return "The live sampler runs only when this page is served over HTTP (browsers do not load " +
             "WebAssembly into pages opened from files); the figures above show this model's samples.";
    }
    if (typeof WebAssembly !== "object" || typeof Worker !== "function") {
      return "This browser has no WebAssembly or Web Workers, which the live sampler needs; the figures " +
             "above show this model's samples.";
    }
    return "";
  }

  function drawCells(canvas, data, digits, cells, width, height) {
    var ctx = canvas.getContext("2d"), size = width * height;
    var image = ctx.createImageData(width * cells, height);
    for (var j = 0; j < digits.length; j++) {
      for (var p = 0; p < size; p++) {
        var v = Math.round(Math.max(0, Math.min(1, data[j * size + p])) * 255);
        var o = ((p / width | 0) * width * cells + digits[j] * width + p % width) * 4;
        image.data[o] = image.data[o + 1] = image.data[o + 2] = v;
        image.data[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  function initLiveSampler() {
    each(".live-sampler", function (box) {
      var form = box.querySelector(".live-controls");
      var status = box.querySelector(".live-status");
      var rows = box.querySelector(".live-rows");
      var xt = box.querySelector(".live-xt"), x0 = box.querySelector(".live-x0");
      var button = form.querySelector(".live-run");
      var gamma = form.elements.guidance, gammaOut = form.elements["guidance-value"];
      var cells = parseInt(box.getAttribute("data-classes"), 10);
      var width = xt.width / cells, height = xt.height;
      var why = liveUnsupported();
      if (why) { status.textContent = why; return; }
      var worker = null, ready = null, backend = "", runId = 0, running = false, digits = [], settings = "";
      var started = false, cancelled = false, loaded = "", chosen = false;
      var backends = form.elements.backend;
      status.textContent = "Press the button to load the sampler; nothing is downloaded before.";
      form.hidden = false;
      rows.hidden = false;
      gamma.addEventListener("input", function () { gammaOut.value = gamma.value; });

      function runtime() { return backends.options[backends.selectedIndex]; }
      function label() {
        return worker && loaded === backends.value ? "Sample" : "Load the sampler (" + runtime().getAttribute("data-download") + ") and sample";
      }
      backends.addEventListener("change", function () {
        chosen = true;
        if (!running) button.textContent = label();
      });
      // WebGPU is offered where the browser has an adapter (asking for one downloads nothing). A software
      // adapter is offered but not chosen for the reader: WebAssembly is faster than an emulated GPU.
      if (navigator.gpu) {
        navigator.gpu.requestAdapter().then(function (adapter) {
          if (!adapter) return;
          backends.querySelector("option[value=webgpu]").disabled = false;
          if (!(adapter.info && adapter.info.isFallbackAdapter) && !chosen && !running) {
            backends.value = "webgpu";
            button.textContent = label();
          }
        }, function () {});
      }

      function describe(step, steps) {
        var what = digits.length === cells ? "digits 0 to " + (cells - 1) : "the digit " + digits[0];
        return " of " + what + " (" + settings + "), after step " + step + " of " + steps + ".";
      }
      function load() {
        if (ready && loaded === backends.value) return ready;
        if (worker) worker.terminate(); // another backend is another build of the runtime
        var option = runtime();
        loaded = option.value;
        status.textContent = "Loading the runtime and the model (" + option.getAttribute("data-download") + ")…";
        worker = new Worker(box.getAttribute("data-worker"), {type: "module"});
        ready = new Promise(function (resolve, reject) {
          worker.addEventListener("message", function first(event) {
            if (event.data.type === "ready") { backend = event.data.backend; resolve(); }
            else if (event.data.type === "error") reject(new Error(event.data.message));
            else return;
            worker.removeEventListener("message", first);
          });
          worker.addEventListener("error", function () { reject(new Error("the worker could not start")); });
        });
        worker.addEventListener("message", onMessage);
        function absolute(path) { return new URL(path, location.href).href; }
        worker.postMessage({type: "load", model: absolute(box.getAttribute("data-model")),
                            settings: absolute(box.getAttribute("data-settings")), backend: option.value,
                            bundle: absolute(option.getAttribute("data-bundle")), binary: absolute(option.getAttribute("data-binary"))});
        return ready;
      }
      function finish() {
        running = false;
        started = false;
        button.textContent = label();
      }
      function onMessage(event) {
        var m = event.data;
        if (m.type === "step" && m.id === runId) {
          drawCells(xt, m.x, digits, cells, width, height);
          drawCells(x0, m.x0, digits, cells, width, height);
          status.textContent = "Step " + m.i + " of " + m.steps + " (t = " + m.t + "): " +
            m.msPerStep.toFixed(1) + " ms per step on " + backend + ".";
          if (m.i === m.steps || m.i % 10 === 0) {
            xt.setAttribute("aria-label", "The noisy images x_t" + describe(m.i, m.steps));
            x0.setAttribute("aria-label", "The predicted clean images" + describe(m.i, m.steps));
          }
        } else if (m.type === "done" && m.id === runId) {
          finish();
          status.textContent = "Done: " + m.steps + " steps in " + (m.totalMs / 1000).toFixed(1) + " s (" +
            m.msPerStep.toFixed(1) + " ms per step) on " + backend + ".";
          box.dispatchEvent(new CustomEvent("live-sampler-done", {detail: {
            x: Array.from(m.x), xT: Array.from(m.xT), digits: digits.slice(), steps: m.steps,
            msPerStep: m.msPerStep, totalMs: m.totalMs, backend: backend}}));
        } else if (m.type === "stopped" && m.id === runId) {
          finish();
          status.textContent = "Stopped; the images show the last step.";
        } else if (m.type === "error") {
          finish();
          status.textContent = "The sampler failed: " + m.message;
        }
      }
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (running) {
          if (started) worker.postMessage({type: "stop"});
          else cancelled = true; // still loading: the run will not start
          return;
        }
        var seedInput = form.elements.seed, seed = Number(seedInput.value);
        if (!Number.isInteger(seed) || seed < Number(seedInput.min) || seed > Number(seedInput.max)) {
          status.textContent = "The seed is a whole number from " + seedInput.min + " to " + seedInput.max + ".";
          seedInput.focus();
          return;
        }
        var choice = form.elements.digit.value;
        digits = [];
        if (choice === "all") { for (var d = 0; d < cells; d++) digits.push(d); } else digits.push(Number(choice));
        var steps = Number(form.elements.steps.value), g = Number(gamma.value);
        settings = "γ = " + g + ", " + steps + " steps, seed " + seed;
        running = true;
        cancelled = false;
        button.textContent = "Stop";
        [xt, x0].forEach(function (c) { c.getContext("2d").clearRect(0, 0, c.width, c.height); });
        load().then(function () {
          if (cancelled) {
            finish();
            status.textContent = "Stopped before the first step.";
            return;
          }
          started = true;
          runId += 1;
          worker.postMessage({type: "sample", id: runId, digits: digits, guidance: g, steps: steps, seed: seed});
        }, function (err) {
          worker.terminate();
          worker = null;
          ready = null;
          finish();
          status.textContent = "The sampler could not load: " + err.message;
        });
      });
    });
  }

  /* Smooth scrolling for links followed inside the page, from the first frame after the load: the
   * browser has scrolled to a deep link's fragment by then, at once (see .glide in style.css). */
  function initGlide() {
    function glide() {
      requestAnimationFrame(function () { document.documentElement.classList.add("glide"); });
    }
    if (document.readyState === "complete") glide();
    else window.addEventListener("load", glide);
  }

  function init() {
    initGlide();
    initSearch();
    initScrollers();
    initZoom();
    initAnagrams();
    initHybrids();
    initPlayers();
    initToc();
    initLiveSampler();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
