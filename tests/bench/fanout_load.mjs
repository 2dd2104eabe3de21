#!/usr/bin/env node
/**
 * fanout_load.mjs - fan-out load generator for any y-websocket compatible server.
 *
 *   node tests/bench/fanout_load.mjs --url ws://127.0.0.1:8765/yjs --room bench/main:load.md \
 *        --clients 50 --rate 10 --duration 20 --warmup 2 [--drain 15] [--workers 1] [--seed 1]
 *        [--docs 1] [--events]
 *
 * In --params, `{r}` is replaced by the client's number (e.g. user=u{r}: a user per client).
 *
 * --url may name several servers, comma-separated (the nodes of a cluster): the clients of
 * each document are dealt over them in turn, starting one server further for each document
 * (the i-th client of document d goes to url[(i + d) % n]), so every document has clients on
 * as many servers as it has clients, up to n, and every server gets the same share of them.
 * With --place doc all the clients of a document go to one server instead, the documents
 * dealt over the servers (document d on url[d % n]).
 *
 * --provider hocuspocus makes every client a stock HocuspocusProvider (@hocuspocus/provider,
 * with yjs and ws from tests/bench/hocuspocus/node_modules) instead of a y-websocket
 * WebsocketProvider: Hocuspocus (2.x and later) prefixes each message with the document's
 * name, which y-websocket clients do not speak. Light clients are y-websocket only.
 *
 * With --docs D there are D documents with --clients clients each (D x clients in all): the
 * room name must then hold `{d}`, replaced by the document's number (0 .. D-1). A client
 * only exchanges edits with the clients of its own document.
 *
 * Every client is a stock y-websocket WebsocketProvider with its own Y.Doc, or,
 * with --full-clients K, only the first K are and the others are light clients
 * (see lightClient below: the same protocol, without integrating what they receive).
 * Each client inserts `rate` small unique tags per second (`[c12:345]`) at
 * random positions of the root-level Y.Text `source`. Edits made during the
 * first `warmup` seconds are sent but not measured.
 *
 * All clients live in this one process; with --workers W they are spread over
 * W worker threads (one thread hosting 50 stock Yjs clients at 10 edits/s
 * each already needs about one CPU core). All times come from one clock,
 * process.hrtime (monotonic and shared by all threads of the process).
 *
 * Arrival detection costs O(#clients) per received transaction and never
 * scans the text: Yjs' YTextEvent.delta / YEvent.changes walk the whole item
 * list of the type on every event (O(document)), which with 50 docs in one
 * process would swamp the CPU shared with the server. Instead every receiver
 * listens to `afterTransaction` and compares the transaction's before/after
 * state vectors: a sender's clock grows by exactly the tag length with every
 * edit, so when sender S's clock in the receiver's doc reaches the end clock of
 * S's k-th edit, that edit's string item has been integrated by the receiver.
 *
 * Latency of an edit = time until it is integrated by EVERY other client of
 * its document (max over receivers: p50_ms / p99_ms); recv_p50_ms / recv_p99_ms
 * are over all (edit, receiver) pairs. After sending stops, the generator
 * waits (at most --drain seconds) until every receiver has every edit. An edit
 * some receiver never got is lost: its latency is infinite, and it stays in
 * the percentiles (a percentile that lands on a lost edit is reported as the
 * string "inf"; `lost` counts them, `lost_pairs` the (edit, receiver) pairs).
 * p50_delivered_ms / p99_delivered_ms are over the fully delivered edits only
 * (the figures this generator reported before, which a lost edit flatters).
 * At the end the texts of each document are compared (`converged`: identical
 * text of the expected length in every document).
 *
 * With --events the coordinator also prints `{"event":"measure_start"}` and
 * `{"event":"measure_end"}` on stdout when the measured window (the edits that
 * count) starts and ends, so a harness can sample a server's CPU over exactly
 * that window, and `{"event":"drained"}` when the drain ends (a server that fell
 * behind works past the window); the result is still the last line.
 *
 * Prints ONE JSON line on stdout; anything else goes to stderr (errors, plus
 * progress with --verbose). Generator health is reported too: generator_cpu_pct
 * (whole process, 100 = one core), gen_loop_delay_p99_ms (event-loop delay of
 * the client threads) and send_rate_actual; if the generator is saturated, the
 * latencies measure the generator, not the server.
 */

import { readFileSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'

process.setMaxListeners(0)

/** Milliseconds on the process-wide monotonic clock. */
const now = () => Number(process.hrtime.bigint()) / 1e6

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * @param {number} s sender index
 * @param {number} k edit number
 */
const tagOf = (s, k) => `[c${s}:${k}]`

/**
 * @param {number} seed
 * @return {() => number} uniform in [0, 1)
 */
const makeRng = (seed) => {
  let a = (seed >>> 0) || 0x9e3779b9
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Growable Float64 array. */
class F64 {
  constructor (cap = 256) {
    this.a = new Float64Array(cap)
    this.n = 0
  }

  /** @param {number} v */
  push (v) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2)
      b.set(this.a)
      this.a = b
    }
    this.a[this.n++] = v
  }

  view () {
    return this.a.subarray(0, this.n)
  }
}

// ============================================================================
// client thread
// ============================================================================

/**
 * The npm packages live in tests/js/node_modules, which bare-specifier
 * resolution from tests/bench does not search. Resolve a package's ESM entry
 * there the way Node does (first matching "node"/"import"/"default" condition,
 * in key order) so that `yjs` is the very module instance y-websocket imports.
 * @param {string} name
 * @param {string} modules the node_modules folder, relative to this file
 */
const importPkg = async (name, modules = '../js/node_modules/') => {
  const base = new URL(modules, import.meta.url)
  const pkgUrl = new URL(`${name}/package.json`, base)
  const pkg = JSON.parse(readFileSync(pkgUrl, 'utf8'))
  /**
   * @param {any} e
   * @return {string|null}
   */
  const pick = (e) => {
    if (typeof e === 'string') {
      return e
    }
    if (e === null || typeof e !== 'object') {
      return null
    }
    for (const key of Object.keys(e)) {
      if (key === 'node' || key === 'import' || key === 'default') {
        const r = pick(e[key])
        if (r !== null) {
          return r
        }
      }
    }
    return null
  }
  const exp = pkg.exports
  const entry = (exp && (typeof exp === 'string' || !('.' in exp) ? pick(exp) : pick(exp['.']))) ||
    pkg.module || pkg.main || 'index.js'
  return import(new URL(entry, pkgUrl).href)
}

/** @param {number[]} out @param {number} n */
const writeVarUint = (out, n) => {
  while (n > 0x7f) {
    out.push(0x80 | (n & 0x7f))
    n = Math.floor(n / 128)
  }
  out.push(n)
}

/**
 * A y-websocket sync message: messageSync, `step` (0 step 1, 1 step 2, 2 update), payload.
 * @param {number} step
 * @param {Uint8Array} payload
 */
const syncMessage = (step, payload) => {
  const head = [0, step]
  writeVarUint(head, payload.length)
  const out = new Uint8Array(head.length + payload.length)
  out.set(head)
  out.set(payload, head.length)
  return out
}

/**
 * A light client: the y-websocket sync protocol on a bare WebSocket, with a Y.Doc holding
 * only its own edits. What it receives is not integrated: each update's per-client clock
 * ranges are read with Y.parseUpdateMeta (which decodes the structs but searches and
 * integrates nothing), so one generator process can keep up with many clients. The stock
 * clients run alongside it prove that the same stream converges.
 * @param {any} Y
 * @param {any} WebSocket
 * @param {any} opt
 * @param {number} r
 * @param {(c: any, client: number, clock: number, t: number) => void} arrived
 */
