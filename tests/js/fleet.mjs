#!/usr/bin/env node
/**
 * fleet.mjs - one Node process hosting many stock Yjs clients.
 *
 * Every client is its own `Y.Doc` plus a stock y-websocket `WebsocketProvider`
 * (WebSocketPolyfill: ws, disableBc: true). The shared text is the root-level
 * `Y.Text` named `source`.
 *
 * Protocol: newline-delimited JSON commands on stdin, one JSON line per command
 * on stdout. Every command may carry an `id` which is echoed in its reply.
 * Success replies are {"id": ..., "ok": true, ...fields}; failures are
 * {"id": ..., "ok": false, "error": "..."} (plus optional extra fields).
 * Replies are written as soon as a command finishes, so several slow commands
 * (open, connect, wait_text) can be in flight at once; match replies by `id`.
 *
 * Commands (all take `client`, a string name, unless noted):
 *   ping                                    -> {}
 *   open  {url, room, params?, awareness?, connect?=true, wait?=true,
 *          timeout_ms?=10000, fail_fast?=true, max_backoff_ms?}
 *                                           -> {client_id, synced}
 *   insert {index, text}                    -> {length}
 *   delete {index, length}                  -> {length}
 *   random_edits {count, marker_prefix, seed, interval_ms?=0,
 *                 filler_ratio?=0}          -> {markers, length}
 *   text                                    -> {text}
 *   state                                   -> {text, synced, connected, client_id,
 *                                               sync_count, closes, last_message_ms_ago,
 *                                               denied, awareness}
 *   set_awareness {state}                   -> {}
 *   disconnect {timeout_ms?=10000}          -> {}
 *   connect {timeout_ms?=10000, fail_fast?=true} -> {synced}
 *   wait_text {contains? | equals?, timeout_ms?=10000} -> {text}
 *   close                                   -> {}
 *   list (no client)                        -> {clients}
 *   shutdown (no client)                    -> {} then exit 0
 *
 * Only errors are logged to stderr.
 */

import * as readline from 'node:readline'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'

const MESSAGE_AUTH = 2
const DEFAULT_TIMEOUT_MS = 10000

// Every provider registers a process 'exit' listener; a large fleet would
// otherwise trigger MaxListenersExceededWarning on stderr.
process.setMaxListeners(0)

/**
 * @typedef {object} Client
 * @property {string} name
 * @property {Y.Doc} doc
 * @property {Y.Text} text
 * @property {WebsocketProvider} provider
 * @property {Array<[number, string]>} closes
 * @property {string[]} denied
 * @property {number} syncCount
 * @property {Set<() => void>} textWaiters
 * @property {Set<() => void>} syncWaiters
 * @property {Map<string, number>} markerCounters
 */

/** @type {Map<string, Client>} */
const clients = new Map()
let shuttingDown = false

class CommandError extends Error {
  /**
   * @param {string} message
   * @param {object} [extra]
   */
  constructor (message, extra = {}) {
    super(message)
    this.extra = extra
  }
}

