// iqa-study user-study page (no inline script: loaded under a strict Content-Security-Policy).
// Screens: instructions -> one trial at a time -> thank-you. The rater's token is the last part of the URL.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const token = decodeURIComponent(location.pathname.split("/")[2] || "");
  const api = (path) => "/api/" + encodeURIComponent(token) + "/" + path;
  const SCREENS = ["loading", "start", "trial", "end", "failure"];

  let state = null;      // the server's last answer: {done, total, trial}
  let trial = null;      // the trial on screen
  let shownAt = null;    // performance.now() when its images were all displayed (null: not yet)
  let busy = false;      // a vote is on its way: further choices are ignored
  let screen = "loading";
  let flicker = false;   // both images in one place, Space switches
  let flickerRight = false;
  const view = { s: 1, x: 0, y: 0 };

  function show(name) {
    for (const id of SCREENS) $(id).hidden = id !== name;
    screen = name;
  }

  function fail(text) {
    $("failure-text").textContent = text;
    show("failure");
  }

  function setStatus(text) { $("status").textContent = text; }

  async function fetchJSON(url, options) {
    const r = await fetch(url, Object.assign({ cache: "no-store", credentials: "omit" }, options || {}));
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    return { status: r.status, body: body };
  }

  function newKey() { // idempotency key of one vote (crypto.randomUUID needs a secure context; this does not)
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function init() {
    let res;
    try { res = await fetchJSON(api("state")); } catch (e) { return fail("The study server cannot be reached."); }
    if (res.status !== 200) return fail(res.body && res.body.error ? "This link is not valid: " + res.body.error : "HTTP " + res.status);
    state = res.body;
    if (!state.trial) return finish();
    $("n-total").textContent = String(state.total);
    $("ref-note").hidden = !state.trial.reference;
    if (state.done > 0) {
      $("resume").hidden = false;
      $("resume").textContent = "Welcome back: " + state.done + " of " + state.total + " answered. You continue where you stopped.";
      $("start-btn").firstChild.textContent = "Continue ";
    }
    show("start");
    $("start-btn").focus();
  }

  function startTrials() {
    if (screen !== "start") return;
    show("trial");
    present(state.trial);
  }

  function finish() {
    $("n-done").textContent = String(state.done);
    show("end");
  }

  function layout() {
    const panes = $("panes");
    panes.classList.remove("one", "two", "three");
    const withRef = !!(trial && trial.reference) && !flicker;
    $("pane-ref").hidden = !withRef;
    $("pane-right").hidden = flicker;
    panes.classList.add(flicker ? "one" : withRef ? "three" : "two");
    $("flicker-btn").setAttribute("aria-pressed", String(flicker));
    $("cap-left").textContent = flicker ? (flickerRight ? "Showing: RIGHT image (Space switches)" : "Showing: LEFT image (Space switches)") : "Left";
  }

  function loadImage(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve();
      img.onerror = () => reject(new Error("image"));
      img.src = src;
      if (img.complete && img.naturalWidth > 0) resolve();
    });
  }

  function setChoices(enabled) {
    $("choose-left").disabled = !enabled;
    $("choose-right").disabled = !enabled;
  }

  function present(t) {
    trial = t;
    shownAt = null;
    busy = false;
    flickerRight = false;
    setChoices(false);
    $("choose-left").classList.remove("picked");
    $("choose-right").classList.remove("picked");
    $("progress").textContent = (state.done + 1) + " / " + state.total;
    $("panes").style.visibility = "hidden";
    layout();
    resetView();
    const loads = [loadImage($("img-left"), api("image/" + t.left)), loadImage($("img-right"), api("image/" + t.right))];
    if (t.reference) loads.push(loadImage($("img-ref"), api("image/" + t.reference)));
    Promise.all(loads).then(() => {
      if (trial !== t) return;
      $("panes").style.visibility = "visible";
      shownAt = performance.now();
      setChoices(true);
      setStatus("");
    }, () => setStatus("An image failed to load: reload the page."));
  }

  function choose(side) {
    if (screen !== "trial" || busy || shownAt === null || !trial) return;
    busy = true;
    setChoices(false);
    $("choose-" + side).classList.add("picked");
    const body = { presentation: trial.id, choice: side, rt_ms: Math.max(0, Math.round(performance.now() - shownAt)), key: newKey() };
    send(body, 0);
  }

  async function send(body, attempt) {
    let res = null;
    try {
      res = await fetchJSON(api("vote"), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    } catch (e) { res = null; }
    if (res && res.status === 200) {
      state = res.body;
      return state.trial ? present(state.trial) : finish();
    }
    if (res && res.status >= 400 && res.status < 500) { // refused (nothing stored): take the server's view again
      setStatus("Not saved: " + (res.body && res.body.error ? res.body.error : "HTTP " + res.status));
      return resync();
    }
    // network trouble or a server error: the same request again, same key (the server counts it once)
    setStatus("Saving… (retry " + (attempt + 1) + ")");
    setTimeout(() => send(body, attempt + 1), Math.min(8000, 500 * Math.pow(2, attempt)));
  }

  async function resync() {
    try {
      const res = await fetchJSON(api("state"));
      if (res.status !== 200) return fail(res.body && res.body.error ? res.body.error : "HTTP " + res.status);
      state = res.body;
      return state.trial ? present(state.trial) : finish();
    } catch (e) { return fail("The study server cannot be reached; reload the page to continue."); }
  }

  // --- flicker, zoom, pan (the same transform on every image) ----------------------------------------------------
  function toggleFlicker() {
    flicker = !flicker;
    flickerRight = false;
    if (trial) $("img-left").src = api("image/" + trial.left);
    layout();
  }

  function flickerSwap() {
    if (!flicker || !trial) return;
    flickerRight = !flickerRight;
    $("img-left").src = api("image/" + (flickerRight ? trial.right : trial.left));
    layout();
  }

  function apply() {
    for (const id of ["img-left", "img-right", "img-ref"]) {
      const img = $(id);
      img.style.transform = "translate(" + view.x + "px, " + view.y + "px) scale(" + view.s + ")";
      img.classList.toggle("zoomed", view.s > 1);
    }
    $("zoom-level").textContent = Math.round(view.s * 100) + "%";
  }

  function resetView() { view.s = 1; view.x = 0; view.y = 0; apply(); }

  function zoom(factor, cx, cy) { // keep the image point under (cx, cy) (view pixels) in place
    const s = Math.min(16, Math.max(0.25, view.s * factor));
    if (cx === undefined) {
      const v = document.querySelector(".pane:not([hidden]) .view").getBoundingClientRect();
      cx = v.width / 2; cy = v.height / 2;
    }
    view.x = cx - (cx - view.x) * (s / view.s);
    view.y = cy - (cy - view.y) * (s / view.s);
    view.s = s;
    apply();
  }

  let drag = null;
  for (const v of document.querySelectorAll(".view")) {
    v.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY }; v.classList.add("dragging"); e.preventDefault(); });
    v.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = v.getBoundingClientRect();
      zoom(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
  }
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    view.x += e.clientX - drag.x; view.y += e.clientY - drag.y;
    drag = { x: e.clientX, y: e.clientY };
    apply();
  });
  window.addEventListener("mouseup", () => {
    drag = null;
    for (const v of document.querySelectorAll(".view")) v.classList.remove("dragging");
  });

  // --- input ------------------------------------------------------------------------------------------------------
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (screen === "start") {
      if (e.key === "Enter") { e.preventDefault(); startTrials(); }
      return;
    }
    if (screen !== "trial") return;
    switch (e.key) {
      case "ArrowLeft": case "1": if (!e.repeat) choose("left"); break;
      case "ArrowRight": case "2": if (!e.repeat) choose("right"); break;
      case "f": case "F": toggleFlicker(); break;
      case " ": flickerSwap(); break;
      case "+": case "=": zoom(1.25); break;
      case "-": case "_": zoom(0.8); break;
      case "0": resetView(); break;
      default: return;
    }
    e.preventDefault();
  });
  $("start-btn").addEventListener("click", startTrials);
  $("choose-left").addEventListener("click", () => choose("left"));
  $("choose-right").addEventListener("click", () => choose("right"));
  $("flicker-btn").addEventListener("click", (e) => { toggleFlicker(); e.currentTarget.blur(); });
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-reset").addEventListener("click", resetView);
  init();
})();
