// The user's event stream (GET /events, Server-Sent Events). EventSource cannot send headers, so
// each opening uses a short-lived ticket from POST /api/v1/events/ticket, and resumes after the
// last sequence number seen: no event is missed or repeated across reconnects. Where the API has
// no stream, the page polls instead.

import { call } from "./api.js";

const KINDS = ["created", "started", "node", "finished", "failed", "cancelled"];
const POLL_MS = 1500;

export class EventStream {
  // handlers: onEvent(event) for each event in order; onResync() when the page must reload what
  // it shows (the stream could not resume); onState(word) for "connecting", "live", "polling",
  // "offline".
  constructor(handlers) {
    this.h = handlers;
    this.source = null;
    this.lastSeq = null; // null: no resume point yet
    this.failures = 0; // openings in a row that ended before any message
    this.timer = null;
    this.running = false;
  }

  start() {
    this.running = true;
    this.open();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    this.lastSeq = null;
    this.h.onState("offline");
  }

  async open() {
    if (!this.running) return;
    this.h.onState("connecting");
    let ticket;
    try {
      ticket = (await call("POST", "/api/v1/events/ticket")).ticket;
    } catch (e) {
      if (e.status === 404 || e.status === 405) return this.poll();
      return this.retry();
    }
    if (!this.running) return;
    const q = new URLSearchParams({ ticket });
    // Without a resume point the stream is live from now: what happened before its online
    // marker is read afresh then.
    const fresh = this.lastSeq === null;
    if (!fresh) q.set("after", String(this.lastSeq));
    const es = new EventSource(`/events?${q}`);
    this.source = es;
    let heard = false;
    const take = (ev) => {
      heard = true;
      this.failures = 0;
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (typeof data.seq === "number") {
        if (this.lastSeq !== null && data.seq <= this.lastSeq) return; // already applied
        this.lastSeq = data.seq;
      }
      this.h.onEvent(data);
    };
    for (const kind of KINDS) es.addEventListener(kind, take);
    es.addEventListener("online", (ev) => {
      heard = true;
      this.failures = 0;
      try {
        const seq = JSON.parse(ev.data).seq;
        if (typeof seq === "number" && (this.lastSeq === null || seq > this.lastSeq)) this.lastSeq = seq;
      } catch (e) {
        /* a marker without a body still means live */
      }
      this.h.onState("live");
      if (fresh) this.h.onResync();
    });
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED || this.source !== es) return; // it reconnects itself
      this.source = null;
      if (!heard) this.failures += 1;
      // Refused twice without a word: most likely a resume point older than the log holds
      // (410). Reload what the page shows and start again from now.
      if (this.failures >= 2 && this.lastSeq !== null) {
        this.lastSeq = null;
        this.h.onResync();
      }
      this.retry();
    };
  }

  retry() {
    if (!this.running) return;
    this.h.onState("connecting");
    const ms = Math.min(8000, 300 * 2 ** Math.min(this.failures, 5));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), ms);
  }

  poll() {
    if (!this.running) return;
    this.h.onState("polling");
    this.h.onResync();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), POLL_MS);
  }
}