const lightClient = (Y, WebSocket, opt, r, arrived) => {
  const C = opt.clients
  const base = Math.floor(r / C) * C
  const doc = new Y.Doc()
  const query = new URLSearchParams(paramsOf(opt, r)).toString()
  const ws = new WebSocket(`${urlOf(opt, r)}/${roomOf(opt, r)}${query ? '?' + query : ''}`)
  const recv = []
  const nextEnd = new Float64Array(C)
  for (let j = 0; j < C; j++) {
    recv.push(new F64(base + j === r ? 1 : 256))
    nextEnd[j] = tagOf(base + j, 0).length
  }
  const self = {
    r,
    base,
    full: false,
    doc,
    text: doc.getText('source'),
    provider: { synced: false, destroy: () => ws.close() },
    rng: makeRng(opt.seed * 1000003 + r),
    k: 0,
    nextDue: 0,
    sendTimes: new F64(256),
    recv,
    ptr: new Int32Array(C),
    nextEnd
  }
  doc.on('update', (/** @type {Uint8Array} */ update) => {
    if (ws.readyState === 1) {
      ws.send(syncMessage(2, update))
    }
  })
  ws.on('open', () => ws.send(syncMessage(0, Y.encodeStateVector(doc))))
  ws.on('error', () => {})
  ws.on('message', (/** @type {Buffer} */ data) => {
    const t = now()
    let pos = 0
    const readVarUint = () => {
      let n = 0
      let mult = 1
      for (;;) {
        const b = data[pos++]
        n += (b & 0x7f) * mult
        if (b < 0x80) {
          return n
        }
        mult *= 128
      }
    }
    if (readVarUint() !== 0) {
      return // awareness, auth: not measured
    }
    const step = readVarUint()
    const len = readVarUint()
    const payload = data.subarray(pos, pos + len)
    if (step === 0) {
      ws.send(syncMessage(1, Y.encodeStateAsUpdate(doc, payload)))
      return
    }
    if (step === 1) {
      self.provider.synced = true
    }
    Y.parseUpdateMeta(payload).to.forEach((/** @type {number} */ clock, /** @type {number} */ client) => {
      arrived(self, client, clock, t)
    })
  })
  return self
}

/**
 * The room of client r: its document's name.
 * @param {any} opt
 * @param {number} r
 */
const roomOf = (opt, r) => String(opt.room).replaceAll('{d}', String(Math.floor(r / opt.clients)))

/**
 * The server of client r: its document's clients dealt over the servers in turn, or (with
 * --place doc) its document's server.
 * @param {any} opt
 * @param {number} r
 */
const urlOf = (opt, r) => {
  const urls = String(opt.url).split(',')
  const d = Math.floor(r / opt.clients)
  return urls[(opt.place === 'doc' ? d : r % opt.clients + d) % urls.length]
}

/**
 * The URL parameters of client r (`{r}` in a value is replaced by r).
 * @param {any} opt
 * @param {number} r
 * @return {Record<string, string>}
 */
const paramsOf = (opt, r) => Object.fromEntries(
  Object.entries(opt.params).map(([k, v]) => [k, String(v).replaceAll('{r}', String(r))])
)

