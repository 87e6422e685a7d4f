// The queue's live updates: each server-sent "row" is a rendered table row,
// put above the first row of a less urgent rating (Red, then Amber, then Green);
// an "update" (a clock started) replaces the row already shown, and a newer
// version of a pattern alert replaces the older one's row. Every open
// clock's time left counts down in the page, as the server words it.
(function () {
  var table = document.getElementById("queue");
  if (!table) { return; }
  var order = { RED: 0, AMBER: 1, GREEN: 2 };
  var body = table.tBodies[0];
  var live = document.getElementById("live");

  function left(ms) {
    var mins = Math.floor(Math.abs(ms) / 60000);
    var text = mins >= 60 ? Math.floor(mins / 60) + "h " + ("0" + (mins % 60)).slice(-2) + "m"
                          : mins + "m";
    return ms >= 0 ? text + " left" : "overdue by " + text;
  }
  function tick() {
    var now = Date.now();
    var clocks = table.querySelectorAll("[data-due]");
    for (var i = 0; i < clocks.length; i++) {
      var due = Number(clocks[i].getAttribute("data-due"));
      clocks[i].textContent = left(due - now);
      if (due <= now) { clocks[i].classList.add("overdue"); }
    }
  }
  setInterval(tick, 15000);

  if (!window.EventSource) { return; }
  var since = table.getAttribute("data-version") || "0";
  var source = new EventSource("/workspace/queue/stream?since=" + encodeURIComponent(since));
  source.addEventListener("row", function (msg) {
    var data = JSON.parse(msg.data);
    var holder = document.createElement("tbody");
    holder.innerHTML = data.html;
    var row = holder.firstElementChild;
    var id = row.getAttribute("data-event");
    for (var j = 0; j < body.rows.length; j++) {
      if (body.rows[j].getAttribute("data-event") === id) {
        body.replaceChild(row, body.rows[j]);
        return;
      }
    }
    // A newer version of an alert already shown takes its place (re-ranked).
    var alert = row.getAttribute("data-alert");
    if (alert) {
      for (var k = body.rows.length - 1; k >= 0; k--) {
        if (body.rows[k].getAttribute("data-alert") === alert) { body.deleteRow(k); }
      }
    }
    row.classList.add("fresh");
    var rank = order[data.rag] === undefined ? 1 : order[data.rag];
    var before = null;
    for (var i = 0; i < body.rows.length; i++) {
      var m = /rag-(red|amber|green)/.exec(body.rows[i].className);
      var r = m ? order[m[1].toUpperCase()] : 1;
      if (r >= rank) { before = body.rows[i]; break; }
    }
    body.insertBefore(row, before);
    if (live) { live.textContent = "New " + data.rag + " concern received."; }
  });
})();
