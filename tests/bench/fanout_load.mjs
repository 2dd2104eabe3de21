#!/usr/bin/env node
/**
 * fanout_load.mjs - fan-out load generator for any y-websocket compatible server.
 *
 *   node tests/bench/fanout_load.mjs --url ws://127.0.0.1:8765/yjs --room bench/main:load.md \
 *        --clients 50 --rate 10 --duration 20 --warmup 2 [--drain 15] [--seed 1]
 *
 * Every client is a stock y-websocket WebsocketProvider with its own Y.Doc (all
 * in this one process, so all timestamps come from one performance.now() clock).
 * Each client inserts `rate` small unique tags per second (`[c12:345]`) at
 * random positions of the root-level Y.Text `source`. Edits made during the
 * first `warmup` seconds are sent but not measured.
 *
 * Arrival detection costs O(#clients) per received transaction and never
 * scans the text: Yjs' YTextEvent.delta / YEvent.changes walk the whole item
 * list of the type on every event (O(document)), which with 50 docs in one
 * process would swamp the CPU shared with the server. Instead every receiver
 * listens to `afterTransaction` and compares the transaction's before/after
 * state vectors: when sender S's clock reaches the end clock of S's k-th edit,
 * that edit (its whole string item) has been integrated by the receiver.
 *
 * Latency of an edit = time until it is integrated by EVERY other client
 * (max over receivers: p50_ms / p99_ms); recv_p50_ms / recv_p99_ms are over
 * all (edit, receiver) pairs. After sending stops, the generator waits (at
 * most --drain seconds) until every receiver has every measured edit.
 *
 * Prints ONE JSON line on stdout; anything else goes to stderr (errors only,
 * plus progress with --verbose).
 */

import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

process.setMaxListeners(0)

/**
 * The npm packages live in tests/js/node_modules, which bare-specifier
 * resolution from tests/bench does not search. Resolve a package's ESM entry
 * there the way Node does (first matching "node"/"import"/"default" condition,
 * in key order) so that `yjs` is the very module instance y-websocket imports.
 * @param {string} name
 */
const importPkg = async (name) => {
  const base = new URL('../js/node_modules/', import.meta.url)
  const pkgUrl = new URL(`${name}/package.json`, base)
  const pkg = JSON.parse(readFileSync(pkgUrl, 'utf8'))
  /** @param {any} e @return {string|null} */
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

/** @type {any} */
let Y
/** @type {any} */
let WebSocket
/** @type {any} */
let WebsocketProvider

const USAGE = 'usage: fanout_load.mjs --url ws://HOST:PORT/yjs --room NAME [--clients 50] ' +
  '[--rate 10] [--duration 20] [--warmup 2] [--drain 15] [--connect-timeout 30] [--seed 1] ' +
  '[--params k=v,k=v] [--verbose]'

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
    'connect-timeout': 30,
    seed: 1,
    params: '',
    verbose: false
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--help' || a === '-h') {
      process.stderr.write(USAGE + '\n')
      process.exit(0)
    }
    if (a === '--verbose') {
      o.verbose = true
      continue
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a)
    if (m === null || !(m[1] in o)) {
      throw new Error(`unknown argument ${a}\n${USAGE}`)
    }
    const value = m[2] !== undefined ? m[2] : argv[++i]
    if (value === undefined) {
      throw new Error(`missing value for --${m[1]}`)
    }
    o[m[1]] = value
  }
  if (!o.url || !o.room) {
    throw new Error(USAGE)
  }
  for (const k of ['clients', 'rate', 'duration', 'warmup', 'drain', 'connect-timeout', 'seed']) {
    o[k] = Number(o[k])
    if (!Number.isFinite(o[k]) || o[k] < 0) {
      throw new Error(`--${k} must be a non-negative number`)
    }
  }
  if (o.clients < 2 || !Number.isInteger(o.clients)) {
    throw new Error('--clients must be an integer >= 2')
  }
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
 * @param {number} seed
 * @return {() => number}
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
  constructor (cap = 1024) {
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

  sorted () {
    return this.a.slice(0, this.n).sort()
  }
}

