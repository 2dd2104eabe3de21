#!/usr/bin/env node
/**
 * server.mjs - one Hocuspocus instance for the cluster benchmark (../cluster_fanout.py).
 *
 *   node tests/bench/hocuspocus/server.mjs --port 1234 [--redis 127.0.0.1:6379] [--id NAME]
 *
 * Without --redis: a plain Hocuspocus server (documents in memory). With --redis: the same
 * with @hocuspocus/extension-redis, which relays every document's updates and awareness to
 * the other instances on the same Redis (pub/sub). No database extension: nothing is stored.
 * Prints "listening on PORT" once it accepts connections; stops on SIGTERM.
 */

import { Server } from '@hocuspocus/server'
import { Redis } from '@hocuspocus/extension-redis'

const USAGE = 'usage: server.mjs --port PORT [--redis HOST:PORT] [--id NAME]'

/** @param {string[]} argv */
const parseArgs = (argv) => {
  /** @type {Record<string, string>} */
  const o = { port: '', redis: '', id: '' }
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '')
    if (!(key in o) || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}\n${USAGE}`)
    }
    o[key] = argv[i + 1]
  }
  if (!/^\d+$/.test(o.port)) {
    throw new Error(USAGE)
  }
  return o
}

const main = async () => {
  const opt = parseArgs(process.argv.slice(2))
  const extensions = []
  if (opt.redis !== '') {
    const [host, port] = opt.redis.split(':')
    extensions.push(new Redis({ host, port: Number(port), identifier: opt.id || `hp-${opt.port}` }))
  }
  const server = new Server({
    port: Number(opt.port),
    address: '127.0.0.1',
    quiet: true,
    stopOnSignals: true,
    extensions
  })
  await server.listen()
  process.stdout.write(`listening on ${opt.port}\n`)
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