/** @param {any} obj */
const send = (obj) => {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

/** @param {...any} args */
const logError = (...args) => {
  process.stderr.write('[fleet] ' + args.map(String).join(' ') + '\n')
}

/**
 * Deterministic PRNG (mulberry32).
 * @param {number} seed
 * @return {() => number} uniform in [0, 1)
 */
const makeRng = (seed) => {
  let a = (Number(seed) >>> 0) || 0x9e3779b9
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * @param {any} cmd
 * @return {Client}
 */
const getClient = (cmd) => {
  if (typeof cmd.client !== 'string') {
    throw new CommandError('missing string field "client"')
  }
  const c = clients.get(cmd.client)
  if (c === undefined) {
    throw new CommandError(`unknown client ${JSON.stringify(cmd.client)}`)
  }
  return c
}

/**
 * @param {any} value
 * @param {number} dflt
 */
const timeoutOf = (value, dflt = DEFAULT_TIMEOUT_MS) => {
  const n = Number(value)
  return Number.isFinite(n) && n >= 0 ? n : dflt
}

/**
 * Resolve once `predicate()` is true, re-checking whenever the waiter set is
 * notified. Rejects with `onTimeout()` after `timeoutMs`, or with the error
 * returned by `failCheck()` as soon as that returns non-null.
 * @param {Set<() => void>} waiters
 * @param {() => boolean} predicate
 * @param {number} timeoutMs
 * @param {() => Error} onTimeout
 * @param {() => (Error|null)} [failCheck]
 * @return {Promise<void>}
 */
const waitFor = (waiters, predicate, timeoutMs, onTimeout, failCheck = () => null) =>
  new Promise((resolve, reject) => {
    if (predicate()) {
      resolve()
      return
    }
    /** @type {any} */
    let timer = null
    const check = () => {
      if (predicate()) {
        waiters.delete(check)
        clearTimeout(timer)
        resolve()
        return
      }
      const err = failCheck()
      if (err !== null) {
        waiters.delete(check)
        clearTimeout(timer)
        reject(err)
      }
    }
    timer = setTimeout(() => {
      waiters.delete(check)
      reject(onTimeout())
    }, timeoutMs)
    waiters.add(check)
  })

/** @param {Set<() => void>} waiters */
const notify = (waiters) => {
  for (const w of Array.from(waiters)) {
    try {
      w()
    } catch (err) {
      logError('waiter failed:', err)
    }
  }
}

/**
 * @param {Client} c
 */
const awarenessStates = (c) => {
  /** @type {Record<string, any>} */
  const out = {}
  for (const [clientID, state] of c.provider.awareness.getStates()) {
    out[String(clientID)] = state
  }
  return out
}

/**
 * @param {Client} c
 */
const clientState = (c) => ({
  text: c.text.toString(),
  synced: c.provider.synced,
  connected: c.provider.wsconnected,
  client_id: c.doc.clientID,
  sync_count: c.syncCount,
  closes: c.closes.map(([code, reason]) => [code, reason]),
  last_message_ms_ago: Date.now() - c.provider.wsLastMessageReceived,
  denied: c.denied.slice(),
  awareness: awarenessStates(c)
})

/**
 * Wait until the provider is connected and synced. With `failFast`, give up
 * as soon as a permission-denied message or a close event arrives during the
 * wait (the client stays in the fleet and y-websocket keeps reconnecting).
 * @param {Client} c
 * @param {number} timeoutMs
 * @param {string} what
 * @param {boolean} failFast
 */
const waitSynced = (c, timeoutMs, what, failFast) => {
  const closes0 = c.closes.length
  const denied0 = c.denied.length
  const details = () => {
    const s = clientState(c)
    return { closes: s.closes, denied: s.denied, connected: s.connected, synced: s.synced }
  }
  return waitFor(
    c.syncWaiters,
    () => c.provider.synced && c.provider.wsconnected,
    timeoutMs,
    () => new CommandError(`${what}: not synced after ${timeoutMs} ms`, details()),
    () => {
      if (!clients.has(c.name)) {
        return new CommandError(`${what}: client was closed`)
      }
      if (!failFast) {
        return null
      }
      if (c.denied.length > denied0) {
        return new CommandError(`${what}: permission denied: ${c.denied[c.denied.length - 1]}`, details())
      }
      if (c.closes.length > closes0) {
        const [code, reason] = c.closes[c.closes.length - 1]
        return new CommandError(`${what}: connection closed (${code} ${reason})`, details())
      }
      return null
    }
  )
}

/** @param {any} cmd */
const cmdOpen = async (cmd) => {
  const name = cmd.client
  if (typeof name !== 'string' || name === '') {
    throw new CommandError('missing string field "client"')
  }
  if (clients.has(name)) {
    throw new CommandError(`client ${JSON.stringify(name)} already open`)
  }
  if (typeof cmd.url !== 'string' || typeof cmd.room !== 'string') {
    throw new CommandError('open needs string fields "url" and "room"')
  }
  /** @type {Record<string, string>} */
  const params = {}
  for (const [k, v] of Object.entries(cmd.params ?? {})) {
    params[k] = String(v)
  }
  const connect = cmd.connect !== false
  const doc = new Y.Doc()
  /** @type {Record<string, any>} */
  const opts = {
    connect: false,
    params,
    WebSocketPolyfill: WebSocket,
    disableBc: true
  }
  if (cmd.max_backoff_ms !== undefined) {
    opts.maxBackoffTime = Number(cmd.max_backoff_ms)
  }
  const provider = new WebsocketProvider(cmd.url, cmd.room, doc, opts)
  /** @type {Client} */
  const c = {
    name,
    doc,
    text: doc.getText('source'),
    provider,
    closes: [],
    denied: [],
    syncCount: 0,
    textWaiters: new Set(),
    syncWaiters: new Set(),
    markerCounters: new Map()
  }
  // y-websocket's own auth handler only console.warns; record denials instead.
  provider.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder, prov) => {
    authProtocol.readAuthMessage(decoder, prov.doc, (_ydoc, reason) => {
      c.denied.push(String(reason))
      notify(c.syncWaiters)
    })
  }
  provider.on('connection-close', (/** @type {any} */ event) => {
    const code = event && typeof event.code === 'number' ? event.code : 0
    const reason = event && event.reason !== undefined ? String(event.reason) : ''
    c.closes.push([code, reason])
    notify(c.syncWaiters)
  })
  provider.on('connection-error', () => {
    // Reconnects are y-websocket's business; the close event is recorded above.
  })
  provider.on('synced', (/** @type {boolean} */ isSynced) => {
    if (isSynced) {
      c.syncCount++
    }
    notify(c.syncWaiters)
  })
  provider.on('status', () => notify(c.syncWaiters))
  c.text.observe(() => notify(c.textWaiters))
  if (cmd.awareness !== undefined && cmd.awareness !== null) {
    provider.awareness.setLocalState(cmd.awareness)
  }
  clients.set(name, c)
  if (connect) {
    provider.connect()
  }
  if (!connect || cmd.wait === false) {
    return { client_id: doc.clientID, synced: provider.synced }
  }
  // On timeout the client stays in the fleet (inspect it with `state`).
  await waitSynced(c, timeoutOf(cmd.timeout_ms), 'open', cmd.fail_fast !== false)
  return { client_id: doc.clientID, synced: true }
}

/** @param {any} cmd */
const cmdInsert = (cmd) => {
  const c = getClient(cmd)
  const index = Number(cmd.index)
  if (typeof cmd.text !== 'string' || !Number.isInteger(index)) {
    throw new CommandError('insert needs integer "index" and string "text"')
  }
  if (index < 0 || index > c.text.length) {
    throw new CommandError(`insert index ${index} out of range 0..${c.text.length}`)
  }
  c.text.insert(index, cmd.text)
  return { length: c.text.length }
}

/** @param {any} cmd */
const cmdDelete = (cmd) => {
  const c = getClient(cmd)
  const index = Number(cmd.index)
  const length = Number(cmd.length)
  if (!Number.isInteger(index) || !Number.isInteger(length) || length < 0) {
    throw new CommandError('delete needs integer "index" and non-negative integer "length"')
  }
  if (index < 0 || index + length > c.text.length) {
    throw new CommandError(`delete range ${index}+${length} out of range 0..${c.text.length}`)
  }
  c.text.delete(index, length)
  return { length: c.text.length }
}

// Filler characters used by random_edits when filler_ratio > 0. Only these are
// ever deleted, so markers are never damaged.
const FILLER = '\u00b7\u2022'

/**
 * Positions where inserting cannot split a marker `<prefix>-<n>;`: the start,
 * the end, and right after any ';' (marker prefixes must not contain ';').
 * @param {string} s
 * @return {number[]}
 */
const boundaries = (s) => {
  const out = [0]
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) === 59 /* ; */) {
      out.push(i + 1)
    }
  }
  if (out[out.length - 1] !== s.length) {
    out.push(s.length)
  }
  return out
}

