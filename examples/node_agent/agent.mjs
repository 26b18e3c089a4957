// A LevelEnv agent in Node.js, written from PROTOCOL.md alone (zeromq 6 + @msgpack/msgpack; no Python).
//
//   node examples/node_agent/agent.mjs --name l1.0 --num-envs 8 --child env/0=ipc:///tmp/tag-1234/env_0 \
//        [--child ...] [--bind ipc:///tmp/tag-1234/l1.0 --parent l2.0] [--period 1]
//
// It takes one agent's place in a tag_actors hierarchy; the launcher of a run with
// `[placement] external = ["l1.0"]` prints these arguments. The policy is random (seeded); replace act().
// Section numbers are PROTOCOL.md's.

import { decode, encode } from "@msgpack/msgpack";
import * as zmq from "zeromq";

const VERSION = 2; // §8.3
const SCHEMA = "94644e24b2395b08"; // §8.4: the schema hash of version 2 (Appendix B)
const [HELLO, WELCOME, REJECT, UP, DOWN, STOP, BYE, PING] = [1, 2, 3, 4, 5, 6, 7, 8]; // §5
const TERMINATED = 1, TRUNCATED = 2; // §7 (FIRST = 4)
const HELLO_KEYS = ["schema", "caps", "child", "num_envs", "instruction_space", "period", "mode"]; // §5.1

function parseArgs(argv) {
  const args = { child: [], period: 1, timeout: 60, seed: 0, instruction: 2 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-/g, "_"), value = argv[i + 1];
    if (key === "child") args.child.push(value);
    else args[key] = ["num_envs", "period", "timeout", "seed", "instruction"].includes(key) ? Number(value) : value;
  }
  if (!args.name || !args.num_envs || args.child.length === 0) {
    console.error("usage: agent.mjs --name NAME --num-envs B --child NAME=ENDPOINT [...] [--bind EP --parent NAME]");
    process.exit(2);
  }
  return args;
}

// A seeded generator (mulberry32), so runs repeat.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const bytesOf = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
const copyOut = (buf) => buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength); // aligned copy
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// One link (§2): a DEALER to a child (routing id = my name, §3) or a ROUTER bound for my parent.
class Link {
  constructor(me, peer, endpoint, serve) {
    Object.assign(this, { me, peer, endpoint, serve, seq: 0, expect: {} });
    this.sock = serve ? new zmq.Router({ linger: 0 }) : new zmq.Dealer({ routingId: me, linger: 0 });
  }

  async open() {
    if (this.serve) await this.sock.bind(this.endpoint);
    else this.sock.connect(this.endpoint);
  }

  async send(kind, { tick = 0, batch = 0, arrays = {}, meta = null, version = VERSION } = {}) {
    const specs = Object.entries(arrays).map(([name, a]) => [name, a.dtype, a.shape]);
    const header = { k: kind, v: version, s: this.me, q: this.seq++, t: tick, b: batch, a: specs };
    if (meta) header.m = meta;
    const frames = [Buffer.from(encode(header)), ...Object.values(arrays).map((a) => bytesOf(a.data))];
    await this.sock.send(this.serve ? [this.peer, ...frames] : frames);
  }

  // The next valid message, or null on timeout (ms; null: forever). Invalid ones are dropped (§13).
  async recv(timeoutMs) {
    for (;;) {
      this.sock.receiveTimeout = timeoutMs === null ? -1 : timeoutMs;
      let frames;
      try {
        frames = await this.sock.receive();
      } catch (e) {
        if (e.code === "EAGAIN") return null;
        throw e;
      }
      if (this.serve) {
        if (frames[0].toString() !== this.peer) continue; // §3: only the parent's identity is served
        frames = frames.slice(1);
      }
      let h;
      try {
        h = decode(frames[0]);
      } catch (e) {
        console.error(`${this.me}: dropped a malformed frame from ${this.peer}: ${e.message}`);
        continue;
      }
      if (h === null || typeof h !== "object" || h.v !== VERSION) {
        if (h && (h.k === HELLO || h.k === WELCOME)) { // §8.3: answer in the peer's own version
          await this.send(REJECT, { version: h.v, meta: { reason: `'${this.peer}' speaks protocol version ${h.v}, `
            + `'${this.me}' speaks version ${VERSION}`, field: "version", speaks: [VERSION] } });
        }
        continue;
      }
      if (h.k === PING || h.s !== this.peer || !Array.isArray(h.a) || frames.length !== h.a.length + 1) continue;
      const want = this.expect[h.k];
      if (want && (!same(h.a, want) || h.b !== want[0][2][0])) {
        console.error(`${this.me}: dropped a bad message of kind ${h.k} from ${this.peer}: ${JSON.stringify(h.a)}`);
        continue;
      }
      const arrays = {};
      h.a.forEach(([name, dtype, shape], i) => {
        const ab = copyOut(frames[i + 1]);
        arrays[name] = { dtype, shape, data: dtype === "float32" ? new Float32Array(ab)
          : dtype === "uint8" ? new Uint8Array(ab) : dtype === "int64" ? new BigInt64Array(ab) : null };
      });
      return { kind: h.k, tick: h.t, batch: h.b, arrays, meta: h.m || {} };
    }
  }

