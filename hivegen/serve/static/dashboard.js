// hivegen dashboard: the only script (CSP allows no other). Text from the server is
// added with textContent, never as HTML.
"use strict";

function streamJob(output) {
  const state = document.getElementById("job-state");
  const result = document.getElementById("result");
  output.textContent = "";
  const source = new EventSource(output.dataset.events);
  source.addEventListener("line", (event) => {
    output.append(JSON.parse(event.data) + "\n");
    output.scrollTop = output.scrollHeight;
  });
  source.addEventListener("done", (event) => {
    const done = JSON.parse(event.data);
    source.close();
    state.textContent = done.ok ? "done" : "failed";
    result.textContent = done.result;
    result.className = done.ok ? "ok" : "error";
    output.dataset.finished = "yes";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const output = document.getElementById("output");
  if (output && output.dataset.finished === "no") {
    streamJob(output);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
});
