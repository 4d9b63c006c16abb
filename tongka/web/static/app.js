// Progressive enhancement only: every page works without this file.
// 1. Uploads send the file's bytes with a progress bar (XMLHttpRequest upload progress).
// 2. A running settlement job is followed until it is done, then the page reloads.
// 3. Framed statements get the pages' narrow-screen style and grow to their content's height.
"use strict";

function csrfOf(form) {
  const field = form.querySelector("input[name=csrf]");
  return field ? field.value : "";
}

function enhanceUpload(form) {
  const file = form.querySelector("input[type=file]");
  const box = form.querySelector("[data-progress-box]");
  const bar = form.querySelector("[data-progress]");
  const text = form.querySelector("[data-progress-text]");
  const error = form.querySelector("[data-upload-error]");
  form.addEventListener("submit", (event) => {
    if (!file.files.length) return;
    event.preventDefault();
    const chosen = file.files[0];
    const params = new URLSearchParams({ name: chosen.name, format: form.querySelector("select[name=format]").value });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action + "?" + params.toString());
    xhr.setRequestHeader("X-CSRF-Token", csrfOf(form));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    box.hidden = false; error.hidden = true; bar.value = 0;
    form.querySelector("button[type=submit]").disabled = true;
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      bar.value = Math.round((100 * e.loaded) / e.total);
      text.textContent = bar.value + "% of " + chosen.size.toLocaleString() + " bytes";
    });
    xhr.upload.addEventListener("load", () => { bar.value = 100; text.textContent = "received; checking the rows…"; });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON: shown below */ }
      if (xhr.status >= 200 && xhr.status < 300 && body.url) { window.location.assign(body.url); return; }
      error.textContent = "The file was refused: " + (body.detail || xhr.statusText) + (body.code ? " [" + body.code + "]" : "");
      error.hidden = false; box.hidden = true;
      form.querySelector("button[type=submit]").disabled = false;
    });
    xhr.addEventListener("error", () => {
      error.textContent = "The upload did not reach the server; try again.";
      error.hidden = false; box.hidden = true;
      form.querySelector("button[type=submit]").disabled = false;
    });
    xhr.send(chosen);
  });
}

function followJob(box) {
  const text = box.querySelector("[data-job-text]");
  const poll = () => {
    fetch(box.dataset.job, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((job) => {
        text.textContent = job.state + ": " + (job.error_code ? job.error_code + " " + (job.error || "") : job.progress);
        box.dataset.jobState = job.state;
        if (job.state === "succeeded" || job.state === "failed") window.location.reload();
        else window.setTimeout(poll, 700);
      })
      .catch(() => window.setTimeout(poll, 2000));
  };
  poll();
}

function fitFrame(frame) {
  const fit = () => {
    let doc;
    try { doc = frame.contentDocument; } catch (_) { return; }
    if (!doc || !doc.head) return;
    if (!doc.querySelector("link[data-frame-style]")) {
      const link = doc.createElement("link");
      link.rel = "stylesheet"; link.href = "/static/statement-frame.css"; link.dataset.frameStyle = "1";
      link.addEventListener("load", () => { frame.style.height = doc.documentElement.scrollHeight + 24 + "px"; });
      doc.head.appendChild(link);
    }
    frame.style.height = doc.documentElement.scrollHeight + 24 + "px";
  };
  frame.addEventListener("load", fit);
  window.addEventListener("resize", fit);
  if (frame.contentDocument && frame.contentDocument.readyState === "complete") fit();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-upload]").forEach(enhanceUpload);
  document.querySelectorAll("[data-job]").forEach(followJob);
  document.querySelectorAll("iframe[data-frame]").forEach(fitFrame);
});
