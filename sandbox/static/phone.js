// The customer phone: plays simulated customers against the sandbox's control API.
// Every text from the helpdesk or a customer is shown with textContent, never as HTML.
"use strict";

const state = {
  numbers: [], chats: new Map(), current: null, after: 0, bubbles: new Map(), replyTo: null, editing: null,
};
const $ = (id) => document.getElementById(id);

function chatKey(phoneNumberId, waId) { return phoneNumberId + ":" + waId; }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

async function api(path, options) {
  const response = await fetch("/_sandbox/" + path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showError(message) { $("error").textContent = message || ""; }

function ensureChat(phoneNumberId, waId, name) {
  const key = chatKey(phoneNumberId, waId);
  if (!state.chats.has(key)) {
    state.chats.set(key, { key, phoneNumberId, waId, name: name || "+" + waId, fromAd: false, items: [] });
    renderChatList();
  }
  return state.chats.get(key);
}

function renderChatList() {
  const list = $("chat-list");
  list.replaceChildren();
  for (const chat of state.chats.values()) {
    const item = el("li");
    const button = el("button", "", chat.name + " (+" + chat.waId + ")");
    button.type = "button";
    button.setAttribute("aria-current", String(chat.key === state.current));
    button.addEventListener("click", () => selectChat(chat.key));
    item.append(button);
    list.append(item);
  }
}

function selectChat(key) {
  state.current = key;
  const chat = state.chats.get(key);
  // As on a customer's phone: the business's name on top (the name the
  // helpdesk gives the number), the customer being played below it.
  const number = state.numbers.find((n) => n.phone_number_id === chat.phoneNumberId);
  const business = number ? number.verified_name : chat.phoneNumberId;
  $("chat-title").textContent = business;
  $("chat-avatar").textContent = business.trim().charAt(0).toUpperCase() || "?";
  $("chat-subtitle").textContent =
    (number ? number.display_phone_number + " · " : "") + "you are " + chat.name;
  for (const id of ["message", "attachment", "send", "send-location", "send-contact", "share-history"]) {
    $(id).disabled = false;
  }
  stopQuoting();
  document.body.classList.add("in-chat");
  renderChatList();
  const list = $("messages");
  list.replaceChildren();
  for (const item of chat.items) list.append(item);
  list.scrollTop = list.scrollHeight;
}

function numberLabel(phoneNumberId) {
  const number = state.numbers.find((n) => n.phone_number_id === phoneNumberId);
  return number ? number.verified_name + " " + number.display_phone_number : phoneNumberId;
}

// A bubble joins its chat in time order (bubble.at, in seconds): past
// messages shared from the business app go before newer ones.
function addBubble(chat, bubble, wamid) {
  if (wamid) state.bubbles.set(wamid, bubble);
  const later = chat.items.findIndex((item) => bubble.at !== undefined && item.at > bubble.at);
  if (later >= 0) {
    chat.items.splice(later, 0, bubble);
    if (chat.key === state.current) $("messages").insertBefore(bubble, chat.items[later + 1]);
    return;
  }
  chat.items.push(bubble);
  if (chat.key === state.current) {
    $("messages").append(bubble);
    $("messages").scrollTop = $("messages").scrollHeight;
  }
}

function meta(bubble, text) {
  const line = el("span", "meta");
  const ticks = el("span", "ticks", text);
  line.append(ticks);
  bubble.append(line);
  bubble.ticks = ticks;
}

// --- what the customer sends -------------------------------------------------

function summariseCustomerMessage(message) {
  const type = message.type;
  if (type === "text") return message.text.body;
  if (type === "location") {
    const place = message.location;
    return "📍 " + (place.name || "Location") + (place.address ? ", " + place.address : "");
  }
  if (type === "contacts") {
    return "👤 " + message.contacts.map((card) => (card.name || {}).formatted_name).join(", ");
  }
  if (type === "reaction") return "You reacted " + (message.reaction.emoji || "(removed)");
  if (type === "interactive") {
    const reply = message.interactive[message.interactive.type] || {};
    return reply.title || "(form sent)";
  }
  if (type === "button") return message.button.text;
  const media = message[type] || {};
  return "[" + type + "] " + (media.caption || media.filename || "");
}

async function sendCustomerMessage(chat, description) {
  showError("");
  const first = chat.items.every((item) => !item.classList.contains("customer"));
  const body = { phone_number_id: chat.phoneNumberId, name: chat.name, ...description };
  if (first && chat.fromAd) body.referral = true;
  try {
    const result = await api("customers/" + encodeURIComponent(chat.waId) + "/messages", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (result.webhook_status !== 200) {
      showError("The helpdesk answered the webhook with " + (result.webhook_status || "no response"));
    }
  } catch (error) {
    showError(error.message);
  }
}

function renderCustomerMessage(event) {
  const message = event.message;
  if (message.type === "edit" || message.type === "revoke") {
    renderChange(message);
    return;
  }
  const chat = ensureChat(event.phone_number_id, event.wa_id, event.name);
  const bubble = el("li", "bubble customer");
  bubble.at = Number(message.timestamp);
  const quoted = message.context && state.bubbles.get(message.context.id);
  if (quoted) bubble.append(el("span", "quote", quoted.summary || ""));
  bubble.text = el("span", "", summariseCustomerMessage(message));
  bubble.summary = bubble.text.textContent;
  bubble.append(bubble.text);
  meta(bubble, "✓ sent to the helpdesk");
  if (message.type !== "reaction") addChangeActions(bubble, message, chat);
  addBubble(chat, bubble, message.id);
}

// What a customer does to a message of their own: edit its text, or delete it.
function addChangeActions(bubble, message, chat) {
  const actions = el("div", "actions");
  if (message.type === "text") {
    actions.append(replyButton("Edit", () => startEditing(message.id, bubble.summary)));
  }
  actions.append(replyButton("Delete", () => sendCustomerMessage(chat, {
    type: "revoke", message_id: message.id,
  })));
  bubble.append(actions);
}

// Meta's edit or revoke of an earlier message, shown on its bubble.
function renderChange(message) {
  const change = message[message.type];
  const bubble = state.bubbles.get(change.original_message_id);
  if (!bubble || !bubble.text) return;
  const actions = bubble.querySelector(".actions");
  if (message.type === "revoke") {
    bubble.text.textContent = "You deleted this message";
    bubble.classList.add("deleted");
    if (actions) actions.remove();
  } else {
    bubble.text.textContent = summariseCustomerMessage(change.message);
    bubble.summary = bubble.text.textContent;
    const line = bubble.querySelector(".meta");
    if (line && !line.querySelector(".edited")) line.prepend(el("span", "edited", "edited · "));
  }
}

function startEditing(wamid, summary) {
  stopQuoting();
  state.editing = wamid;
  $("quoting-text").textContent = "Editing: " + summary;
  $("quoting").hidden = false;
  $("message").value = summary;
  $("message").focus();
}

// Past chats the business shared from its app, as they were on the phone.
function renderHistory(event) {
  const chat = ensureChat(event.phone_number_id, event.wa_id, event.name);
  for (const message of event.messages) {
    const fromBusiness = Boolean(message.to);
    const bubble = el("li", "bubble " + (fromBusiness ? "business" : "customer"));
    bubble.at = Number(message.timestamp);
    bubble.text = el("span", "", summariseCustomerMessage(message));
    bubble.summary = bubble.text.textContent;
    bubble.append(bubble.text);
    const when = new Date(Number(message.timestamp) * 1000);
    meta(bubble, "from the chat history · " + when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    if (!fromBusiness) addChangeActions(bubble, message, chat);
    addBubble(chat, bubble, message.id);
  }
}

// --- what the business sends -----------------------------------------------

function replyButton(label, onTap) {
  const button = el("button", "", label);
  button.type = "button";
  button.addEventListener("click", onTap);
  return button;
}

function renderBusinessContent(bubble, message, chat) {
  const body = message.body;
  const type = message.type;
  const content = body[type] || {};
  const actions = el("div", "actions");
  if (type === "text") {
    bubble.append(el("span", "", content.body));
  } else if (type === "template" && message.template) {
    const rendered = message.template;
    if (rendered.header) bubble.append(el("span", "header", rendered.header));
    bubble.append(el("span", "", rendered.body));
    if (rendered.footer) bubble.append(el("span", "footer", rendered.footer));
    for (const button of rendered.buttons) {
      if (button.type !== "QUICK_REPLY") continue;
      actions.append(replyButton(button.text, () => sendCustomerMessage(chat, {
        type: "button", text: button.text, payload: button.payload, reply_to: message.wamid,
      })));
    }
  } else if (type === "interactive") {
    if (content.header && content.header.text) bubble.append(el("span", "header", content.header.text));
    bubble.append(el("span", "", (content.body || {}).text));
    if (content.footer) bubble.append(el("span", "footer", content.footer.text));
    const action = content.action || {};
    if (content.type === "button") {
      for (const button of action.buttons || []) {
        const reply = button.reply || {};
        actions.append(replyButton(reply.title, () => sendCustomerMessage(chat, {
          type: "button_reply", id: reply.id, title: reply.title, reply_to: message.wamid,
        })));
      }
    } else if (content.type === "list") {
      for (const section of action.sections || []) {
        for (const row of section.rows || []) {
          actions.append(replyButton(row.title, () => sendCustomerMessage(chat, {
            type: "list_reply", id: row.id, title: row.title, description: row.description, reply_to: message.wamid,
          })));
        }
      }
    } else if (content.type === "cta_url") {
      const parameters = action.parameters || {};
      const url = String(parameters.url || "");
      if (/^https?:\/\//.test(url)) {
        const link = el("a", "", parameters.display_text || url);
        link.href = url;
        link.rel = "noopener noreferrer";
        link.target = "_blank";
        actions.append(link);
      }
    } else if (content.type === "flow") {
      const parameters = action.parameters || {};
      actions.append(replyButton(parameters.flow_cta || "Open form", () => sendCustomerMessage(chat, {
        type: "nfm_reply", reply_to: message.wamid,
        response_json: { flow_token: parameters.flow_token || "", answered_in: "sandbox" },
      })));
    }
  } else if (type === "reaction") {
    bubble.append(el("span", "", "Reacted " + (content.emoji || "(removed)") + " to a message"));
  } else if (type === "location") {
    bubble.append(el("span", "", "📍 " + (content.name || "") + " " + content.latitude + ", " + content.longitude));
  } else if (type === "contacts") {
    const names = (body.contacts || []).map((card) => (card.name || {}).formatted_name);
    bubble.append(el("span", "", "Contact card: " + names.join(", ")));
  } else {
    bubble.append(el("span", "", "[" + type + "] " + (content.caption || content.filename || "")));
    if (content.id) {
      const link = el("a", "", "open " + type);
      link.href = "/_sandbox/media/" + encodeURIComponent(content.id);
      link.target = "_blank";
      actions.append(link);
    } else if (/^https?:\/\//.test(String(content.link || ""))) {
      const link = el("a", "", "open " + type);
      link.href = content.link;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      actions.append(link);
    }
  }
  if (actions.childElementCount) bubble.append(actions);
}

function renderBusinessMessage(event) {
  const message = event.message;
  const chat = ensureChat(event.phone_number_id, event.wa_id);
  const bubble = el("li", "bubble business");
  bubble.at = event.time;
  renderBusinessContent(bubble, message, chat);
  bubble.summary = Array.from(bubble.children).map((child) => child.textContent).join(" ").slice(0, 100);
  if (message.type !== "reaction") addReplyActions(bubble, message, chat);
  meta(bubble, "accepted");
  addBubble(chat, bubble, message.wamid);
  $("typing").hidden = true;
}

// What a customer does to a business's message: quote it, or react to it.
function addReplyActions(bubble, message, chat) {
  let actions = bubble.querySelector(".actions");
  if (!actions) {
    actions = el("div", "actions");
    bubble.append(actions);
  }
  actions.append(replyButton("Reply", () => startQuoting(message.wamid, bubble.summary)));
  actions.append(replyButton("React 👍", () => sendCustomerMessage(chat, {
    type: "reaction", message_id: message.wamid, emoji: "👍",
  })));
}

function startQuoting(wamid, summary) {
  state.replyTo = wamid;
  $("quoting-text").textContent = "Replying to: " + summary;
  $("quoting").hidden = false;
  $("message").focus();
}

function stopQuoting() {
  state.replyTo = null;
  state.editing = null;
  $("quoting").hidden = true;
}

const TICKS = { sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read", failed: "✗ failed" };

function renderStatus(event) {
  const bubble = state.bubbles.get(event.wamid);
  if (!bubble || !bubble.ticks) return;
  bubble.ticks.textContent = TICKS[event.status] || event.status;
  bubble.ticks.classList.toggle("read", event.status === "read");
}

function renderRead(event) {
  // Meta marks the message and every earlier one in the chat as read.
  const chat = state.chats.get(chatKey(event.phone_number_id, event.wa_id));
  if (!chat) return;
  for (const item of chat.items) {
    if (item.classList.contains("customer") && item.ticks) {
      item.ticks.textContent = "✓✓ read by the helpdesk";
      item.ticks.classList.add("read");
    }
  }
  if (event.kind === "typing" && chat.key === state.current) {
    $("typing").hidden = false;
    setTimeout(() => { $("typing").hidden = true; }, 25000);
  }
}

const RENDERERS = {
  customer_message: renderCustomerMessage,
  business_message: renderBusinessMessage,
  status: renderStatus,
  read: renderRead,
  typing: renderRead,
  history: renderHistory,
};

async function pollEvents() {
  for (;;) {
    try {
      const result = await api("events?timeout=25&after=" + state.after);
      for (const event of result.events) {
        state.after = Math.max(state.after, event.seq);
        const render = RENDERERS[event.kind];
        if (render) render(event);
      }
    } catch (error) {
      showError("Lost contact with the sandbox: " + error.message);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

// --- controls ------------------------------------------------------------------

async function startChat(event) {
  event.preventDefault();
  const waId = $("customer-number").value.replace(/\D/g, "");
  const name = $("customer-name").value.trim();
  const chat = ensureChat($("business").value, waId, name);
  chat.name = name;
  chat.fromAd = Boolean(event.submitter && event.submitter.id === "start-from-ad");
  try {
    await api("customers", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ wa_id: waId, name }),
    });
  } catch (error) {
    showError(error.message);
  }
  selectChat(chat.key);
  $("message").focus();
}

async function send(event) {
  event.preventDefault();
  const chat = state.chats.get(state.current);
  if (!chat) return;
  const text = $("message").value.trim();
  const file = $("attachment").files[0];
  if (file) {
    const form = new FormData();
    form.append("phone_number_id", chat.phoneNumberId);
    form.append("file", file);
    try {
      const media = await api("media", { method: "POST", body: form });
      const type = file.type.startsWith("image/") ? "image" : "document";
      await sendCustomerMessage(chat, { type, media_id: media.id, caption: text, filename: file.name });
    } catch (error) {
      showError(error.message);
    }
    $("attachment").value = "";
  } else if (text && state.editing) {
    await sendCustomerMessage(chat, { type: "edit", message_id: state.editing, text });
  } else if (text) {
    const description = { type: "text", text };
    if (state.replyTo) description.reply_to = state.replyTo;
    await sendCustomerMessage(chat, description);
  }
  $("message").value = "";
  stopQuoting();
}

// The helpdesk's business clock (sandbox/clock.py): its hours read as at
// another moment, so a customer writing "at night" gets the away reply now.
const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

function wallTime(iso) {
  // The helpdesk answers in the hours' zone: show that wall time as written.
  if (!iso) return "";
  const [date, time] = [iso.slice(0, 10), iso.slice(11, 16)];
  const [y, m, d] = date.split("-").map(Number);
  return WEEKDAYS[new Date(Date.UTC(y, m - 1, d)).getUTCDay()] + " " + date + " " + time;
}

function showClock(reading) {
  const line = $("clock-state");
  const shifted = reading.shift_seconds !== 0;
  const when = wallTime(reading.now) + " (" + reading.time_zone + (shifted ? ", pretended" : ", real time") + ")";
  line.classList.toggle("closed", reading.open === false);
  if (!reading.hours) {
    line.textContent = "This number follows no business hours (set them in the helpdesk's admin). It is " + when + ".";
    return;
  }
  line.textContent = "“" + reading.hours.name + "”: " + when + ", " +
    (reading.open ? "open until " + wallTime(reading.next_closing) : "closed; opens " + wallTime(reading.next_opening)) + ".";
  $("clock-at").value = reading.now.slice(0, 16);
}

async function clock(move) {
  const phoneNumberId = $("business").value;
  if (!phoneNumberId) return;
  try {
    showClock(await api("business-clock", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ phone_number_id: phoneNumberId, ...move }),
    }));
  } catch (error) {
    $("clock-state").classList.remove("closed");
    $("clock-state").textContent = error.message;
  }
}

function initClock() {
  $("clock-closed").addEventListener("click", () => clock({ jump: "closed" }));
  $("clock-open").addEventListener("click", () => clock({ jump: "open" }));
  $("clock-reset").addEventListener("click", () => clock({ reset: true }));
  $("clock-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clock({ at: $("clock-at").value });
  });
  $("business").addEventListener("change", () => clock({}));
  clock({});
}

async function init() {
  $("start-form").addEventListener("submit", startChat);
  $("composer").addEventListener("submit", send);
  $("quote-cancel").addEventListener("click", stopQuoting);
  $("back").addEventListener("click", () => document.body.classList.remove("in-chat"));
  $("send-location").addEventListener("click", () => {
    const chat = state.chats.get(state.current);
    if (chat) sendCustomerMessage(chat, {
      type: "location",
      location: { latitude: 52.5219, longitude: 13.4132, name: "Alexanderplatz", address: "10178 Berlin" },
    });
  });
  $("send-contact").addEventListener("click", () => {
    const chat = state.chats.get(state.current);
    if (chat) sendCustomerMessage(chat, { type: "contacts" });
  });
  $("share-history").addEventListener("click", async () => {
    const chat = state.chats.get(state.current);
    if (!chat) return;
    showError("");
    try {
      const result = await api("customers/" + encodeURIComponent(chat.waId) + "/history", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ phone_number_id: chat.phoneNumberId }),
      });
      if (result.webhook_status !== 200) {
        showError("The helpdesk answered the webhook with " + (result.webhook_status || "no response"));
      }
    } catch (error) {
      showError(error.message);
    }
  });
  try {
    state.numbers = (await api("numbers")).numbers;
  } catch (error) {
    showError(error.message);
  }
  for (const number of state.numbers) {
    const option = el("option", "", number.verified_name + " " + number.display_phone_number);
    option.value = number.phone_number_id;
    $("business").append(option);
  }
  initClock();
  pollEvents();
}

document.addEventListener("DOMContentLoaded", init);
