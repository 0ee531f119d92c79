// A build's console: its log so far, then each new line as it is written, from the
// server-sent events of /stream/<build-id>. Lines are added as text, never as markup.
"use strict";
(function () {
  const id = location.pathname.split("/").pop();
  const log = document.getElementById("log");
  const state = document.getElementById("console-state");
  document.getElementById("build").textContent = id;
  document.getElementById("plain").href = "/logs/" + id;
  let lines = 0;
  const source = new EventSource("/stream/" + id);
  source.onopen = () => { state.textContent = "following the live log"; };
  source.onmessage = (msg) => {
    const follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    log.appendChild(document.createTextNode(msg.data + "\n"));
    lines += 1;
    log.dataset.lines = String(lines);
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  };
  source.addEventListener("end", (msg) => {
    source.close();
    state.textContent = "finished: " + msg.data;
    state.className = "end-" + msg.data;
    log.dataset.result = msg.data;
  });
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) state.textContent = "reconnecting…";
  };
})();