const clientThread = async () => {
  const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort)
  const { opt, indices } = workerData
  const N = opt.clients * opt.docs
  const C = opt.clients
  const hocuspocus = opt.provider === 'hocuspocus'
  const modules = hocuspocus ? './hocuspocus/node_modules/' : '../js/node_modules/'
  const Y = await importPkg('yjs', modules)
  const WebSocket = (await importPkg('ws', modules)).default
  const { WebsocketProvider } = hocuspocus ? {} : await importPkg('y-websocket', modules)
  const { HocuspocusProvider } = hocuspocus ? await importPkg('@hocuspocus/provider', modules) : {}
  const LOOP_RESOLUTION_MS = 5
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })

  /** clientID -> global sender index (filled in by 'start') */
  const senderOf = new Map()
  /** @type {Array<{r: number, base: number, full: boolean, doc: any, text: any, provider: any, rng: () => number, k: number, nextDue: number, sendTimes: F64, recv: F64[], ptr: Int32Array, nextEnd: Float64Array}>} */
  const clients = []
  let recvPairs = 0
  let sent = 0

  /**
   * Arrival bookkeeping shared by both kinds of client: receiver r has now integrated (or,
   * for a light client, received) sender client `client`'s structs up to `clock`. Senders
   * are indexed within the receiver's document (j = s - base).
   */
  const arrived = (/** @type {any} */ c, /** @type {number} */ client, /** @type {number} */ clock, /** @type {number} */ t) => {
    const s = senderOf.get(client)
    if (s === undefined || s === c.r || s < c.base || s >= c.base + C) {
      return
    }
    const j = s - c.base
    let p = c.ptr[j]
    let end = c.nextEnd[j]
    const times = c.recv[j]
    while (end <= clock) {
      times.push(t)
      recvPairs++
      p++
      end += tagOf(s, p).length
    }
    c.ptr[j] = p
    c.nextEnd[j] = end
  }

  for (const r of indices) {
    if (r >= opt['full-clients']) {
      clients.push(lightClient(Y, WebSocket, opt, r, arrived))
      continue
    }
    const doc = new Y.Doc()
    const base = Math.floor(r / C) * C
    /** @type {F64[]} */
    const recv = []
    const ptr = new Int32Array(C)
    const nextEnd = new Float64Array(C)
    for (let j = 0; j < C; j++) {
      recv.push(new F64(base + j === r ? 1 : 256))
      nextEnd[j] = tagOf(base + j, 0).length
    }
    doc.on('afterTransaction', (/** @type {any} */ tr) => {
      if (tr.local) {
        return
      }
      const t = now()
      const before = tr.beforeState
      tr.afterState.forEach((/** @type {number} */ clock, /** @type {number} */ client) => {
        if ((before.get(client) || 0) !== clock) {
          arrived(self, client, clock, t)
        }
      })
    })
    const provider = hocuspocus
      ? new HocuspocusProvider({
        url: urlOf(opt, r),
        name: roomOf(opt, r),
        document: doc,
        WebSocketPolyfill: WebSocket
      })
      : new WebsocketProvider(urlOf(opt, r), roomOf(opt, r), doc, {
        WebSocketPolyfill: WebSocket,
        disableBc: true,
        params: paramsOf(opt, r)
      })
    if (!hocuspocus) {
      provider.on('connection-error', () => {})
    }
    const self = {
      r,
      base,
      full: true,
      doc,
      text: doc.getText('source'),
      provider,
      rng: makeRng(opt.seed * 1000003 + r),
      k: 0,
      nextDue: 0,
      sendTimes: new F64(256),
      recv,
      ptr,
      nextEnd
    }
    clients.push(self)
  }

  const t0 = now()
  while (!clients.every((c) => c.provider.synced)) {
    if (now() - t0 > opt['connect-timeout'] * 1000) {
      const n = clients.filter((c) => c.provider.synced).length
      port.postMessage({ type: 'error', error: `only ${n}/${clients.length} clients of a thread synced after ${opt['connect-timeout']} s` })
      return
    }
    await sleep(20)
  }
  port.postMessage({
    type: 'ready',
    ids: clients.map((c) => [c.r, c.doc.clientID]),
    // the text each stock client starts from, by client (-1: a light client)
    initial: clients.map((c) => [c.r, c.full ? c.text.length : -1])
  })

  /** @type {any} */
  let timer = null
  /** @type {any} */
  let progressTimer = null
  port.on('message', (/** @type {any} */ msg) => {
    if (msg.type === 'start') {
      for (const [clientID, r] of msg.idMap) {
        senderOf.set(clientID, r)
      }
      const period = opt.rate > 0 ? 1000 / opt.rate : Infinity
      for (const c of clients) {
        c.nextDue = msg.tStart + (c.r / N) * period // spread senders over one period
      }
      loopDelay.enable()
      const tick = () => {
        const t = now()
        for (const c of clients) {
          while (c.nextDue <= t && c.nextDue < msg.tEnd) {
            c.nextDue += period
            const tag = tagOf(c.r, c.k)
            c.k++
            const pos = Math.floor(c.rng() * (c.text.length + 1))
            c.sendTimes.push(now())
            c.text.insert(pos, tag) // the provider sends the update synchronously
            sent++
          }
        }
        if (t >= msg.tEnd) {
          clearInterval(timer)
        }
      }
      timer = setInterval(tick, 2)
      progressTimer = setInterval(() => port.postMessage({ type: 'progress', sent, recvPairs }), 50)
    } else if (msg.type === 'stop') {
      clearInterval(timer)
      clearInterval(progressTimer)
      loopDelay.disable()
      const full = clients.filter((c) => c.full)
      const result = {
        type: 'result',
        sent,
        recvPairs,
        // the final text of every stock client, by client
        texts: full.map((c) => [c.r, c.text.toString()]),
        // the histogram records whole timer intervals; report the lag beyond them
        loopDelayP99: loopDelay.count > 0 ? Math.max(0, loopDelay.percentile(99) / 1e6 - LOOP_RESOLUTION_MS) : 0,
        loopDelayMax: loopDelay.count > 0 ? Math.max(0, loopDelay.max / 1e6 - LOOP_RESOLUTION_MS) : 0,
        sendTimes: clients.map((c) => [c.r, c.sendTimes.view().slice()]),
        recv: clients.map((c) => [c.r, c.recv.map((f) => f.view().slice())])
      }
      for (const c of clients) {
        try {
          c.provider.destroy()
          c.doc.destroy()
        } catch (err) {
          process.stderr.write(`[fanout] destroy failed: ${err}\n`)
        }
      }
      port.postMessage(result)
      setTimeout(() => process.exit(0), 200)
    }
  })
}

