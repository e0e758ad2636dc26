// Tally's reference web page: a comment section on the command and query APIs, no build step.
// What it shows (docs/frontend.md): bearer tokens, Idempotency-Key on every write, optimistic
// votes, min_position as a session token, signed cursors for infinite scroll, live updates
// over Server-Sent Events, and problem+json errors.

const $ = (selector, root = document) => root.querySelector(selector);
const thread = new URLSearchParams(location.search).get("c") || "demo";
const session = {
  config: null,
  user: sessionStorage.getItem("tally.user"),
  token: sessionStorage.getItem("tally.token"),
  // The highest position this tab has seen: reads reflect at least that much. Kept in
  // sessionStorage, so a reload of the page still shows the user's own writes.
  seen: Number(sessionStorage.getItem("tally.seen")) || 0,
  sort: "top",
  cursor: null,
  loading: false,
  count: 0, // comments in the thread, replies included
  counted: new Set(), // the ids counted since the last full load
  comments: new Map(), // id -> {data, element}
};

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

function see(position) {
  if (Number.isFinite(position) && position > session.seen) {
    session.seen = position;
    sessionStorage.setItem("tally.seen", String(position));
  }
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// One call to an API. Writes carry an Idempotency-Key (the same one on a retry); reads carry
// the session's position. 503/504 are retried after Retry-After (or a short pause).
async function call(base, path, { method = "GET", body, key, session: consistent = true } = {}) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (key) headers["Idempotency-Key"] = key;
  if (method === "GET" && consistent && session.seen) headers["X-Tally-Min-Position"] = String(session.seen);
  for (let attempt = 0; ; attempt++) {
    const reply = await fetch(base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if ((reply.status === 503 || reply.status === 504) && attempt < 3) {
      const wait = Number(reply.headers.get("Retry-After") || "0.5") * 1000;
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 3000)));
      continue;
    }
    const text = await reply.text();
    const data = text ? JSON.parse(text) : null;
    if (!reply.ok) throw new ApiError(reply.status, data || {});
    see(Number(reply.headers.get("X-Tally-Position")));
    if (data && Number.isFinite(data.position)) see(data.position);
    return data;
  }
}

const command = (path, options) => call(session.config.command_api, path, options);
const query = (path, options) => call(session.config.query_api, path, options);

window.tallyErrors = []; // what the page has shown the user (the browser test reads it)

function showError(error) {
  const box = $("#error");
  box.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error);
  window.tallyErrors.push(box.textContent);
  box.hidden = false;
  setTimeout(() => (box.hidden = true), 5000);
}

// ---- rendering ------------------------------------------------------------------------------

function render(data) {
  const element = $("#comment-template").content.firstElementChild.cloneNode(true);
  element.dataset.id = data.id;
  session.comments.set(data.id, { data, element });
  paint(data.id);
  $(".up", element).addEventListener("click", () => vote(data.id, 1));
  $(".down", element).addEventListener("click", () => vote(data.id, -1));
  $(".reply", element).addEventListener("click", () => {
    const form = $(".reply-form", element);
    form.hidden = !form.hidden || !session.token;
    if (!session.token) showError("sign in to reply");
  });
  $(".reply-form", element).addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("textarea", event.target);
    post(box.value, data.id).then(() => {
      box.value = "";
      event.target.hidden = true;
    }, showError);
  });
  $(".show-replies", element).addEventListener("click", () => loadReplies(data.id));
  return element;
}

function paint(id) {
  const { data, element } = session.comments.get(id);
  element.classList.toggle("deleted", data.deleted);
  $(".author", element).textContent = data.deleted ? "[deleted]" : data.author_id || "";
  $(".content", element).textContent = data.deleted ? "[deleted]" : data.content || "";
  $(".when", element).textContent = data.created_at ? new Date(data.created_at).toLocaleString() : "";
  $(".score", element).textContent = String(data.up - data.down);
  $(".up", element).classList.toggle("chosen", data.my_vote === 1);
  $(".down", element).classList.toggle("chosen", data.my_vote === -1);
  const more = $(".show-replies", element);
  more.hidden = !data.reply_count || element.dataset.repliesOpen === "1";
  more.textContent = `${data.reply_count} ${data.reply_count === 1 ? "reply" : "replies"}`;
}

function count(more, id = null) {
  if (id !== null) {
    if (session.counted.has(id)) return; // the live stream and our own answer both tell
    session.counted.add(id);
  }
  session.count += more;
  $("#count").textContent = `${session.count} ${session.count === 1 ? "comment" : "comments"}`;
}

function flash(id) {
  const { element } = session.comments.get(id);
  element.classList.remove("fresh");
  void element.offsetWidth; // restart the animation
  element.classList.add("fresh");
}

function place(data, { top = false } = {}) {
  if (session.comments.has(data.id)) return;
  let list = $("#comments");
  if (data.parent_id) {
    const parent = session.comments.get(data.parent_id);
    if (!parent || parent.element.dataset.repliesOpen !== "1") return; // shown once opened
    list = $(".replies", parent.element);
  }
  const element = render(data);
  if (top) list.prepend(element);
  else list.append(element);
}

// ---- reads ----------------------------------------------------------------------------------

async function loadPage() {
  if (session.loading || session.cursor === undefined) return;
  session.loading = true;
  try {
    const params = new URLSearchParams({ sort: session.sort, limit: "20" });
    if (session.cursor) params.set("cursor", session.cursor);
    const page = await query(`/api/commentables/${encodeURIComponent(thread)}/comments?${params}`);
    for (const comment of page.comments) place(comment);
    session.cursor = page.next_cursor || undefined; // undefined: no more pages
    count(page.comment_count - session.count);
  } catch (error) {
    showError(error);
  } finally {
    session.loading = false;
  }
  // The observer only fires on a change: a short page leaves the sentinel in view.
  const sentinel = $("#more").getBoundingClientRect();
  if (session.cursor && sentinel.top < innerHeight) setTimeout(loadPage, 0);
}