/** @param {any} cmd */
const cmdRandomEdits = async (cmd) => {
  const c = getClient(cmd)
  const count = Number(cmd.count)
  const prefix = String(cmd.marker_prefix ?? c.name)
  if (!Number.isInteger(count) || count < 0) {
    throw new CommandError('random_edits needs non-negative integer "count"')
  }
  if (prefix.includes(';')) {
    throw new CommandError('marker_prefix must not contain ";"')
  }
  const rng = makeRng(cmd.seed ?? 0)
  const intervalMs = Math.max(0, Number(cmd.interval_ms ?? 0) || 0)
  const fillerRatio = Math.min(1, Math.max(0, Number(cmd.filler_ratio ?? 0) || 0))
  const counterKey = prefix
  let n = c.markerCounters.get(counterKey) ?? 0
  /** @type {string[]} */
  const markers = []
  for (let i = 0; i < count; i++) {
    if (!clients.has(c.name)) {
      throw new CommandError('client closed during random_edits', { markers })
    }
    const s = c.text.toString()
    if (fillerRatio > 0 && rng() < fillerRatio) {
      // Filler op: delete one filler char if any (half the time), else insert one.
      /** @type {number[]} */
      const fillerPos = []
      for (let j = 0; j < s.length; j++) {
        if (FILLER.includes(s[j])) {
          fillerPos.push(j)
        }
      }
      if (fillerPos.length > 0 && rng() < 0.5) {
        c.text.delete(fillerPos[Math.floor(rng() * fillerPos.length)], 1)
      } else {
        const b = boundaries(s)
        c.text.insert(b[Math.floor(rng() * b.length)], FILLER[Math.floor(rng() * FILLER.length)])
      }
    } else {
      const marker = `${prefix}-${n};`
      n++
      const b = boundaries(s)
      c.text.insert(b[Math.floor(rng() * b.length)], marker)
      markers.push(marker)
    }
    if (intervalMs > 0 && i + 1 < count) {
      await sleep(intervalMs)
    }
  }
  c.markerCounters.set(counterKey, n)
  return { markers, length: c.text.length }
}