  async recvKind(kinds, timeoutMs, what) {
    for (;;) {
      const msg = await this.recv(timeoutMs);
      if (msg === null) {
        console.error(`${this.me}: no ${what} from '${this.peer}' within ${timeoutMs / 1000}s`);
        process.exit(1);
      }
      if (kinds.includes(msg.kind)) return msg;
    }
  }
}

// §6: the per-copy shape and dtype of a space's values
function shapeDtype(space) {
  if (space.type === "box") return [space.shape, "float32"];
  if (space.type === "discrete") return [[], "int64"];
  return [[space.nvec.length], "int64"];
}

// The policy: a random action of `space` for every env copy. Replace with yours.
function act(space, random, b) {
  const [shape, dtype] = shapeDtype(space);
  const per = shape.reduce((x, y) => x * y, 1);
  if (dtype === "float32") {
    const lo = Number.isFinite(space.low) ? space.low : -1, hi = Number.isFinite(space.high) ? space.high : 1;
    return { dtype, shape: [b, ...shape], data: Float32Array.from({ length: b * per }, () => lo + (hi - lo) * random()) };
  }
  const ns = space.type === "discrete" ? [space.n] : space.nvec;
  const data = BigInt64Array.from({ length: b * per }, (_, i) => BigInt(Math.floor(random() * ns[i % ns.length])));
  return { dtype, shape: [b, ...shape], data };
}

