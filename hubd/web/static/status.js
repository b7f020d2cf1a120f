// The hub's status page: polls the summary /status.json every 2 s and draws it; the
// organisation tree comes a page at a time from /status/orgs.json, only while it is open.
// Both are asked with If-None-Match: while nothing but the time has changed the hub answers
// 304 without a body, and the page moves its clock on by itself.
// Every value from the hub reaches the DOM through textContent or an attribute set by
// property, never parsed as HTML: names in the directory are data, not markup.
"use strict";

(() => {
  const POLL_MS = 2000;
  const STALE_MS = 7000; // no good answer for this long: the page says it is not updating
  const TREE_REFRESH_MS = 5000; // the open tree is asked again at most this often
  const TREE_PAGE = 100; // organisations per page of the tree
  const SVG = "http://www.w3.org/2000/svg";
  const SERIES_NAMES = {
    accepted: ["accepted", "已接收"],
    delivered: ["delivered", "已送达"],
    rejected: ["rejected", "已拒收"],
    quarantined: ["quarantined", "已隔离"],
  };
  const STATE_WORDS = {
    online: "online",
    offline: "OFFLINE",
    unseen: "not seen",
    unknown: "unknown",
  };

  let lastGoodAt = 0;
  let lastError = null;
  let lastData = null;
  let lastTag = null; // the summary's ETag
  let bodyAt = 0; // when (our clock) the last summary with a body came

  // ---------------------------------------------------------------- small helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function append(parent, ...children) {
    for (const child of children) {
      if (child === null || child === undefined) continue;
      parent.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return parent;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // A short age, as hubctl prints it: 42s, 4m12s, 3h05m, 2d04h.
  function duration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    let m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return `${m}m${String(s).padStart(2, "0")}s`;
    let h = Math.floor(m / 60);
    m %= 60;
    if (h < 24) return `${h}h${String(m).padStart(2, "0")}m`;
    const d = Math.floor(h / 24);
    h %= 24;
    return `${d}d${String(h).padStart(2, "0")}h`;
  }

  // Local wall time for people, UTC ISO in tooltips (hubctl and the logs speak UTC).
  function localTime(ms) {
    const t = new Date(ms);
    const today = new Date().toDateString() === t.toDateString();
    const hms = t.toLocaleTimeString("en-GB", { hour12: false });
    return today ? hms : `${t.toISOString().slice(0, 10)} ${hms}`;
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace(".000Z", "Z");
  }

  function plural(n, word) {
    if (n === 1) return `${n} ${word}`;
    return `${n} ${word.endsWith("y") ? `${word.slice(0, -1)}ies` : `${word}s`}`;
  }

  function labelTag(label) {
    if (!label) return el("span", "faint", "?");
    const tag = el("span", `label-tag cls-${label.name}`, `${label.zh} ${label.name}`);
    return tag;
  }

  function dot(state) {
    const node = el("span", `dot dot-${state}`);
    node.title = state;
    return node;
  }

  // How long ago (or until) a time the hub gave, as of the answer's "at".
  function since(data, at) {
    return data.at - at;
  }

  // ---------------------------------------------------------------- header

  function renderHeader(data) {
    byId("hub-id").textContent = data.hub.id || "";
    document.title = `${data.ready ? "" : "NOT READY · "}govxchg ${data.hub.id || "hub"}`;
    const ready = byId("ready");
    ready.className = `badge ${data.ready ? "badge-ok" : "badge-bad"}`;
    ready.textContent = data.ready ? "READY 正常服务" : "NOT READY 未就绪";
    ready.title = data.ready
      ? "every broker connected, the store writable, not draining"
      : (data.readiness.not_ready || []).join("\n");

    const fact = byId("directory-fact");
    fact.replaceChildren();
    const d = data.directory;
    if (!d) {
      fact.textContent = "no directory";
    } else {
      const cls = d.expired ? "state-DEAD" : d.expires_soon ? "state-EXPIRED" : "";
      append(
        fact,
        "directory 目录 ",
        el("b", "", `v${d.version}`),
        " · ",
        el(
          "span",
          cls,
          d.expired
            ? `EXPIRED ${duration(since(data, d.expires_at))} ago`
            : `expires in ${duration(-since(data, d.expires_at))}`,
        ),
      );
      fact.title = `issued ${utc(d.issued_at)}, expires ${utc(d.expires_at)}; ${d.orgs} organisations`;
    }
  }

  // ---------------------------------------------------------------- what needs attention

  function attention(data) {
    const items = []; // [severity, text parts...]
    for (const problem of data.readiness.not_ready || []) items.push(["bad", "Not ready: ", problem]);
    const d = data.directory;
    if (d && d.expired) {
      items.push(["bad", "The directory expired: spokes refuse it. ",
        "Run 'hubctl directory build', then 'systemctl reload hubd'."]);
    } else if (d && d.expires_soon) {
      items.push(["warn", `The directory expires in ${duration(-since(data, d.expires_at))}. `,
        "Run 'hubctl directory build' and 'systemctl reload hubd' before then."]);
    }
    const quarantined = data.flow.totals.quarantined || 0;
    if (quarantined > 0) {
      items.push(["bad", `${plural(quarantined, "message")} quarantined in the last minutes: `,
        "a security event (message.quarantined in the log)."]);
    }
    const offline = [];
    for (const org of data.attention.orgs) {
      const name = `${org.name_zh} ${org.id}`;
      const why = org.attention;
      const q = org.queue;
      const down = org.channels.filter((c) => c.state === "offline");
      const where = down.map((c) => `${c.id} for ${duration(since(data, c.since))}`).join(", ");
      if (why.includes("offline_waiting")) {
        items.push(["bad", name, ` is offline on ${where} with `,
          el("b", "", plural(q.pending, "delivery")),
          ` waiting, the oldest ${duration(since(data, q.oldest_at))}.`]);
      } else if (why.includes("unseen_waiting")) {
        items.push(["warn", name, " has not been seen since the hub started; ",
          el("b", "", plural(q.pending, "delivery")),
          ` wait for it, the oldest ${duration(since(data, q.oldest_at))}.`]);
      } else if (why.includes("unknown_waiting")) {
        items.push(["warn", name, " cannot be seen (the hub's link to its broker is down); ",
          el("b", "", plural(q.pending, "delivery")), " wait for it."]);
      }
      if (why.includes("keys_expired")) {
        items.push(["bad", name, ` — its last key ended ${duration(since(data, org.keys_until))} ago: `,
          "it can no longer send or receive. It runs 'spoke keygen --rotate'; then 'hubctl directory build'."]);
      } else if (why.includes("keys_expiring")) {
        items.push(["warn", name, ` — its last key ends in ${duration(-since(data, org.keys_until))}: `,
          "it runs 'spoke keygen --rotate' and hands over the new public key; then 'hubctl directory build'."]);
      }
      if (why.includes("dead_letters")) {
        items.push(["warn", name, " has ", el("b", "", plural(org.dead, "dead letter")),
          ` ('hubctl dead ${org.id}' lists them).`]);
      }
      if (why.includes("offline")) offline.push(`${name} (${where})`);
    }
    if (offline.length) items.push(["warn", "Offline, nothing waiting: ", offline.join("; ")]);
    const listed = data.attention;
    const awaiting = listed.by_reason.awaiting_keys;
    const unknown = listed.by_reason.unknown + listed.by_reason.unknown_waiting;
    if (awaiting) {
      items.push(["warn", `${plural(awaiting, "organisation")} await their keys: `,
        "nobody can send to them until their public key files come and 'hubctl directory build' runs."]);
    }
    if (unknown) {
      items.push(["warn", `${plural(unknown, "organisation")} of unknown presence: `,
        "the hub's link to their broker is down (see Not ready above)."]);
    }
    if (listed.more > 0) {
      const counts = Object.entries(listed.by_reason).filter(([, n]) => n > 0)
        .map(([reason, n]) => `${n} ${reason.replaceAll("_", " ")}`).join(", ");
      items.push(["warn", `… and ${plural(listed.more, "more organisation")} `,
        `(${listed.total} need attention in all: ${counts}); the worst ${listed.orgs.length} are listed.`]);
    }
    const overdue = data.overdue || {known: false, total: 0, emergencies: [], items: [], more: 0};
    for (const e of overdue.emergencies) {
      items.push(["bad", `${e.drill ? "应急演练 Emergency drill" : "应急 Emergency"} ${e.msg_id} not acknowledged `,
        `by ${e.unacknowledged.join(", ")} (from ${e.sender}; sign-for was due ${duration(since(data, e.sign_by))} ago). `,
        "The hub reminds them and alarms its operator (emergency.unacknowledged in its log)."]);
    }
    if (overdue.total > 0) {
      const late = overdue.items.map((i) => `${i.recipient} (${i.deadline_zh} ${i.deadline}, ${duration(i.late_ms)} late)`);
      items.push(["warn", `${plural(overdue.total, "overdue deadline")}: `,
        `${late.join(", ")}${overdue.more ? ` … and ${overdue.more} more` : ""}. 'hubctl overdue' lists them; the hub reminds them (催办).`]);
    }
    const dead = data.dead;
    if (dead.problem) {
      items.push(["warn", "Dead letters unknown: ", dead.problem]);
    } else if (dead.total > 0) {
      items.push(["warn", `${plural(dead.total, "dead letter")} (${dead.dead} gave up, ${dead.expired} expired). `,
        "'hubctl dead' lists them; each sender holds a DEAD or EXPIRED receipt."]);
    }
    for (const stray of data.unlisted.recipients) {
      items.push(["warn", `${plural(stray.pending, "delivery")} wait for ${stray.recipient}, `,
        "which the directory no longer lists."]);
    }
    if (data.unlisted.more) {
      items.push(["warn", `… and ${plural(data.unlisted.more, "more recipient")} the directory no longer lists.`, ""]);
    }

    const box = byId("attention");
    box.replaceChildren();
    if (!items.length) {
      box.append(el("div", "alert alert-ok", "✓ Nothing needs attention 一切正常"));
      return;
    }
    for (const [severity, ...parts] of items) {
      const line = el("div", `alert alert-${severity}`);
      const [first, ...rest] = parts;
      append(line, el("b", "", first), ...rest);
      box.append(line);
    }
  }

  // ---------------------------------------------------------------- tiles

  function tile(label, value, detail, tone, extraClass) {
    const node = el("div", `tile tile-${tone}${extraClass ? ` ${extraClass}` : ""}`);
    const v = el("div", "value");
    append(v, ...value);
    append(node, el("div", "label", label), v, el("div", "detail", detail));
    node.title = detail;
    return node;
  }

  function renderTiles(data) {
    const s = data.spokes;
    const heard = s.online + s.partial + s.offline;
    const spokesTone = s.offline || s.partial ? "bad" : heard && !s.unknown ? "ok" : "warn";
    const spokeDetail = [
      s.partial ? `${s.partial} partly online` : "",
      s.offline ? `${s.offline} offline` : "",
      s.unseen ? `${s.unseen} not seen` : "",
      s.unknown ? `${s.unknown} unknown (broker link down)` : "",
    ].filter(Boolean).join(" · ") || "all online";

    const p = data.pending;
    const pendingDetail = p.oldest
      ? `oldest ${duration(since(data, p.oldest.accepted_at))} → ${p.oldest.recipient} on ${p.oldest.channel}, ${p.oldest.precedence.zh}`
      : "nothing waiting";
    const oldOffline = data.attention.by_reason.offline_waiting > 0;

    const dead = data.dead;
    const deadValue = dead.problem ? "?" : String(dead.total);
    const deadDetail = dead.problem ? dead.problem : `${dead.dead} gave up · ${dead.expired} expired`;

    const f = data.flow.totals;
    const flowValue = [];
    for (const name of data.flow.series) {
      const cell = el("span");
      const strong = el("b", name === "quarantined" && f[name] ? "state-DEAD" : "", f[name] || 0);
      append(cell, strong, `${SERIES_NAMES[name][0]} ${SERIES_NAMES[name][1]}`);
      flowValue.push(cell);
    }
    const flowMinutes = data.flow.since === null ? 0 : Math.round((data.at - data.flow.since) / 60000);

    byId("tiles").replaceChildren(
      tile("在线 Spokes online", [String(s.online), el("small", "", ` / ${s.orgs}`)], spokeDetail, spokesTone),
      tile("待送达 Deliveries pending", [String(p.total), el("small", "", p.sent ? ` (${p.sent} sent)` : "")],
        pendingDetail, oldOffline ? "bad" : p.total ? "warn" : "ok"),
      tile("死信 Dead letters", [deadValue], deadDetail, dead.problem ? "warn" : dead.total ? "warn" : "ok"),
      tile("逾期 Overdue", [data.overdue && data.overdue.known ? String(data.overdue.total) : "—"],
        data.overdue && data.overdue.emergencies.length
          ? `${plural(data.overdue.emergencies.length, "emergency")} not acknowledged`
          : "deadlines of documents' terms (催办)",
        data.overdue && data.overdue.emergencies.length ? "bad" : data.overdue && data.overdue.total ? "warn" : "ok"),
      tile(`流量 Flow, last ${Math.max(flowMinutes, 1)} min`, flowValue, "",
        f.quarantined ? "bad" : "ok", "flow-tile"),
      tile("目录 Directory", [data.directory ? `v${data.directory.version}` : "—"],
        data.directory
          ? `${data.directory.orgs} organisations · ${data.directory.expired ? "EXPIRED" : `expires in ${duration(-since(data, data.directory.expires_at))}`}`
          : "no directory",
        !data.directory || data.directory.expired ? "bad" : data.directory.expires_soon ? "warn" : "ok"),
    );
  }

  // ---------------------------------------------------------------- the tree
  // Asked for only while the panel is open, a level and a page at a time: the top level
  // when it opens, the organisations below one when its ▸ is clicked, the next page when
  // "more" is. The loaded pages are asked again (If-None-Match) when the summary changed,
  // at most every TREE_REFRESH_MS.

  const tree = {
    open: false,
    pages: new Map(), // under ("" for the top) -> [{offset, tag, data}], in order
    expanded: new Set(),
    lastRefresh: 0,
    busy: false,
    problem: null,
  };

  async function fetchPage(under, offset, tag) {
    const query = new URLSearchParams({ offset: String(offset), limit: String(TREE_PAGE) });
    if (under) query.set("under", under);
    const headers = tag ? { "If-None-Match": tag } : {};
    const answer = await fetch(`/status/orgs.json?${query}`,
      { cache: "no-store", credentials: "omit", headers });
    if (answer.status === 304) return null;
    if (!answer.ok) throw new Error(`HTTP ${answer.status} from /status/orgs.json`);
    return { offset, tag: answer.headers.get("ETag"), data: await answer.json() };
  }

  // Run one tree action at a time, then draw; a failure is shown above the tree.
  async function treeAction(action) {
    if (tree.busy) return;
    tree.busy = true;
    try {
      await action();
      tree.problem = null;
    } catch (error) {
      tree.problem = String(error && error.message ? error.message : error);
    } finally {
      tree.busy = false;
      renderTree();
    }
  }

  async function loadLevel(under) {
    tree.pages.set(under || "", [await fetchPage(under, 0, null)]);
  }

  async function loadMore(under) {
    const pages = tree.pages.get(under || "");
    const next = pages[pages.length - 1].data.next_offset;
    pages.push(await fetchPage(under, next, null));
  }

  async function refreshTree() {
    tree.lastRefresh = Date.now();
    const version = lastData && lastData.directory ? lastData.directory.version : null;
    const top = tree.pages.get("");
    if (top && top[0].data.directory_version !== version) {
      tree.pages.clear(); // a new directory: start again from the top, keep what was open
      await loadLevel(null);
      for (const org of tree.expanded) await loadLevel(org).catch(() => tree.expanded.delete(org));
      return;
    }
    for (const pages of tree.pages.values()) {
      for (const page of pages) {
        const fresh = await fetchPage(page.data.under, page.offset, page.tag);
        if (fresh) Object.assign(page, fresh);
      }
    }
  }

  function treeChannels(data) {
    // Only channels someone is provisioned on get a column; the panel lists them all.
    return data.channels.filter((c) => c.provisioned > 0);
  }

  function renderTree() {
    const data = lastData;
    if (!data) return;
    const s = data.spokes;
    byId("tree-summary").textContent =
      `${s.orgs} organisations · ${s.online} online · ${s.partial} partly · ${s.offline} offline · ${s.unknown} unknown · ${s.unseen} not seen` +
      (tree.open ? "" : " · open to browse 展开浏览");
    byId("tree-problem").textContent = tree.problem ? `The tree could not be read: ${tree.problem}` : "";
    if (!tree.open) return;
    const channels = treeChannels(data);
    const head = el("tr");
    append(head, el("th", "", "organisation 机构"), el("th", "", "level 级别"), el("th", "", "clearance 密级"));
    for (const c of channels) {
      const th = el("th");
      append(th, el("div", "chan-name", c.id), el("div", "", `≤ ${c.ceiling.zh} ${c.ceiling.name}`),
        el("div", "", `${c.online}/${c.provisioned} online`));
      th.title = c.name;
      head.append(th);
    }
    append(head, el("th", "num", "queue 队列"));
    byId("tree").tHead.replaceChildren(head);

    const rows = [];
    const width = channels.length + 4;
    const level = (under, depth, prefix) => {
      const pages = tree.pages.get(under || "");
      if (!pages) return;
      const orgs = pages.flatMap((page) => page.data.orgs);
      const lastPage = pages[pages.length - 1].data;
      const more = lastPage.next_offset !== null;
      orgs.forEach((org, i) => {
        const last = i === orgs.length - 1 && !more;
        const branch = depth === 0 ? "" : `${prefix}${last ? "└─" : "├─"}`;
        rows.push(orgRow(data, org, branch, channels));
        if (tree.expanded.has(org.id)) {
          level(org.id, depth + 1, depth === 0 ? "" : `${prefix}${last ? "  " : "│ "}`);
        }
      });
      if (more) rows.push(moreRow(under, lastPage.total - orgs.length, width));
    };
    level(null, 0, "");
    byId("tree").tBodies[0].replaceChildren(...rows);
  }

  function moreRow(under, left, width) {
    const tr = el("tr", "more");
    const td = el("td");
    td.colSpan = width;
    const button = el("button", "more-button", `show ${Math.min(left, TREE_PAGE)} more of ${left} 显示更多`);
    button.type = "button";
    button.addEventListener("click", () => treeAction(() => loadMore(under)));
    td.append(button);
    tr.append(td);
    return tr;
  }

  function toggle(org) {
    const open = tree.expanded.has(org.id);
    const button = el("button", "toggle", open ? "▾" : "▸");
    button.type = "button";
    button.setAttribute("aria-expanded", String(open));
    button.title = open ? "close 收起" : `open: ${plural(org.children, "organisation")} below 展开`;
    button.addEventListener("click", () => treeAction(async () => {
      if (tree.expanded.has(org.id)) {
        tree.expanded.delete(org.id);
        return;
      }
      if (!tree.pages.has(org.id)) await loadLevel(org.id);
      tree.expanded.add(org.id);
    }));
    return button;
  }

  function orgRow(data, org, branch, channels) {
    const tr = el("tr", `state-${org.state}`);
    tr.dataset.org = org.id; // for scripts and tests: the id and its state, as data
    tr.dataset.state = org.state;
    if (org.queue.pending > 0 && (org.state === "offline" || org.state === "partial")) {
      tr.classList.add("alarm");
    }
    const name = el("div", "org");
    append(name, branch ? el("span", "branch", branch) : null,
      org.children ? toggle(org) : el("span", "toggle-none"), dot(org.state),
      el("span", "zh", org.name_zh), el("span", "en", org.name_en), el("span", "id", org.id));
    name.title = `${org.name_zh} · ${org.name_en} · ${org.id}${org.orphan ? " · its parent is not in the directory" : ""}`;
    const nameCell = el("td");
    nameCell.append(name);
    append(tr, nameCell, el("td", "lvl", `${org.level.zh} ${org.level.name}`));
    const clearance = el("td");
    clearance.append(labelTag(org.clearance));
    tr.append(clearance);

    for (const c of channels) {
      const td = el("td");
      const mine = org.channels.find((x) => x.id === c.id);
      if (!mine) {
        td.append(el("span", "not-provisioned", "·"));
        td.title = `${org.id} is not provisioned on ${c.id}`;
      } else {
        td.dataset.channel = c.id;
        td.dataset.state = mine.state;
        td.append(channelCell(data, org, mine));
      }
      tr.append(td);
    }

    const q = org.queue;
    const queue = el("td", `num queue${q.pending ? "" : " queue-zero"}`);
    if (q.pending) {
      if (q.most_urgent && q.most_urgent.name !== "ROUTINE") {
        append(queue, el("span", `prec prec-${q.most_urgent.name}`, q.most_urgent.zh), " ");
      }
      append(queue, String(q.pending), el("span", "age", ` oldest ${duration(since(data, q.oldest_at))}`));
      queue.title = `${plural(q.pending, "delivery")} waiting (${q.sent} sent, not yet confirmed); ` +
        `oldest accepted ${utc(q.oldest_at)}; 'hubctl queue ${org.id}' lists them`;
    } else {
      queue.textContent = "0";
    }
    tr.append(queue);
    return tr;
  }

  function channelCell(data, org, channel) {
    const span = el("span", `chan chan-${channel.state}`);
    append(span, dot(channel.state), STATE_WORDS[channel.state] || channel.state);
    if (channel.since !== null) append(span, el("span", "for", duration(data.at - channel.since)));
    const ceiling = channel.ceiling ? `${channel.ceiling.zh} ${channel.ceiling.name}` : "unknown";
    let title = `${org.id} on ${channel.id} (ceiling ${ceiling}): `;
    if (channel.state === "unseen") {
      title += `no presence message since the hub started at ${localTime(data.hub.started_at)}`;
    } else if (channel.state === "unknown") {
      title += "the hub's connection to this channel's broker is down (or it is reading presence again): the spoke may be online, the hub cannot tell";
    } else {
      title += `${channel.state} since ${localTime(channel.since)} (${utc(channel.since)})`;
    }
    if (channel.pending) title += `; ${plural(channel.pending, "delivery")} waiting on this channel`;
    span.title = title;
    return span;
  }

  // ---------------------------------------------------------------- flow

  function renderFlow(data) {
    const flow = data.flow;
    const box = byId("flow");
    box.replaceChildren();
    const slots = 60;
    const buckets = flow.buckets.slice(-slots + 1);
    const all = flow.current ? [...buckets, flow.current] : buckets;
    for (const name of flow.series) {
      const values = all.map((b) => b[name] || 0);
      const max = Math.max(1, ...values);
      const row = el("div", `flow-row${name === "quarantined" && flow.totals[name] ? " flow-alarm" : ""}`);
      const label = el("div", "name");
      append(label, el("b", "", flow.totals[name] || 0), `${SERIES_NAMES[name][0]} ${SERIES_NAMES[name][1]}`);
      const chart = svgEl("svg", { viewBox: `0 0 ${slots * 10} 40`, preserveAspectRatio: "none", role: "img" });
      const title = svgEl("title");
      title.textContent = `${name} per ${flow.step_s} s; the tallest bar is ${max}`;
      chart.append(title, svgEl("line", { class: "baseline", x1: 0, y1: 39.5, x2: slots * 10, y2: 39.5 }));
      const offset = slots - all.length;
      all.forEach((bucket, i) => {
        const v = bucket[name] || 0;
        if (!v) return;
        const h = Math.max(2, (v / max) * 38);
        const open = flow.current && i === all.length - 1;
        const bar = svgEl("rect", {
          class: `bar-${name}${open ? " open" : ""}`,
          x: (offset + i) * 10 + 1, y: 40 - h, width: 8, height: h,
        });
        const tip = svgEl("title");
        tip.textContent = `${v} ${name}, ${localTime(bucket.start)}–${localTime(bucket.end)}`;
        bar.append(tip);
        chart.append(bar);
      });
      const lastValue = flow.current ? flow.current[name] || 0 : 0;
      const last = el("div", "last", lastValue ? `+${lastValue}` : "");
      last.title = "since the last 10 s boundary";
      append(row, label, chart, last);
      box.append(row);
    }
    const axis = el("div", "flow-axis");
    const ticks = el("span");
    append(ticks, el("span", "", `−${Math.round((slots * flow.step_s) / 60)} min`), el("span", "", "now"));
    append(axis, el("span", "", `per ${flow.step_s} s`), ticks, el("span"));
    box.append(axis);
    byId("flow-window").textContent =
      flow.since === null ? "" : `since ${localTime(flow.since)}`;
  }

  // ---------------------------------------------------------------- dead letters

  function renderDead(data) {
    const dead = data.dead;
    const box = byId("dead");
    box.replaceChildren();
    if (dead.problem) {
      box.append(el("div", "empty", dead.problem));
      byId("dead-summary").textContent = "";
      return;
    }
    byId("dead-summary").textContent = `${dead.total} · ${dead.dead} gave up · ${dead.expired} expired`;
    if (!dead.recent.length) {
      box.append(el("div", "empty", "none: every delivery was confirmed or is still on its way"));
      return;
    }
    const table = el("table", "small-table");
    const head = el("tr");
    for (const h of ["when", "msg_id", "to", "state", "tries"]) head.append(el("th", "", h));
    table.append(head);
    for (const d of dead.recent) {
      const tr = el("tr");
      const when = el("td", "", `${duration(data.at - d.at)} ago`);
      when.title = `${localTime(d.at)} (${utc(d.at)})`;
      const id = el("td", "mono", `${d.msg_id.slice(0, 12)}…`);
      id.title = `${d.msg_id} from ${d.sender} on ${d.channel}, ${d.classification.zh} ${d.precedence.zh}; ` +
        `'hubctl trace ${d.msg_id}'`;
      const state = el("td", `state-${d.state}`, d.state === "DEAD" ? "DEAD" : "EXPIRED");
      state.title = d.state === "DEAD" ? "gave up after max_attempts without DELIVERED" : "expired before DELIVERED";
      append(tr, when, id, el("td", "", d.recipient), state, el("td", "num", d.attempts));
      table.append(tr);
    }
    box.append(table);
    if (dead.total > dead.recent.length) {
      box.append(el("div", "empty", `… and ${dead.total - dead.recent.length} more: 'hubctl dead' lists them all`));
    }
  }

  // ---------------------------------------------------------------- channels

  function renderChannels(data) {
    const table = byId("channels");
    const head = el("tr");
    const columns = [
      ["channel", ""], ["ceiling 上限", ""], ["online", "on the channel now"],
      ["offline", "offline: their presence (or will) said so"], ["not seen", "no presence since the hub started"],
      ["unknown", "the hub's link to the broker is down"], ["no keys", "listed, awaiting their keys"],
      ["queue", "deliveries waiting on the channel"], ["dead", "dead letters on the channel"],
    ];
    for (const [h, title] of columns) {
      const th = el("th", "", h);
      th.title = title;
      head.append(th);
    }
    const rows = [head];
    for (const c of data.channels) {
      const tr = el("tr");
      tr.dataset.channel = c.id;
      const name = el("td");
      append(name, el("b", "", c.id));
      name.title = c.name;
      const ceiling = el("td");
      ceiling.append(labelTag(c.ceiling));
      const online = el("td", "num", c.provisioned ? `${c.online}/${c.provisioned}` : "nobody");
      const count = (n, tone) => el("td", `num${n ? ` ${tone}` : " queue-zero"}`, n === null ? "?" : n);
      append(tr, name, ceiling, online, count(c.offline, "state-DEAD"), count(c.unseen, ""),
        count(c.unknown, "state-EXPIRED"), count(c.awaiting_keys, ""), count(c.pending, ""),
        count(c.dead, "state-EXPIRED"));
      rows.push(tr);
    }
    table.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- polling

  function render(data) {
    renderHeader(data);
    attention(data);
    renderTiles(data);
    renderTree();
    renderFlow(data);
    renderDead(data);
    renderChannels(data);
    document.body.dataset.at = String(data.at);
  }

  function showFreshness() {
    const stale = byId("stale");
    const age = Date.now() - lastGoodAt;
    const isStale = !lastGoodAt || age > STALE_MS;
    if (lastData && isStale) {
      stale.hidden = false;
      stale.textContent = `NOT UPDATING 数据未更新: the last good answer came ${duration(age)} ago` +
        (lastError ? ` (${lastError})` : "") + "; what you see may be out of date. Is hubd running?";
    } else if (!lastData && lastError) {
      stale.hidden = false;
      stale.textContent = `Cannot reach the hub: ${lastError}`;
    } else {
      stale.hidden = true;
    }
    document.body.classList.toggle("is-stale", Boolean(lastData && isStale));
    if (lastData) {
      byId("updated").textContent = `updated ${localTime(lastData.at)} · hub up ${duration(lastData.at - lastData.hub.started_at)} · govxchg ${lastData.hub.version}`;
    }
  }

  async function poll() {
    try {
      const headers = lastTag ? { "If-None-Match": lastTag } : {};
      const answer = await fetch("/status.json", { cache: "no-store", credentials: "omit", headers });
      let changed = true;
      if (answer.status === 304 && lastData) {
        // Nothing but the time changed: the same answer, its clock moved on by ours.
        changed = false;
        lastData = { ...lastData, at: lastData.at + (Date.now() - bodyAt) };
        bodyAt = Date.now();
      } else if (answer.ok) {
        lastData = await answer.json();
        lastTag = answer.headers.get("ETag");
        bodyAt = Date.now();
      } else {
        throw new Error(`HTTP ${answer.status} from /status.json`);
      }
      render(lastData);
      lastGoodAt = Date.now();
      lastError = null;
      const due = Date.now() - tree.lastRefresh;
      if (tree.open && !tree.busy && ((changed && due >= TREE_REFRESH_MS) || due >= 6 * TREE_REFRESH_MS)) {
        treeAction(refreshTree);
      }
    } catch (error) {
      lastError = String(error && error.message ? error.message : error);
    } finally {
      showFreshness();
      setTimeout(poll, POLL_MS);
    }
  }

  byId("tree-panel").addEventListener("toggle", () => {
    tree.open = byId("tree-panel").open;
    if (tree.open && !tree.pages.has("")) {
      treeAction(async () => {
        tree.lastRefresh = Date.now();
        await loadLevel(null);
      });
    } else {
      renderTree();
    }
  });
  setInterval(showFreshness, 1000);
  poll();
})();