// ============================================================================
// coordinator (main thread)
// ============================================================================

const USAGE = 'usage: fanout_load.mjs --url ws://HOST:PORT/yjs[,ws://...] --room NAME ' +
  '[--provider y-websocket|hocuspocus] [--place client|doc] [--clients 50] ' +
  '[--rate 10] [--duration 20] [--warmup 2] [--drain 15] [--workers 1] [--young-mb 0] ' +
  '[--connect-timeout 30] [--seed 1] [--full-clients N] [--params k=v,k=v] [--docs 1] [--events] ' +
  '[--verbose] [--timeline]'

class UsageError extends Error {}

/** @param {string[]} argv */
const parseArgs = (argv) => {
  /** @type {Record<string, any>} */
  const o = {
    url: null,
    room: null,
    clients: 50,
    rate: 10,
    duration: 20,
    warmup: 2,
    drain: 15,
    workers: 1,
    'young-mb': 0,
    'connect-timeout': 30,
    seed: 1,
    'full-clients': -1,
    params: '',
    docs: 1,
    provider: 'y-websocket',
    place: 'client',
    verbose: false,
    timeline: false,
    events: false
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') {
      process.stderr.write(USAGE + '\n')
      process.exit(0)
    }
    if (a === '--verbose' || a === '--timeline' || a === '--events') {
      o[a.slice(2)] = true
      continue
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a)
    if (m === null || !(m[1] in o)) {
      throw new UsageError(`unknown argument ${a}\n${USAGE}`)
    }
    const value = m[2] !== undefined ? m[2] : argv[++i]
    if (value === undefined) {
      throw new UsageError(`missing value for --${m[1]}`)
    }
    o[m[1]] = value
  }
  if (!o.url || !o.room) {
    throw new UsageError(USAGE)
  }
  if (Number(o['full-clients']) < 0) {
    o['full-clients'] = Number(o.clients) * Number(o.docs)
  }
  for (const k of ['clients', 'rate', 'duration', 'warmup', 'drain', 'workers', 'young-mb', 'connect-timeout', 'seed', 'full-clients', 'docs']) {
    o[k] = Number(o[k])
    if (!Number.isFinite(o[k]) || o[k] < 0) {
      throw new UsageError(`--${k} must be a non-negative number`)
    }
  }
  if (o.clients < 2 || !Number.isInteger(o.clients)) {
    throw new UsageError('--clients must be an integer >= 2')
  }
  if (o.docs < 1 || !Number.isInteger(o.docs)) {
    throw new UsageError('--docs must be an integer >= 1')
  }
  if (o.provider !== 'y-websocket' && o.provider !== 'hocuspocus') {
    throw new UsageError('--provider must be y-websocket or hocuspocus')
  }
  if (o.place !== 'client' && o.place !== 'doc') {
    throw new UsageError('--place must be client or doc')
  }
  if (o.provider === 'hocuspocus' && o['full-clients'] < o.clients * o.docs) {
    throw new UsageError('--full-clients: light clients speak y-websocket only')
  }
  if (o.docs > 1 && !String(o.room).includes('{d}')) {
    throw new UsageError('with --docs > 1 the room name must hold {d} (the document number)')
  }
  o.workers = Math.max(1, Math.min(o.clients * o.docs, Math.floor(o.workers)))
  /** @type {Record<string, string>} */
  const params = {}
  for (const kv of String(o.params).split(',').filter((s) => s !== '')) {
    const eq = kv.indexOf('=')
    params[eq < 0 ? kv : kv.slice(0, eq)] = eq < 0 ? '' : kv.slice(eq + 1)
  }
  o.params = params
  return o
}