// §9.1, the decision clock: a child waits for DOWN (and the parent sends it) on the link's first tick and on every
// multiple of the parent's period, unless every env copy ended at this tick.
const waitsForDown = (first, tick, period, allEnded) => (first || tick % period === 0) && !allEnded;

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const b = args.num_envs, random = rng(args.seed), timeoutMs = args.timeout * 1000;

  // §8: HELLO to every child, then its WELCOME (or REJECT)
  const children = args.child.map((c) => {
    const at = c.indexOf("=");
    return new Link(args.name, c.slice(0, at), c.slice(at + 1), false);
  });
  for (const link of children) {
    await link.open();
    await link.send(HELLO, { batch: b, meta: { schema: SCHEMA, caps: [], child: link.peer, num_envs: b,
      instruction_space: null, period: args.period, mode: "lockstep" } });
  }
  const dims = [], spaces = [];
  for (const link of children) {
    const msg = await link.recvKind([WELCOME, REJECT], timeoutMs, "WELCOME");
    const m = msg.meta;
    if (msg.kind === REJECT) { console.error(`${args.name}: '${link.peer}' rejected us: ${m.reason}`); process.exit(1); }
    if (m.schema !== SCHEMA || m.num_envs !== b || m.message_space?.type !== "box") {
      await link.send(REJECT, { meta: { reason: `cannot accept the WELCOME of '${link.peer}'`, field: "schema" } });
      process.exit(1);
    }
    const shape = m.message_space.shape;
    link.expect[UP] = [["x", "float32", [b, ...shape]], ["r", "float32", [b]], ["f", "uint8", [b]]];
    dims.push(shape.reduce((x, y) => x * y, 1));
    spaces.push(m.instruction_space);
  }

  // §8: the parent's HELLO, answered with WELCOME (or REJECT, then wait for a better one)
  let parent = null, parentPeriod = 1, parentMode = "lockstep";
  if (args.bind) {
    parent = new Link(args.name, args.parent, args.bind, true);
    await parent.open();
    let m;
    for (;;) {
      m = (await parent.recvKind([HELLO], timeoutMs, "HELLO")).meta;
      const missing = HELLO_KEYS.filter((k) => !(k in m));
      const problem = missing.length ? missing[0] : m.schema !== SCHEMA ? "schema" : m.num_envs !== b ? "num_envs"
        : m.child !== args.name ? "child" : !(Number.isInteger(m.period) && m.period >= 1) ? "period"
        : !["lockstep", "async"].includes(m.mode) ? "mode" : "";
      if (!problem) break;
      await parent.send(REJECT, { meta: { reason: `${problem}: HELLO says ${JSON.stringify(m[problem])}`,
        field: problem, speaks: [VERSION] } });
    }
    parentPeriod = m.period;
    parentMode = m.mode;
    const instruction = m.instruction_space ?? { type: "box", shape: [args.instruction], low: -1, high: 1 };
    const [ishape, idtype] = shapeDtype(instruction);
    parent.expect[DOWN] = [["a", idtype, [b, ...ishape]]];
    await parent.send(WELCOME, { batch: b, meta: { schema: SCHEMA, caps: [], num_envs: b, instruction_space: instruction,
      info: {}, message_space: { type: "box", shape: [dims.reduce((x, y) => x + y, 0)], low: -Infinity, high: Infinity } } });
  }

  // §9: ticks until the run stops (§11)
  let first = true, stoppedByParent = false;
  const width = dims.reduce((x, y) => x + y, 0);
  for (;;) {
    const ups = [];
    for (const link of children) ups.push(await link.recvKind([UP], null, "UP"));
    const tick = ups[0].tick, f = ups[0].arrays.f.data;
    let stop = ups.some((u) => u.meta.stop === true);
    const allEnded = f.every((v) => (v & (TERMINATED | TRUNCATED)) !== 0);
    if (parent) {
      const x = new Float32Array(b * width), r = new Float32Array(b);
      for (let e = 0; e < b; e++) {
        let col = 0;
        ups.forEach((u, i) => {
          x.set(u.arrays.x.data.subarray(e * dims[i], (e + 1) * dims[i]), e * width + col);
          col += dims[i];
          r[e] += u.arrays.r.data[e];
        });
      }
      await parent.send(UP, { tick, batch: b, meta: stop ? { e: ups[0].meta.e ?? 0, stop: true } : { e: ups[0].meta.e ?? 0 },
        arrays: { x: { dtype: "float32", shape: [b, width], data: x }, r: { dtype: "float32", shape: [b], data: r },
          f: { dtype: "uint8", shape: [b], data: f } } });
      const wait = parentMode === "lockstep" ? waitsForDown(first, tick, parentPeriod, allEnded) : first;
      if (!stop && wait) { // the instruction itself is ignored by this random policy
        let msg = await parent.recvKind([DOWN, STOP], null, "DOWN");
        while (msg.kind === DOWN && msg.tick !== tick) msg = await parent.recvKind([DOWN, STOP], null, "DOWN"); // §9.1
        stoppedByParent = msg.kind === STOP;
      } else if (!stop) { // §9.3 async: take whatever has arrived, never wait
        for (let msg = await parent.recv(0); msg !== null; msg = await parent.recv(0)) {
          if (msg.kind === STOP) stoppedByParent = true;
        }
      }
      stop = stop || stoppedByParent;
    }
    if (stop) {
      for (const link of children) await link.send(STOP);
      for (const link of children) await link.recvKind([BYE], 60000, "BYE");
      if (parent) {
        if (!stoppedByParent) await parent.recvKind([STOP], null, "STOP");
        await parent.send(BYE);
      }
      console.error(`${args.name}: stopped at tick ${tick}`);
      for (const link of [...children, ...(parent ? [parent] : [])]) link.sock.close();
      return 0;
    }
    if (waitsForDown(first, tick, args.period, allEnded)) { // my decision ticks: DOWN to every child
      for (let i = 0; i < children.length; i++) {
        await children[i].send(DOWN, { tick, batch: b, arrays: { a: act(spaces[i], random, b) } });
      }
    }
    first = false;
  }
}

main().then((code) => process.exit(code)).catch((e) => { console.error(e); process.exit(1); });