async function loadReplies(id) {
  const parent = session.comments.get(id);
  try {
    const page = await query(`/api/comments/${id}/replies?sort=${session.sort}&limit=100`);
    parent.element.dataset.repliesOpen = "1";
    for (const reply of page.comments) place(reply);
    paint(id);
  } catch (error) {
    showError(error);
  }
}

function reload() {
  session.comments.clear();
  session.cursor = null;
  session.count = 0;
  session.counted.clear();
  $("#comments").replaceChildren();
  return loadPage();
}

// ---- writes ---------------------------------------------------------------------------------

async function post(content, parentId = null) {
  const body = { commentable_id: thread, content };
  if (parentId) body.parent_id = parentId;
  const created = await command("/api/comments", { method: "POST", body, key: newKey() });
  count(1, created.id);
  if (parentId) {
    const parent = session.comments.get(parentId);
    parent.data.reply_count += 1;
    parent.element.dataset.repliesOpen = "1";
    paint(parentId);
  }
  place(
    {
      id: created.id,
      parent_id: parentId,
      author_id: session.user,
      content,
      created_at: created.created_at,
      up: 0,
      down: 0,
      reply_count: 0,
      my_vote: 0,
      deleted: false,
    },
    { top: true },
  );
  flash(created.id);
}

// Optimistic: the counts change at once, and change back if the API refuses the vote.
async function vote(id, direction) {
  if (!session.token) return showError("sign in to vote");
  const { data } = session.comments.get(id);
  const before = { up: data.up, down: data.down, my_vote: data.my_vote || 0 };
  const value = before.my_vote === direction ? 0 : direction;
  data.up += (value === 1) - (before.my_vote === 1);
  data.down += (value === -1) - (before.my_vote === -1);
  data.my_vote = value;
  paint(id);
  try {
    await command(`/api/comments/${id}/vote`, { method: "PUT", body: { value }, key: newKey() });
  } catch (error) {
    Object.assign(data, before);
    paint(id);
    showError(error);
  }
}

// ---- live updates ---------------------------------------------------------------------------

function listen() {
  const url = `${session.config.query_api}/api/commentables/${encodeURIComponent(thread)}/live`;
  const stream = new EventSource(url); // reconnects by itself, resuming from Last-Event-ID
  const indicator = $("#live");
  stream.onopen = () => (indicator.className = "on");
  stream.onerror = () => (indicator.className = "off");
  const on = (type, handle) =>
    stream.addEventListener(type, (event) => handle(JSON.parse(event.data)));
  on("score", (change) => {
    const known = session.comments.get(change.comment_id);
    if (!known) return;
    Object.assign(known.data, { up: change.up, down: change.down });
    paint(change.comment_id);
    flash(change.comment_id);
  });
  on("comment_created", async (change) => {
    count(1, change.comment_id);
    if (session.comments.has(change.comment_id)) return; // ours, or already listed
    if (change.parent_id) {
      const parent = session.comments.get(change.parent_id);
      if (parent && parent.element.dataset.repliesOpen !== "1") {
        parent.data.reply_count += 1;
        paint(change.parent_id);
        return;
      }
    }
    try {
      const position = `?min_position=${change.position}`;
      place(await query(`/api/comments/${change.comment_id}${position}`), { top: true });
      flash(change.comment_id);
    } catch (error) {
      showError(error);
    }
  });
  on("comment_edited", (change) => {
    const known = session.comments.get(change.comment_id);
    if (!known) return;
    known.data.content = change.content;
    paint(change.comment_id);
  });
  on("comment_deleted", (change) => {
    const known = session.comments.get(change.comment_id);
    if (!known) return;
    known.data.deleted = true;
    paint(change.comment_id);
  });
}

// ---- sign-in and start ----------------------------------------------------------------------

function showUser() {
  const signedIn = Boolean(session.token);
  $("#sign-in").hidden = signedIn;
  $("#signed-in").hidden = !signedIn;
  $("#new-comment").hidden = !signedIn;
  $("#me").textContent = session.user || "";
}

async function signIn(name) {
  if (session.config.dev_login) {
    const reply = await fetch("/dev-login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: name }),
    });
    if (!reply.ok) throw new Error("sign-in refused");
    const { user, token } = await reply.json();
    Object.assign(session, { user, token });
  } else {
    Object.assign(session, { user: "you", token: name }); // a token from your identity provider
  }
  sessionStorage.setItem("tally.user", session.user);
  sessionStorage.setItem("tally.token", session.token);
  showUser();
  await reload(); // again, now with my_vote
}

async function start() {
  session.config = await (await fetch("/config.json")).json();
  $("#thread-name").textContent = thread;
  showUser();
  $("#sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#user").value).catch(showError);
  });
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.clear();
    Object.assign(session, { user: null, token: null });
    showUser();
    reload();
  });
  $("#new-comment").addEventListener("submit", (event) => {
    event.preventDefault();
    post($("#content").value).then(() => ($("#content").value = ""), showError);
  });
  $("#sort").addEventListener("change", (event) => {
    session.sort = event.target.value;
    reload();
  });
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadPage();
  }).observe($("#more"));
  listen();
  await loadPage();
  document.body.dataset.ready = "1";
}

start().catch(showError);