/**
 * @param {Float64Array} sorted
 * @param {number} q
 */
const pct = (sorted, q) => {
  if (sorted.length === 0) {
    return null
  }
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return Math.round(sorted[i] * 1000) / 1000
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const main = async () => {
  const opt = parseArgs(process.argv.slice(2))
  Y = await importPkg('yjs')
  WebSocket = (await importPkg('ws')).default
  WebsocketProvider = (await importPkg('y-websocket')).WebsocketProvider
  const N = opt.clients
  const log = (/** @type {string} */ s) => {
    if (opt.verbose) {
      process.stderr.write(`[fanout] ${s}\n`)
    }
  }

  // ---- per-sender edit log --------------------------------------------------
  /**
   * @typedef {object} Sender
   * @property {number[]} endClock   clock right after edit k (exclusive end)
   * @property {number[]} sendTime   performance.now() just before edit k
   * @property {boolean[]} measured  false for warm-up edits
   * @property {number[]} recvCount  receivers that have integrated edit k
   * @property {number[]} lastRecv   latest receive time of edit k
   */
  /** @type {Sender[]} */
  const senders = []
  /** clientID -> sender index */
  const senderOf = new Map()
  /** ptr[r * N + s]: how many of sender s's edits receiver r has integrated */
  const ptr = new Int32Array(N * N)
  const recvLat = new F64(1 << 16)
  const allLat = new F64(1 << 12)
  let measuredSent = 0
  let measuredFull = 0
  let warmupSent = 0
  let tagChars = 0

  // ---- clients --------------------------------------------------------------
  /** @type {{doc: any, text: any, provider: any, rng: () => number, clock: number, k: number, nextDue: number}[]} */
  const clients = []
  for (let r = 0; r < N; r++) {
    const doc = new Y.Doc()
    senderOf.set(doc.clientID, r)
    senders.push({ endClock: [], sendTime: [], measured: [], recvCount: [], lastRecv: [] })
    doc.on('afterTransaction', (/** @type {any} */ tr) => {
      if (tr.local) {
        return
      }
      const now = performance.now()
      const before = tr.beforeState
      tr.afterState.forEach((/** @type {number} */ clock, /** @type {number} */ client) => {
        if ((before.get(client) || 0) === clock) {
          return
        }
        const s = senderOf.get(client)
        if (s === undefined || s === r) {
          return
        }
        const S = senders[s]
        const pi = r * N + s
        let p = ptr[pi]
        while (p < S.endClock.length && S.endClock[p] <= clock) {
          S.recvCount[p]++
          S.lastRecv[p] = now
          if (S.measured[p]) {
            recvLat.push(now - S.sendTime[p])
            if (S.recvCount[p] === N - 1) {
              allLat.push(now - S.sendTime[p])
              measuredFull++
            }
          }
          p++
        }
        ptr[pi] = p
      })
    })
    const provider = new WebsocketProvider(opt.url, opt.room, doc, {
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      params: opt.params
    })
    provider.on('connection-error', () => {})
    clients.push({
      doc,
      text: doc.getText('source'),
      provider,
      rng: makeRng(opt.seed * 1000003 + r),
      clock: 0,
      k: 0,
      nextDue: 0
    })
  }

  const shutdown = (/** @type {number} */ code) => {
    for (const c of clients) {
      try {
        c.provider.destroy()
        c.doc.destroy()
      } catch (err) {
        process.stderr.write(`[fanout] destroy failed: ${err}\n`)
      }
    }
    process.stdout.write('', () => setTimeout(() => process.exit(code), 100))
  }

  // ---- wait for everybody to sync --------------------------------------------
  const tConnect = performance.now()
  while (!clients.every((c) => c.provider.synced)) {
    if (performance.now() - tConnect > opt['connect-timeout'] * 1000) {
      const n = clients.filter((c) => c.provider.synced).length
      process.stderr.write(`[fanout] only ${n}/${N} clients synced after ${opt['connect-timeout']} s\n`)
      shutdown(2)
      return
    }
    await sleep(20)
  }
  const connectMs = performance.now() - tConnect
  log(`${N} clients synced in ${connectMs.toFixed(0)} ms`)
  // Let the initial awareness / sync chatter settle.
  await sleep(300)
  const initialLength = clients[0].text.length

  // ---- send ------------------------------------------------------------------
  const period = opt.rate > 0 ? 1000 / opt.rate : Infinity
  const t0 = performance.now()
  const tMeasure = t0 + opt.warmup * 1000
  const tEnd = tMeasure + opt.duration * 1000
  for (let r = 0; r < N; r++) {
    clients[r].nextDue = t0 + (r / N) * period // spread senders over one period
  }
  const cpu0 = process.cpuUsage()
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now()
      if (now >= tEnd) {
        clearInterval(timer)
        resolve(undefined)
        return
      }
      for (let r = 0; r < N; r++) {
        const c = clients[r]
        while (c.nextDue <= now && c.nextDue < tEnd) {
          c.nextDue += period
          const S = senders[r]
          const tag = `[c${r}:${c.k}]`
          c.k++
          const measured = performance.now() >= tMeasure
          const pos = Math.floor(c.rng() * (c.text.length + 1))
          const sendTime = performance.now()
          c.text.insert(pos, tag) // the provider sends the update synchronously
          c.clock += tag.length
          S.endClock.push(c.clock)
          S.sendTime.push(sendTime)
          S.measured.push(measured)
          S.recvCount.push(0)
          S.lastRecv.push(0)
          tagChars += tag.length
          if (measured) {
            measuredSent++
          } else {
            warmupSent++
          }
        }
      }
    }
    const timer = setInterval(tick, 2)
  })
  const sendWall = (performance.now() - tMeasure) / 1000
  log(`sent ${measuredSent} measured + ${warmupSent} warm-up edits; draining`)

  // ---- drain -----------------------------------------------------------------
  const tDrain = performance.now()
  while (measuredFull < measuredSent && performance.now() - tDrain < opt.drain * 1000) {
    await sleep(20)
  }
  const drainMs = performance.now() - tDrain
  const cpu = process.cpuUsage(cpu0)
  const cpuWall = performance.now() - t0

  // ---- convergence check (once, at the end) ----------------------------------
  const expectLength = initialLength + tagChars
  let converged = clients.every((c) => c.text.length === expectLength)
  if (converged) {
    const ref = clients[0].text.toString()
    converged = clients.every((c) => c.text.toString() === ref)
  }

  const all = allLat.sorted()
  const recv = recvLat.sorted()
  const result = {
    clients: N,
    rate: opt.rate,
    duration: opt.duration,
    warmup: opt.warmup,
    edits_sent: measuredSent,
    edits_fully_delivered: measuredFull,
    p50_ms: pct(all, 0.5),
    p99_ms: pct(all, 0.99),
    max_ms: pct(all, 1),
    recv_p50_ms: pct(recv, 0.5),
    recv_p99_ms: pct(recv, 0.99),
    recv_samples: recv.length,
    missing: measuredSent - measuredFull,
    warmup_edits: warmupSent,
    send_rate_actual: Math.round((measuredSent / Math.max(sendWall, 1e-9)) * 10) / 10,
    drain_ms: Math.round(drainMs),
    connect_ms: Math.round(connectMs),
    converged,
    generator_cpu_pct: Math.round(((cpu.user + cpu.system) / 1000 / cpuWall) * 1000) / 10
  }
  process.stdout.write(JSON.stringify(result) + '\n')
  shutdown(0)
}

main().catch((err) => {
  process.stderr.write(`[fanout] ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
