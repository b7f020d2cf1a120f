// The hub's status page: polls /status.json every 2 s and draws it.
// Every value from the hub reaches the DOM through textContent or an attribute set by
// property, never parsed as HTML: names in the directory are data, not markup.
"use strict";

(() => {
  const POLL_MS = 2000;
  const STALE_MS = 7000; // no good answer for this long: the page says it is not updating
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

  function walk(nodes, visit, depth = 0, prefix = "") {
    nodes.forEach((node, i) => {
      const last = i === nodes.length - 1;
      const branch = depth === 0 ? "" : `${prefix}${last ? "└─" : "├─"}`;
      visit(node, depth, branch);
      const childPrefix = depth === 0 ? "" : `${prefix}${last ? "  " : "│ "}`;
      walk(node.children || [], visit, depth + 1, childPrefix);
    });
  }

  function allOrgs(tree) {
    const out = [];
    walk(tree, (node) => out.push(node));
    return out;
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
            ? `EXPIRED ${duration(-d.expires_in_ms)} ago`
            : `expires in ${duration(d.expires_in_ms)}`,
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
      items.push(["warn", `The directory expires in ${duration(d.expires_in_ms)}. `,
        "Run 'hubctl directory build' and 'systemctl reload hubd' before then."]);
    }
    const quarantined = data.flow.totals.quarantined || 0;
    if (quarantined > 0) {
      items.push(["bad", `${plural(quarantined, "message")} quarantined in the last minutes: `,
        "a security event (message.quarantined in the log)."]);
    }
    const offline = [];
    for (const org of allOrgs(data.tree)) {
      const down = org.channels.filter((c) => c.state === "offline");
      if (!down.length) continue;
      const waiting = org.queue.pending;
      const where = down.map((c) => `${c.id} for ${duration(data.at - c.since)}`).join(", ");
      if (waiting > 0) {
        items.push(["bad", `${org.name_zh} ${org.id}`, ` is offline on ${where} with `,
          el("b", "", plural(waiting, "delivery")),
          ` waiting, the oldest ${duration(org.queue.oldest_age_ms)}.`]);
      } else {
        offline.push(`${org.name_zh} ${org.id} (${where})`);
      }
    }
    for (const org of allOrgs(data.tree)) {
      if (org.state === "unseen" && org.queue.pending > 0) {
        items.push(["warn", `${org.name_zh} ${org.id}`, " has not been seen since the hub started; ",
          el("b", "", plural(org.queue.pending, "delivery")),
          ` wait for it, the oldest ${duration(org.queue.oldest_age_ms)}.`]);
      }
    }
    if (offline.length) items.push(["warn", "Offline, nothing waiting: ", offline.join("; ")]);
    const dead = data.dead;
    if (dead.problem) {
      items.push(["warn", "Dead letters unknown: ", dead.problem]);
    } else if (dead.total > 0) {
      items.push(["warn", `${plural(dead.total, "dead letter")} (${dead.dead} gave up, ${dead.expired} expired). `,
        "'hubctl dead' lists them; each sender holds a DEAD or EXPIRED receipt."]);
    }
    for (const stray of data.unlisted) {
      items.push(["warn", `${plural(stray.pending, "delivery")} wait for ${stray.recipient}, `,
        "which the directory no longer lists."]);
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
      ? `oldest ${duration(p.oldest.age_ms)} → ${p.oldest.recipient} on ${p.oldest.channel}, ${p.oldest.precedence.zh}`
      : "nothing waiting";
    const oldOffline = allOrgs(data.tree).some(
      (o) => o.queue.pending > 0 && (o.state === "offline" || o.state === "partial"),
    );

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
      tile(`流量 Flow, last ${Math.max(flowMinutes, 1)} min`, flowValue, "",
        f.quarantined ? "bad" : "ok", "flow-tile"),
      tile("目录 Directory", [data.directory ? `v${data.directory.version}` : "—"],
        data.directory
          ? `${data.directory.orgs} organisations · ${data.directory.expired ? "EXPIRED" : `expires in ${duration(data.directory.expires_in_ms)}`}`
          : "no directory",
        !data.directory || data.directory.expired ? "bad" : data.directory.expires_soon ? "warn" : "ok"),
    );
  }

  // ---------------------------------------------------------------- the tree

  function treeChannels(data) {
    // Only channels someone is provisioned on get a column; the panel lists them all.
    return data.channels.filter((c) => c.provisioned > 0);
  }

  function renderTree(data) {
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
    walk(data.tree, (org, depth, branch) => rows.push(orgRow(data, org, branch, channels)));
    byId("tree").tBodies[0].replaceChildren(...rows);

    const s = data.spokes;
    byId("tree-summary").textContent =
      `${s.orgs} organisations · ${s.online} online · ${s.partial} partly · ${s.offline} offline · ${s.unknown} unknown · ${s.unseen} not seen`;
  }

  function orgRow(data, org, branch, channels) {
    const tr = el("tr", `state-${org.state}`);
    tr.dataset.org = org.id; // for scripts and tests: the id and its state, as data
    tr.dataset.state = org.state;
    if (org.queue.pending > 0 && (org.state === "offline" || org.state === "partial")) {
      tr.classList.add("alarm");
    }
    const name = el("div", "org");
    append(name, branch ? el("span", "branch", branch) : null, dot(org.state),
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
      append(queue, String(q.pending), el("span", "age", ` oldest ${duration(q.oldest_age_ms)}`));
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
    for (const h of ["channel", "ceiling 上限", "online", "queue"]) head.append(el("th", "", h));
    const rows = [head];
    for (const c of data.channels) {
      const tr = el("tr");
      const name = el("td", "wrap");
      append(name, el("b", "", c.id), " ", el("span", "muted", c.name));
      const ceiling = el("td");
      ceiling.append(labelTag(c.ceiling));
      const online = el("td", "num", c.provisioned ? `${c.online}/${c.provisioned}` : "nobody");
      append(tr, name, ceiling, online, el("td", "num", c.pending));
      rows.push(tr);
    }
    table.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- polling

  function render(data) {
    renderHeader(data);
    attention(data);
    renderTiles(data);
    renderTree(data);
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
      const answer = await fetch("/status.json", { cache: "no-store", credentials: "omit" });
      if (!answer.ok) throw new Error(`HTTP ${answer.status} from /status.json`);
      const data = await answer.json();
      render(data);
      lastData = data;
      lastGoodAt = Date.now();
      lastError = null;
    } catch (error) {
      lastError = String(error && error.message ? error.message : error);
    } finally {
      showFreshness();
      setTimeout(poll, POLL_MS);
    }
  }

  setInterval(showFreshness, 1000);
  poll();
})();