/** @param {any} cmd */
const cmdWaitText = async (cmd) => {
  const c = getClient(cmd)
  const timeoutMs = timeoutOf(cmd.timeout_ms)
  /** @type {(s: string) => boolean} */
  let pred
  if (typeof cmd.equals === 'string') {
    const want = cmd.equals
    pred = (s) => s === want
  } else if (Array.isArray(cmd.contains)) {
    const want = cmd.contains.map(String)
    pred = (s) => want.every((w) => s.includes(w))
  } else if (typeof cmd.contains === 'string') {
    const want = cmd.contains
    pred = (s) => s.includes(want)
  } else {
    throw new CommandError('wait_text needs "contains" (list of strings) or "equals" (string)')
  }
  await waitFor(c.textWaiters, () => pred(c.text.toString()), timeoutMs, () => {
    const text = c.text.toString()
    /** @type {Record<string, any>} */
    const extra = { text }
    if (Array.isArray(cmd.contains)) {
      extra.missing = cmd.contains.map(String).filter((/** @type {string} */ w) => !text.includes(w))
    }
    return new CommandError(`wait_text: condition not met after ${timeoutMs} ms`, extra)
  }, () => clients.has(c.name) ? null : new CommandError('wait_text: client was closed'))
  return { text: c.text.toString() }
}

/** @param {any} cmd */
const cmdDisconnect = async (cmd) => {
  const c = getClient(cmd)
  const p = c.provider
  p.disconnect()
  // Wait until the socket is really gone, so a following `connect` cannot see
  // the stale synced flag of the old connection.
  await waitFor(c.syncWaiters, () => p.ws === null && !p.wsconnected, timeoutOf(cmd.timeout_ms),
    () => new CommandError('disconnect: socket did not close in time'))
  return {}
}

/** @param {any} cmd */
const cmdConnect = async (cmd) => {
  const c = getClient(cmd)
  c.provider.connect()
  await waitSynced(c, timeoutOf(cmd.timeout_ms), 'connect', cmd.fail_fast !== false)
  return { synced: true }
}

/** @param {Client} c */
const destroyClient = (c) => {
  clients.delete(c.name)
  try {
    c.provider.destroy()
  } catch (err) {
    logError(`destroying provider of ${c.name} failed:`, err)
  }
  try {
    c.doc.destroy()
  } catch (err) {
    logError(`destroying doc of ${c.name} failed:`, err)
  }
  notify(c.textWaiters)
  notify(c.syncWaiters)
}

const shutdown = () => {
  if (shuttingDown) {
    return
  }
  shuttingDown = true
  for (const c of Array.from(clients.values())) {
    destroyClient(c)
  }
  // Let the reply (and the close frames) flush, then exit.
  process.stdout.write('', () => {
    setTimeout(() => process.exit(0), 50)
  })
}

/** @type {Record<string, (cmd: any) => any>} */
const handlers = {
  ping: () => ({}),
  list: () => ({ clients: Array.from(clients.keys()) }),
  open: cmdOpen,
  insert: cmdInsert,
  delete: cmdDelete,
  random_edits: cmdRandomEdits,
  text: (cmd) => ({ text: getClient(cmd).text.toString() }),
  state: (cmd) => clientState(getClient(cmd)),
  set_awareness: (cmd) => {
    getClient(cmd).provider.awareness.setLocalState(cmd.state ?? null)
    return {}
  },
  disconnect: cmdDisconnect,
  connect: cmdConnect,
  wait_text: cmdWaitText,
  close: (cmd) => {
    destroyClient(getClient(cmd))
    return {}
  }
}

/** @param {string} line */
const handleLine = async (line) => {
  if (line.trim() === '') {
    return
  }
  /** @type {any} */
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    logError('bad JSON command:', line)
    send({ id: null, ok: false, error: `bad JSON: ${err}` })
    return
  }
  const id = cmd && cmd.id !== undefined ? cmd.id : null
  const name = cmd && cmd.cmd
  if (name === 'shutdown') {
    send({ id, ok: true })
    shutdown()
    return
  }
  const handler = typeof name === 'string' && Object.hasOwn(handlers, name) ? handlers[name] : undefined
  if (handler === undefined) {
    send({ id, ok: false, error: `unknown command ${JSON.stringify(name)}` })
    return
  }
  try {
    const result = await handler(cmd)
    send({ ...result, id, ok: true })
  } catch (err) {
    const e = /** @type {any} */ (err)
    const extra = e instanceof CommandError ? e.extra : {}
    if (!(e instanceof CommandError)) {
      logError(`command ${name} failed:`, e && e.stack ? e.stack : e)
    }
    send({ ...extra, id, ok: false, error: String(e && e.message ? e.message : e) })
  }
}

process.on('uncaughtException', (err) => {
  logError('uncaught exception:', err && err.stack ? err.stack : err)
})
process.on('unhandledRejection', (err) => {
  logError('unhandled rejection:', err)
})

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  handleLine(line).catch((err) => logError('handler crashed:', err))
})
rl.on('close', shutdown)
