// The agent workspace's live socket and the few behaviours HTML cannot express.
//
// Fragments come from the server (page load, htmx form answers, socket
// pushes), all rendered from the same template partials. Each fragment's root
// says how to apply it (data-live="upsert" | "replace" | "remove"); this file
// only places them. It never builds markup from data, and inserts customer
// text only through textContent.
(function () {
  "use strict";

  var root = document.getElementById("workspace");
  if (!root) return;

  var conversationId = parseInt(root.dataset.conversation || "", 10) || null;
  var lastId = parseInt(root.dataset.lastEvent || "0", 10) || 0;
  // Ids applied recently: a catch-up re-reads a few below lastId (ids can
  // commit out of order) and these are skipped, here and on the server.
  var LOOKBACK = 50;
  var applied = new Set();
  var appliedLog = []; // every applied id, in order (tests read it)
  var socket = null;
  var retry = 0;
  var retryTimer = null;
  var status = document.getElementById("live-status");
  var unseenNew = 0;
  var baseTitle = document.title;
  // Between a hello and its "synced": events the tab missed while away,
  // which count in the title badge but pop up no notification each.
  var catchingUp = false;
  var typingTimer = null;
  // A hello the server refused (too many too fast) is sent again once it
  // allows one.
  var helloTimer = null;
  // Per inbox (stream): the last sequence applied with none missing below
  // it, and the sequences applied above that. A sequence past the next one
  // means a gap: events of one inbox can arrive out of order from different
  // servers, so the tab waits GAP_WAIT ms, then asks for what is still
  // missing. Reconnects ask from `contiguous`, never from the highest.
  var contiguous = JSON.parse(root.dataset.streams || "{}");
  var ahead = {};
  // Per stream: the newest sequence the server said exists ("heads"): a
  // lost last event leaves no later event to show the gap.
  var heads = {};
  var GAP_WAIT = 2000;
  var gapTimer = null;

  // --- Applying fragments ------------------------------------------------------

  function sortValue(el) {
    return parseFloat(el.dataset.sort || "0") || 0;
  }

  function insertSorted(container, el) {
    var desc = container.dataset.order === "desc";
    var value = sortValue(el);
    var children = container.children;
    for (var i = 0; i < children.length; i++) {
      var other = sortValue(children[i]);
      if (desc ? value > other : value < other) {
        container.insertBefore(el, children[i]);
        return;
      }
    }
    container.appendChild(el);
  }

  // A live list keeps the length of its page: rows pushed past it are the
  // ones a reload would not show, and every extra row is painted again each
  // time a row moves to the top.
  function trim(container) {
    var limit = parseInt(container.dataset.limit || "0", 10);
    while (limit && container.children.length > limit) {
      container.lastElementChild.remove();
    }
  }

  function applyFragments(html) {
    if (!html) return;
    var template = document.createElement("template");
    template.innerHTML = html;
    var elements = Array.prototype.slice.call(template.content.children);
    // Most pushes are inbox rows and bubbles without htmx attributes; walking
    // them for htmx costs more than placing them.
    var hasHtmx = /\shx-/.test(html);
    elements.forEach(function (el) {
      var mode = el.dataset.live;
      var existing = el.id ? document.getElementById(el.id) : null;
      if (mode === "remove") {
        if (existing) existing.remove();
        return;
      }
      if (existing) {
        if (mode === "upsert" && existing.dataset.sort !== el.dataset.sort) {
          existing.remove();
          existing = null;
        } else {
          keepState(existing, el);
          if (existing.closest("#thread") && sameShape(existing, el)) {
            // A bubble whose ticks or reactions changed is updated where it
            // is: the thread is a log, and a replaced bubble would be read
            // out again as a new message.
            syncInPlace(existing, el);
            el = existing;
          } else {
            existing.replaceWith(el);
          }
        }
      }
      if (!existing) {
        if (mode !== "upsert") return;
        var container = document.querySelector(el.dataset.liveInto);
        if (!container) return;
        insertSorted(container, el);
        trim(container);
        var empty = document.getElementById("inbox-empty");
        if (empty && container.id === "inbox-list") empty.remove();
      }
      if (hasHtmx && window.htmx) window.htmx.process(el);
      if (el.id === "composer") setUpComposer();
      // Only the newest bubble scrolls the thread: older pages load above
      // what the agent is reading, and a tick on an old bubble stays put.
      if (
        el.closest &&
        el.closest("#thread") &&
        el.dataset.live === "upsert" &&
        !el.nextElementSibling
      ) {
        scrollThread();
      }
      markCurrentRow();
      hideAssignToMe();
      paintLabels(el);
      // Only the new fragment's countdowns: the rest are current (the
      // timer ticks them), and rewriting every row's text per event costs
      // a busy inbox dozens of layouts a second.
      tick(el);
    });
  }

  // Whether two renderings of a fragment differ only in attributes and text.
  function sameShape(a, b) {
    if (a.nodeType !== b.nodeType) return false;
    if (a.nodeType !== Node.ELEMENT_NODE) return true;
    if (a.tagName !== b.tagName || a.childNodes.length !== b.childNodes.length) {
      return false;
    }
    for (var i = 0; i < a.childNodes.length; i++) {
      if (!sameShape(a.childNodes[i], b.childNodes[i])) return false;
    }
    return true;
  }

  function syncInPlace(a, b) {
    if (a.nodeType !== Node.ELEMENT_NODE) {
      if (a.nodeValue !== b.nodeValue) a.nodeValue = b.nodeValue;
      return;
    }
    Array.prototype.slice.call(a.attributes).forEach(function (attribute) {
      if (!b.hasAttribute(attribute.name)) a.removeAttribute(attribute.name);
    });
    Array.prototype.forEach.call(b.attributes, function (attribute) {
      if (a.getAttribute(attribute.name) !== attribute.value) {
        a.setAttribute(attribute.name, attribute.value);
      }
    });
    for (var i = 0; i < a.childNodes.length; i++) {
      syncInPlace(a.childNodes[i], b.childNodes[i]);
    }
  }

  function keepState(existing, replacement) {
    // An open reaction picker stays open when its message is re-rendered.
    var details = existing.querySelector("details[open]");
    if (details) {
      var same = replacement.querySelector("details." + details.className);
      if (same) same.open = true;
    }
  }

  // "Assign to me" is for agents it would change something for: the header
  // is shared by every tab, so each tab hides it for its own agent.
  function hideAssignToMe() {
    var header = document.getElementById("conv-header");
    var form = header && header.querySelector(".assign-me");
    if (form) form.hidden = header.dataset.assignee === root.dataset.user;
  }

  function scrollThread() {
    var thread = document.getElementById("thread");
    if (thread) thread.scrollTop = thread.scrollHeight;
  }

  function markCurrentRow() {
    if (!conversationId) return;
    var row = document.getElementById("row-" + conversationId);
    if (row && !row.classList.contains("current")) {
      row.classList.add("current");
      var link = row.querySelector("a");
      if (link) link.setAttribute("aria-current", "true");
    }
  }

  // --- The socket ----------------------------------------------------------------

  function setStatus(text, state) {
    if (!status) return;
    status.textContent = text;
    status.dataset.state = state;
    root.dataset.live = state;
  }

  // The tab holds every sequence of this stream up to `upto`.
  function advance(stream, upto) {
    var held = ahead[stream] || new Set();
    var position = Math.max(contiguous[stream] || 0, upto);
    while (held.has(position + 1)) position += 1;
    held.forEach(function (seq) {
      if (seq <= position) held.delete(seq);
    });
    contiguous[stream] = position;
    ahead[stream] = held;
  }

  function placeInStream(stream, seq) {
    if (!(stream in contiguous)) {
      // An inbox the page did not show (access given since): it starts here.
      contiguous[stream] = seq;
      return;
    }
    if (seq <= contiguous[stream]) return;
    if (seq === contiguous[stream] + 1) {
      advance(stream, seq);
      return;
    }
    (ahead[stream] = ahead[stream] || new Set()).add(seq);
    if (!gapTimer) gapTimer = setTimeout(askForGaps, GAP_WAIT);
  }

  function noteHead(stream, head) {
    if (!(stream in contiguous)) {
      contiguous[stream] = head;
    } else if (head > contiguous[stream]) {
      heads[stream] = Math.max(heads[stream] || 0, head);
      if (!gapTimer) gapTimer = setTimeout(askForGaps, GAP_WAIT);
    }
  }

  function askForGaps() {
    gapTimer = null;
    var streams = new Set(Object.keys(ahead).concat(Object.keys(heads)));
    streams.forEach(function (stream) {
      var held = ahead[stream] || new Set();
      var upto = held.size
        ? Math.min.apply(null, Array.from(held)) - 1
        : heads[stream] || 0;
      if (upto <= contiguous[stream]) return;
      send({
        type: "missing",
        stream: parseInt(stream, 10),
        after: contiguous[stream],
        upto: upto,
      });
    });
  }

  function hello() {
    clearTimeout(helloTimer);
    catchingUp = true;
    send({
      type: "hello",
      streams: contiguous,
      conversation: conversationId,
      filter: root.dataset.filter || "",
      visible: document.visibilityState === "visible",
    });
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(message));
    }
  }

  function connect() {
    clearTimeout(retryTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) return;
    if (navigator.onLine === false) {
      setStatus("Offline: changes will appear when you are back online", "offline");
      return;
    }
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + root.dataset.wsUrl);
    setStatus(retry ? "Reconnecting…" : "Connecting…", "connecting");
    socket.onopen = function () {
      retry = 0;
      hello();
    };
    socket.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handle(message);
    };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === 4401) {
        setStatus("Logged out: reload the page to log in", "closed");
        return;
      }
      setStatus("Reconnecting…", "connecting");
      retry = Math.min(retry + 1, 6);
      var delay = Math.min(30000, 500 * Math.pow(2, retry - 1)) * (0.5 + Math.random());
      retryTimer = setTimeout(connect, delay);
    };
  }

  function handle(message) {
    if (message.type === "event") {
      if (message.stream !== undefined) placeInStream(String(message.stream), message.seq);
      if (applied.has(message.id)) return;
      applied.add(message.id);
      appliedLog.push(message.id);
      if (message.id > lastId) lastId = message.id;
      if (applied.size > 4 * LOOKBACK) {
        applied.forEach(function (id) {
          if (id <= lastId - LOOKBACK) applied.delete(id);
        });
      }
      applyFragments(message.html);
      if (message.notify) notify(message.notify, catchingUp);
      if (message.inbound && document.visibilityState === "visible") {
        send({ type: "seen" });
      }
    } else if (message.type === "synced") {
      catchingUp = false;
      if (message.last > lastId) lastId = message.last;
      Object.keys(message.streams || {}).forEach(function (stream) {
        advance(stream, message.streams[stream]);
      });
      setStatus("Live", "live");
    } else if (message.type === "filled") {
      advance(String(message.stream), message.upto);
    } else if (message.type === "heads") {
      Object.keys(message.streams).forEach(function (stream) {
        noteHead(stream, message.streams[stream]);
      });
    } else if (message.type === "fragment") {
      applyFragments(message.html);
      // One timer, restarted by each keystroke note: a colleague who keeps
      // typing keeps showing as typing.
      if (message.typing) {
        clearTimeout(typingTimer);
        typingTimer = setTimeout(clearTyping, 6500);
      }
    } else if (message.type === "access") {
      var allowed = new Set(message.numbers.map(String));
      document.querySelectorAll("#inbox-list > li").forEach(function (row) {
        if (!allowed.has(row.dataset.number)) row.remove();
      });
    } else if (message.type === "reload") {
      location.reload();
    } else if (message.type === "error") {
      // rate_limited, or unavailable (the server's database): hello again.
      clearTimeout(helloTimer);
      helloTimer = setTimeout(function () {
        if (socket && socket.readyState === WebSocket.OPEN) hello();
      }, Math.ceil((message.retry_after || 1) * 1000));
    }
  }

  function clearTyping() {
    var presence = document.getElementById("presence");
    if (presence && presence.textContent.indexOf("typing") !== -1) {
      presence.textContent = presence.textContent.replace(/ · .* typing…/, "");
    }
  }

  window.addEventListener("offline", function () {
    if (socket) socket.close();
    setStatus("Offline: changes will appear when you are back online", "offline");
  });
  window.addEventListener("online", function () {
    retry = 0;
    connect();
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      clearBadge();
      if (socket && socket.readyState === WebSocket.OPEN) hello();
      else connect();
    }
  });
  window.addEventListener("focus", clearBadge);

  // --- Notifications and the title badge ------------------------------------------

  // Whether the agent has this tab in front of them: then the inbox's
  // unread counts say what is new, and the title and notifications stay quiet.
  function lookedAt() {
    return document.visibilityState === "visible" && document.hasFocus();
  }

  function clearBadge() {
    if (!lookedAt()) return;
    unseenNew = 0;
    document.title = baseTitle;
  }

  function notify(info, missed) {
    if (lookedAt()) return;
    unseenNew += 1;
    document.title = "(" + unseenNew + ") " + baseTitle;
    if (!missed && "Notification" in window && Notification.permission === "granted") {
      var note = new Notification(info.title, { body: info.body, tag: "conv-" + info.conversation });
      note.onclick = function () {
        window.focus();
        location.href = "/conversations/" + info.conversation + "/";
      };
    }
  }

  document.addEventListener(
    "click",
    function askOnce() {
      if ("Notification" in window && Notification.permission === "default") {
        Notification.requestPermission();
      }
      document.removeEventListener("click", askOnce, true);
    },
    true
  );

  // --- Countdowns of the reply windows --------------------------------------------

  function left(ms) {
    var minutes = Math.floor(ms / 60000);
    var hours = Math.floor(minutes / 60);
    if (hours >= 1) return hours + "h " + (minutes % 60) + "m";
    var seconds = Math.floor((ms % 60000) / 1000);
    return minutes + "m " + seconds + "s";
  }

  function tick(scope) {
    var now = Date.now();
    var countdowns = Array.prototype.slice.call(
      (scope && scope.querySelectorAll ? scope : document).querySelectorAll(
        "[data-countdown]"
      )
    );
    if (scope && scope.matches && scope.matches("[data-countdown]")) {
      countdowns.push(scope);
    }
    countdowns.forEach(function (el) {
      var until = parseInt(el.dataset.countdown, 10);
      if (!until) return;
      var label = el.dataset.countdownLabel;
      var text;
      if (until <= now) {
        text = (label ? label + " " : "window ") + "closed";
        el.classList.add("closed");
      } else {
        text = (label ? label + ": " : "") + left(until - now) + " left";
        el.classList.toggle("closing", until - now < 3600000);
      }
      // Unchanged text is left alone (no mutation, no layout).
      if (el.textContent !== text) el.textContent = text;
    });
    var composer = document.getElementById("composer");
    if (
      composer &&
      composer.dataset.windowOpen === "1" &&
      parseInt(composer.dataset.windowExpires, 10) <= now &&
      !composer.dataset.refreshing
    ) {
      // The window just closed: ask for the template picker.
      composer.dataset.refreshing = "1";
      fetch(composer.dataset.refreshUrl, { credentials: "same-origin" })
        .then(function (response) {
          return response.text();
        })
        .then(applyFragments);
    }
  }
  setInterval(function () {
    tick();
  }, 1000);

  // Labels carry their colour as data (the Content-Security-Policy allows no
  // style attributes); it is set here, as a CSS variable.
  function paintLabels(root) {
    if (!root.querySelectorAll) return;
    var labels = Array.prototype.slice.call(root.querySelectorAll("[data-label-color]"));
    if (root.matches && root.matches("[data-label-color]")) labels.push(root);
    labels.forEach(function (label) {
      label.style.setProperty("--label", label.dataset.labelColor);
    });
  }

  // The agent's time zone follows the browser's: told when they differ, the
  // next pages show times in it.
  function followBrowserZone() {
    var marker = document.getElementById("time-zone");
    if (!marker || !window.htmx) return;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && zone !== marker.dataset.zone) {
      window.htmx.ajax("POST", marker.dataset.url, {
        source: marker,
        values: { time_zone: zone },
        swap: "none",
      });
    }
  }

  // --- Forms: answers are fragments, applied like pushes --------------------------

  document.body.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    var elt = event.detail.elt;
    // "Load more conversations": the list keeps the longer length it now
    // shows (set before the rows are placed, which trims to it).
    if (event.detail.successful && elt.matches && elt.matches("button.load-more")) {
      var list = document.getElementById("inbox-list");
      list.dataset.limit = Number(list.dataset.limit) + Number(elt.dataset.pageSize);
    }
    var form = event.detail.elt.closest ? event.detail.elt.closest("form") : null;
    // Answers are fragments, refusals too, and a 502 when Meta did not take an
    // upload; other server errors are no fragments of ours.
    if (xhr && xhr.responseText && (xhr.status < 500 || xhr.status === 502)) {
      applyFragments(xhr.responseText);
    }
    // A menu whose form did its work closes (labels saved, agent chosen).
    var menu = form && form.closest("details.menu");
    if (event.detail.successful && menu) menu.open = false;
    if (event.detail.successful && form && form.hasAttribute("data-reset-on-success")) {
      form.reset();
      var quoting = form.querySelector(".quoting");
      if (quoting) quoting.hidden = true;
      var box = form.querySelector("textarea");
      if (box) box.focus();
    }
  });
  // 4xx answers carry an error fragment; let the handler above place it.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    event.detail.shouldSwap = false;
  });

  // --- The composer ---------------------------------------------------------------

  function setUpComposer() {
    var composer = document.getElementById("composer");
    if (!composer) return;
    var select = composer.querySelector(".template-select");
    if (select) {
      select.addEventListener("change", function () {
        composer.querySelectorAll(".template-form").forEach(function (form) {
          form.hidden = form.dataset.template !== select.value;
        });
      });
    }
    // A template parameter sent as text, an amount or a date: only the
    // chosen kind's inputs are shown, required and sent.
    composer.querySelectorAll(".parameter-kind select").forEach(function (kind) {
      kind.addEventListener("change", function () {
        var parameter = kind.closest(".template-parameter");
        parameter.querySelectorAll("[data-kind]").forEach(function (group) {
          var chosen = group.dataset.kind === kind.value;
          group.hidden = !chosen;
          group.querySelectorAll("input").forEach(function (input) {
            input.disabled = !chosen;
          });
        });
      });
    });
    var canned = composer.querySelector(".canned");
    if (canned && conversationId) {
      canned.addEventListener("change", function () {
        if (!canned.value) return;
        fetch("/conversations/" + conversationId + "/canned/" + canned.value + "/", {
          credentials: "same-origin",
        })
          .then(function (response) {
            return response.ok ? response.text() : "";
          })
          .then(function (text) {
            insertText(composer.querySelector("textarea"), text);
            canned.value = "";
          });
      });
    }
  }

  function insertText(box, text) {
    if (!box || !text) return;
    var start = box.selectionStart || box.value.length;
    var end = box.selectionEnd || box.value.length;
    box.value = box.value.slice(0, start) + text + box.value.slice(end);
    box.focus();
    box.selectionStart = box.selectionEnd = start + text.length;
  }

  // --- Canned replies offered as the agent types "/" ---------------------------------

  // The "/word" just before the caret, or null.
  function slashToken(box) {
    var before = box.value.slice(0, box.selectionStart);
    var match = /(^|\s)\/([-\w]*)$/.exec(before);
    if (!match) return null;
    return { start: before.length - match[2].length - 1, query: match[2].toLowerCase() };
  }

  function suggestions() {
    return document.getElementById("canned-suggestions");
  }

  function visibleOptions(list) {
    return Array.prototype.filter.call(list.children, function (option) {
      return !option.hidden;
    });
  }

  function select(list, option) {
    Array.prototype.forEach.call(list.children, function (other) {
      other.setAttribute("aria-selected", String(other === option));
    });
    var box = document.getElementById("reply-text");
    if (option) {
      option.scrollIntoView({ block: "nearest" });
      if (box) box.setAttribute("aria-activedescendant", option.id);
    } else if (box) {
      box.removeAttribute("aria-activedescendant");
    }
  }

  function offerCanned(box) {
    var list = suggestions();
    if (!list) return;
    var token = slashToken(box);
    if (!token) {
      closeCanned();
      return;
    }
    Array.prototype.forEach.call(list.children, function (option) {
      option.hidden = !(
        option.dataset.shortcut.indexOf(token.query) === 0 ||
        (token.query && option.dataset.title.indexOf(token.query) !== -1)
      );
    });
    var shown = visibleOptions(list);
    list.hidden = !shown.length;
    select(list, shown[0] || null);
  }

  function closeCanned() {
    var list = suggestions();
    if (!list || list.hidden) return;
    list.hidden = true;
    select(list, null);
  }

  function insertCanned(box, option) {
    var token = slashToken(box);
    closeCanned();
    fetch("/conversations/" + conversationId + "/canned/" + option.dataset.canned + "/", {
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.ok ? response.text() : "";
      })
      .then(function (text) {
        if (!text) return;
        // The "/word" typed becomes the reply's text.
        var end = box.selectionStart;
        var start = token ? token.start : end;
        box.value = box.value.slice(0, start) + text + box.value.slice(end);
        box.focus();
        box.selectionStart = box.selectionEnd = start + text.length;
      });
  }

  // The known shortcut a box holds and nothing else ("/hello"), or null.
  function bareShortcut(box) {
    var list = suggestions();
    var match = /^\s*\/([-\w]+)\s*$/.exec(box.value);
    if (!list || !match) return null;
    return list.querySelector('[data-shortcut="' + match[1] + '"]');
  }

  document.addEventListener("input", function (event) {
    if (event.target.id === "reply-text") offerCanned(event.target);
  });

  document.addEventListener("click", function (event) {
    var option = event.target.closest && event.target.closest("#canned-suggestions [data-canned]");
    if (option) insertCanned(document.getElementById("reply-text"), option);
  });

  var lastTyping = 0;
  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("textarea[data-enter-sends]")) return;
    var list = suggestions();
    if (list && !list.hidden) {
      var shown = visibleOptions(list);
      var current = list.querySelector('[aria-selected="true"]');
      var index = shown.indexOf(current);
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        var step = event.key === "ArrowDown" ? 1 : -1;
        select(list, shown[(index + step + shown.length) % shown.length]);
        return;
      }
      if ((event.key === "Enter" || event.key === "Tab") && current && !event.shiftKey) {
        event.preventDefault();
        insertCanned(box, current);
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        closeCanned();
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      // A known shortcut alone is never sent: it becomes its text.
      var shortcut = bareShortcut(box);
      if (shortcut) {
        box.setSelectionRange(box.value.length, box.value.length);
        insertCanned(box, shortcut);
        return;
      }
      if (box.value.trim() || box.form.querySelector("input[type=file]").value) {
        box.form.requestSubmit();
      }
      return;
    }
    var now = Date.now();
    if (now - lastTyping > 3000) {
      lastTyping = now;
      send({ type: "typing" });
    }
  });

  // --- Keyboard shortcuts (the "?" list in workspace.html names them) ---------------

  function typingInField(target) {
    return (
      target.isContentEditable ||
      /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName || "")
    );
  }

  function openRow(step) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#inbox-list > li"));
    if (!rows.length) return;
    var current = conversationId ? document.getElementById("row-" + conversationId) : null;
    var index = rows.indexOf(current);
    var next = rows[index === -1 ? 0 : Math.min(Math.max(index + step, 0), rows.length - 1)];
    if (next && next !== current) next.querySelector("a.row-link").click();
  }

  function clickIn(selector) {
    var target = document.querySelector(selector);
    if (target && !target.closest("[hidden]")) target.click();
  }

  function showShortcuts() {
    var dialog = document.getElementById("shortcuts-help");
    if (dialog && !dialog.open) dialog.showModal();
  }

  var SHORTCUTS = {
    j: function () {
      openRow(1);
    },
    k: function () {
      openRow(-1);
    },
    r: function () {
      var box = document.querySelector("#composer textarea, #composer select");
      if (box) box.focus();
    },
    n: function () {
      var disclosure = document.querySelector(".note-disclosure");
      if (!disclosure) return;
      disclosure.open = true;
      disclosure.querySelector("textarea").focus();
    },
    e: function () {
      clickIn('#conv-header button[data-shortcut="e"]');
    },
    a: function () {
      clickIn('#conv-header button[data-shortcut="a"]');
    },
    "/": function () {
      var sidebar = document.getElementById("sidebar");
      var search = document.getElementById("f-q");
      if (!search) return;
      if (!search.offsetParent && sidebar && sidebar.showPopover) sidebar.showPopover();
      search.focus();
      search.select();
    },
    "?": showShortcuts,
  };

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      document.querySelectorAll("details.menu[open]").forEach(function (menu) {
        menu.open = false;
      });
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    if (typingInField(event.target) || document.querySelector("dialog[open]")) return;
    var action = SHORTCUTS[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  var shortcutsButton = document.querySelector(".shortcuts-toggle");
  if (shortcutsButton) shortcutsButton.addEventListener("click", showShortcuts);

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target.closest) return;
    var insert = target.closest("[data-insert]");
    if (insert) {
      insertText(document.querySelector("#composer textarea"), insert.dataset.insert);
      return;
    }
    var quote = target.closest("[data-quote]");
    if (quote) {
      var form = document.querySelector("#composer .reply-form");
      var bubble = document.getElementById("msg-" + quote.dataset.quote);
      if (!form || !bubble) return;
      form.querySelector(".reply-to").value = quote.dataset.quote;
      var preview = form.querySelector(".quoting");
      var content = bubble.querySelector(".content");
      preview.querySelector(".quoting-text").textContent =
        "Replying to: " + (content ? content.textContent.trim().slice(0, 120) : "");
      preview.hidden = false;
      form.querySelector("textarea").focus();
      return;
    }
    if (target.closest(".quote-cancel")) {
      var replyForm = target.closest("form");
      replyForm.querySelector(".reply-to").value = "";
      replyForm.querySelector(".quoting").hidden = true;
      return;
    }
    // Rows keep the inbox's filters when they open a conversation.
    var link = target.closest("#inbox-list a.row-link");
    if (link && root.dataset.filter && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      location.href = link.getAttribute("href") + "?" + root.dataset.filter;
    }
  });

  // Filters apply as soon as one changes.
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () {
      select.form.requestSubmit();
    });
  });

  // --- Start ------------------------------------------------------------------------

  window.helpdeskLive = {
    applied: appliedLog,
    lastId: function () {
      return lastId;
    },
    streams: function () {
      return Object.assign({}, contiguous);
    },
    apply: applyFragments,
  };
  setUpComposer();
  markCurrentRow();
  hideAssignToMe();
  paintLabels(document);
  scrollThread();
  tick();
  followBrowserZone();
  connect();
})();
