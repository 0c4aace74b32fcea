// Draws a plan or an expression's nodes as an SVG tree: operations as circles (their state a
// class, their value once known), numbers as plain labels, the root on top, the critical path
// in a heavier stroke. Styles come from app.css: nothing inline, which the page's policy forbids.

const SVG = "http://www.w3.org/2000/svg";
const SLOT = 46; // horizontal room of one leaf
const LEVEL = 62; // vertical room of one level
const R = 17; // radius of an operation
const PAD = 24;

export const OP_SIGN = { "+": "+", "-": "−", "*": "×", "/": "÷" };

export function formatNumber(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const s = v.toPrecision(6);
  return s.includes("e") ? s : String(Number(s));
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

// Places every operation and number: leaves on consecutive slots left to right, a parent
// centred over its operands. Returns the boxes and the size.
function layout(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const root = nodes.find((n) => n.parent === null || n.parent === undefined);
  const items = [];
  let slot = 0;
  let maxLevel = 0;
  // Iterative post-order, so a long chain cannot overflow the call stack.
  const place = (start) => {
    const stack = [{ n: start, level: 0, kids: null }];
    let last = null;
    while (stack.length) {
      const top = stack[stack.length - 1];
      if (!top.kids) {
        top.kids = [];
        top.next = 0;
      }
      if (top.next < 2) {
        const o = top.n.operands[top.next];
        top.next += 1;
        const child = o && o.node !== undefined ? byId.get(o.node) : null;
        if (child) {
          stack.push({ n: child, level: top.level + 1, kids: null });
        } else {
          const leaf = { kind: "number", value: o ? o.value : "?", x: slot++, level: top.level + 1 };
          maxLevel = Math.max(maxLevel, leaf.level);
          items.push(leaf);
          top.kids.push(leaf);
        }
        continue;
      }
      stack.pop();
      const me = {
        kind: "op",
        node: top.n,
        x: (top.kids[0].x + top.kids[1].x) / 2,
        level: top.level,
        kids: top.kids,
      };
      items.push(me);
      last = me;
      if (stack.length) stack[stack.length - 1].kids.push(me);
    }
    return last;
  };
  if (root) place(root);
  return { items, width: Math.max(slot, 1), height: maxLevel + 1 };
}

function px(item) {
  return PAD + item.x * SLOT + SLOT / 2;
}

function py(item) {
  return PAD + item.level * LEVEL + R;
}

// Draws nodes into svg (emptied first). Each operation is a <g class="node state-X"> with
// data-node-id and data-state, so its state can be read back.
export function drawDag(svg, nodes) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!nodes || nodes.length === 0) {
    svg.setAttribute("viewBox", "0 0 200 40");
    svg.setAttribute("width", "200");
    svg.setAttribute("height", "40");
    el("text", { x: 8, y: 24, class: "empty" }, svg).textContent = "no operations";
    return;
  }
  const { items, width, height } = layout(nodes);
  const w = PAD * 2 + width * SLOT;
  const h = PAD * 2 + (height - 1) * LEVEL + 2 * R;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(h));
  const edges = el("g", { class: "edges" }, svg);
  const dots = el("g", { class: "nodes" }, svg);
  for (const it of items) {
    if (it.kind !== "op") continue;
    for (const k of it.kids) {
      const critical = it.node.critical && k.kind === "op" && k.node.critical;
      el("line", { x1: px(it), y1: py(it), x2: px(k), y2: py(k), class: critical ? "edge critical" : "edge" }, edges);
    }
  }
  for (const it of items) {
    if (it.kind === "number") {
      el("text", { x: px(it), y: py(it) + 4, class: "number" }, dots).textContent = formatNumber(it.value);
      continue;
    }
    const n = it.node;
    const state = n.state || "planned";
    const g = el("g", {
      class: `node state-${state}${n.critical ? " critical" : ""}`,
      "data-node-id": n.id,
      "data-state": state,
    }, dots);
    const done = n.value !== null && n.value !== undefined;
    const title = `${OP_SIGN[n.op] || n.op} ${state}${done ? ` = ${formatNumber(n.value)}` : ""}` +
      `${n.critical ? ", on the critical path" : ""}${n.error ? `: ${n.error}` : ""}`;
    el("title", {}, g).textContent = title;
    el("circle", { cx: px(it), cy: py(it), r: R }, g);
    el("text", { x: px(it), y: py(it) + 5, class: "op" }, g).textContent = OP_SIGN[n.op] || n.op;
    if (done) {
      el("text", { x: px(it) + R + 3, y: py(it) - R + 4, class: "value" }, g).textContent = `= ${formatNumber(n.value)}`;
    }
  }
}
