// docstore pages: the upload page's drag and drop and per-file progress. No framework, no build
// step; loaded from our own origin only (the CSP allows no inline script).
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const input = document.getElementById("up-files");
  const drop = document.getElementById("drop");
  const list = document.getElementById("uploads");
  let dropped = [];

  ["dragenter", "dragover"].forEach(function (e) {
    drop.addEventListener(e, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (e) {
    drop.addEventListener(e, function (ev) { ev.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (ev) {
    dropped = dropped.concat(Array.from(ev.dataTransfer.files));
    drop.querySelector("p").textContent = dropped.map(function (f) { return f.name; }).join(", ");
  });
  drop.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); }
  });

  function send(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const status = document.createElement("span");
    status.className = "status";
    item.append(name, bar, status);
    list.append(item);
    const q = new URLSearchParams({
      patient: form.patient.value, exam: form.exam.value, kind: form.kind.value,
    });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents?" + q.toString());
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) bar.value = Math.round((100 * ev.loaded) / ev.total);
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) {
        bar.value = 100;
        const v = JSON.parse(xhr.responseText);
        const a = document.createElement("a");
        a.href = "/documentos/" + encodeURIComponent(v.document_id);
        a.textContent = v.document_id;
        status.append(a);
        item.className = "done";
        item.dataset.document = v.document_id;
      } else {
        let detail = "HTTP " + xhr.status;
        try { detail = JSON.parse(xhr.responseText).detail || detail; } catch (e) { /* not JSON */ }
        status.textContent = detail;
        item.className = "failed";
      }
    });
    xhr.addEventListener("error", function () { status.textContent = "network error"; item.className = "failed"; });
    xhr.send(file);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    const files = dropped.concat(Array.from(input.files));
    files.forEach(send);
    dropped = [];
    input.value = "";
  });
})();