/**
 * The q-quantile of sorted latencies (nearest rank); a lost edit's latency is Infinity,
 * written "inf" (JSON has no infinity).
 * @param {Float64Array} sorted
 * @param {number} q
 * @return {number|string|null}
 */
const pct = (sorted, q) => {
  if (sorted.length === 0) {
    return null
  }
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return Number.isFinite(sorted[i]) ? Math.round(sorted[i] * 1000) / 1000 : 'inf'
}

const coordinator = async () => {
  const opt = parseArgs(process.argv.slice(2))
  const C = opt.clients
  const N = C * opt.docs
  const W = opt.workers
  const log = (/** @type {string} */ s) => {
    if (opt.verbose) {
      process.stderr.write(`[fanout] ${s}\n`)
    }
  }

  /** @type {Worker[]} */
  const workers = []
  /** @type {Array<{sent: number, recvPairs: number}>} */
  const progress = []
  /** @type {Array<(msg: any) => void>} */
  const waiters = []
  /** @type {any[]} */
  const inbox = []
  const fail = (/** @type {string} */ why) => {
    process.stderr.write(`[fanout] ${why}\n`)
    for (const w of workers) {
      w.terminate()
    }
    process.exit(2)
  }
  const nextMessage = () => new Promise((resolve) => {
    if (inbox.length > 0) {
      resolve(inbox.shift())
    } else {
      waiters.push(resolve)
    }
  })
  for (let w = 0; w < W; w++) {
    const indices = []
    for (let r = w; r < N; r += W) {
      indices.push(r)
    }
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { opt, indices },
      // Yjs allocates a lot of short-lived objects per received update; a
      // bigger young generation cuts the scavenge cost noticeably.
      resourceLimits: opt['young-mb'] > 0 ? { maxYoungGenerationSizeMb: opt['young-mb'] } : undefined
    })
    progress.push({ sent: 0, recvPairs: 0 })
    worker.on('message', (/** @type {any} */ msg) => {
      if (msg.type === 'progress') {
        progress[w] = msg
      } else if (msg.type === 'error') {
        fail(msg.error)
      } else {
        msg.worker = w
        const waiter = waiters.shift()
        if (waiter !== undefined) {
          waiter(msg)
        } else {
          inbox.push(msg)
        }
      }
    })
    worker.on('error', (err) => fail(`client thread ${w} crashed: ${err && err.stack ? err.stack : err}`))
    workers.push(worker)
  }

  // ---- wait for everybody to sync --------------------------------------------
  const tConnect = now()
  /** @type {Array<[number, number]>} */
  const idMap = []
  /** the text length each document starts from (as its stock clients saw it; -1: none) */
  const initialLength = new Array(opt.docs).fill(-1)
  for (let i = 0; i < W; i++) {
    const msg = /** @type {any} */ (await nextMessage())
    for (const [r, clientID] of msg.ids) {
      idMap.push([clientID, r])
    }
    for (const [r, length] of msg.initial) {
      const d = Math.floor(r / C)
      initialLength[d] = Math.max(initialLength[d], length)
    }
  }
  const connectMs = now() - tConnect
  log(`${N} clients synced in ${connectMs.toFixed(0)} ms (${W} thread(s))`)
  await sleep(300) // let the initial sync / awareness chatter settle

  // ---- send ------------------------------------------------------------------
  const cpu0 = process.cpuUsage()
  const tStart = now() + 20
  const tMeasure = tStart + opt.warmup * 1000
  const tEnd = tMeasure + opt.duration * 1000
  for (const w of workers) {
    w.postMessage({ type: 'start', idMap, tStart, tEnd })
  }
  /** @param {string} name */
  const event = (name) => {
    if (opt.events) {
      process.stdout.write(JSON.stringify({ event: name }) + '\n')
    }
  }
  await sleep(tMeasure - now())
  event('measure_start')
  await sleep(tEnd - now())
  event('measure_end')
  await sleep(tEnd - now() + 10)
  const sendWall = (now() - tMeasure) / 1000

  // ---- drain -----------------------------------------------------------------
  const tDrain = now()
  const totals = () => progress.reduce((a, p) => [a[0] + p.sent, a[1] + p.recvPairs], [0, 0])
  while (now() - tDrain < opt.drain * 1000) {
    await sleep(60) // progress is posted every 50 ms
    const [sent, pairs] = totals()
    log(`drain: ${pairs}/${sent * (C - 1)} deliveries`)
    if (pairs >= sent * (C - 1)) {
      break
    }
  }
  const drainMs = now() - tDrain
  event('drained')
  const cpu = process.cpuUsage(cpu0)
  const cpuWall = now() - tStart

  // ---- collect -----------------------------------------------------------------
  for (const w of workers) {
    w.postMessage({ type: 'stop' })
  }
  /** @type {Float64Array[]} */
  const sendTimes = new Array(N)
  /** @type {Float64Array[][]} recvTimes[r][j]: receiver r, sender base(r) + j */
  const recvTimes = new Array(N)
  /** @type {Array<Array<string>>} the final texts of each document's stock clients */
  const textsOf = Array.from({ length: opt.docs }, () => /** @type {string[]} */ ([]))
  let loopDelayP99 = 0
  let loopDelayMax = 0
  for (let i = 0; i < W; i++) {
    const msg = /** @type {any} */ (await nextMessage())
    for (const [r, t] of msg.sendTimes) {
      sendTimes[r] = t
    }
    for (const [r, perSender] of msg.recv) {
      recvTimes[r] = perSender
    }
    for (const [r, text] of msg.texts) {
      textsOf[Math.floor(r / C)].push(text)
    }
    loopDelayP99 = Math.max(loopDelayP99, msg.loopDelayP99)
    loopDelayMax = Math.max(loopDelayMax, msg.loopDelayMax)
  }

  // ---- evaluate ----------------------------------------------------------------
  let editsSent = 0
  let warmupSent = 0
  let full = 0
  let lostPairs = 0
  const tagChars = new Array(opt.docs).fill(0)
  const allLat = [] // every measured edit; Infinity when some receiver never got it
  const deliveredLat = [] // the fully delivered edits only
  const recvLat = []
  /** @type {number[][]} all-receivers latencies by second of sending (--timeline) */
  const bySecond = []
  for (let s = 0; s < N; s++) {
    const st = sendTimes[s]
    const base = Math.floor(s / C) * C
    for (let k = 0; k < st.length; k++) {
      tagChars[base / C] += tagOf(s, k).length
      if (st[k] < tMeasure) {
        warmupSent++
        continue
      }
      editsSent++
      let worst = 0
      let seen = 0
      for (let r = base; r < base + C; r++) {
        if (r === s) {
          continue
        }
        const rt = recvTimes[r][s - base]
        if (k < rt.length) {
          const lat = rt[k] - st[k]
          recvLat.push(lat)
          worst = Math.max(worst, lat)
          seen++
        } else {
          recvLat.push(Infinity)
          lostPairs++
        }
      }
      if (seen !== C - 1) {
        allLat.push(Infinity)
      } else {
        full++
        allLat.push(worst)
        deliveredLat.push(worst)
        if (opt.timeline) {
          const sec = Math.floor((st[k] - tMeasure) / 1000)
          while (bySecond.length <= sec) {
            bySecond.push([])
          }
          bySecond[sec].push(worst)
        }
      }
    }
  }
  const all = Float64Array.from(allLat).sort()
  const delivered = Float64Array.from(deliveredLat).sort()
  const recv = Float64Array.from(recvLat).sort()
  let convergedDocs = 0
  let checkedDocs = 0
  for (let d = 0; d < opt.docs; d++) {
    const texts = textsOf[d]
    if (texts.length === 0 || initialLength[d] < 0) {
      continue // light clients only: nothing integrated to compare
    }
    checkedDocs++
    const expect = initialLength[d] + tagChars[d]
    if (texts.every((t) => t === texts[0] && t.length === expect)) {
      convergedDocs++
    }
  }
  const converged = checkedDocs > 0 && convergedDocs === checkedDocs

  const result = {
    clients: C,
    docs: opt.docs,
    rate: opt.rate,
    duration: opt.duration,
    warmup: opt.warmup,
    edits_sent: editsSent,
    edits_fully_delivered: full,
    p50_ms: pct(all, 0.5),
    p99_ms: pct(all, 0.99),
    max_ms: pct(all, 1),
    p50_delivered_ms: pct(delivered, 0.5),
    p99_delivered_ms: pct(delivered, 0.99),
    recv_p50_ms: pct(recv, 0.5),
    recv_p99_ms: pct(recv, 0.99),
    recv_samples: recv.length,
    lost: editsSent - full,
    lost_pairs: lostPairs,
    missing: editsSent - full,
    warmup_edits: warmupSent,
    converged,
    converged_docs: convergedDocs,
    checked_docs: checkedDocs,
    send_rate_actual: Math.round((editsSent / Math.max(sendWall, 1e-9)) * 10) / 10,
    drain_ms: Math.round(drainMs),
    connect_ms: Math.round(connectMs),
    workers: W,
    generator_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / cpuWall) * 1000) / 10,
    gen_loop_delay_p99_ms: Math.round(loopDelayP99 * 10) / 10,
    gen_loop_delay_max_ms: Math.round(loopDelayMax * 10) / 10
  }
  if (opt.timeline) {
    /** @type {any} */ (result).timeline = bySecond.map((l, sec) => {
      const a = Float64Array.from(l).sort()
      return { sec, edits: a.length, p50_ms: pct(a, 0.5), p99_ms: pct(a, 0.99) }
    })
  }
  process.stdout.write(JSON.stringify(result) + '\n', () => setTimeout(() => process.exit(0), 50))
}

if (isMainThread) {
  coordinator().catch((err) => {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`)
      process.exit(2)
    }
    process.stderr.write(`[fanout] ${err && err.stack ? err.stack : err}\n`)
    process.exit(1)
  })
} else {
  clientThread().catch((err) => {
    process.stderr.write(`[fanout] client thread: ${err && err.stack ? err.stack : err}\n`)
    process.exit(1)
  })
}
