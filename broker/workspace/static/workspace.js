// The queue's live updates: each server-sent "row" is a rendered table row,
// put above the first row of a less urgent rating (Red, then Amber, then Green).
(function () {
  var table = document.getElementById("queue");
  if (!table || !window.EventSource) { return; }
  var order = { RED: 0, AMBER: 1, GREEN: 2 };
  var body = table.tBodies[0];
  var live = document.getElementById("live");
  var since = table.getAttribute("data-version") || "0";
  var source = new EventSource("/workspace/queue/stream?since=" + encodeURIComponent(since));
  source.addEventListener("row", function (msg) {
    var data = JSON.parse(msg.data);
    var holder = document.createElement("tbody");
    holder.innerHTML = data.html;
    var row = holder.firstElementChild;
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
