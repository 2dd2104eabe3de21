// The repository's events, live: the engine's own protocol on /ws (one msgpack map per
// binary frame, protocol/README.md), used here for nothing but `events.subscribe`.
//
// Events say who joined or left which branch and file (`presence`), that a branch got a
// commit (`commit`) or moved (`ref`: a merge, a fork, a push). The page reads the branch
// list and log again when one comes, and once after every reconnect.
import { encode, decode } from '@msgpack/msgpack'

const HELLO = 1
const WELCOME = 2
const ERROR = 8
const CALL = 11
const RESULT = 12
const EVENT = 13

/** Calls `onEvent(data)` for each event of `repo`, and `onEvent(null)` when (re)connected. */
export function subscribe ({ api, repo, onEvent }) {
  let socket = null
  let delay = 250
  let stopped = false

  function connect () {
    socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`)
    socket.binaryType = 'arraybuffer'
    const send = message => socket.send(encode(message))
    socket.onopen = () => send({ t: HELLO, version: 1, ...api.params })
    socket.onmessage = ({ data }) => {
      const message = decode(new Uint8Array(data))
      if (message.t === WELCOME) {
        send({ t: CALL, id: 1, op: 'events.subscribe', args: { repo } })
      } else if (message.t === RESULT && message.id === 1 && message.code === undefined) {
        delay = 250
        onEvent(null) // subscribed: what happened while away is read again
      } else if (message.t === EVENT) {
        onEvent(message.data)
      } else if (message.t === ERROR || message.t === RESULT) {
        console.warn('events:', message.message)
      }
    }
    socket.onclose = () => {
      if (stopped) return
      setTimeout(connect, delay)
      delay = Math.min(delay * 2, 4000)
    }
  }

  connect()
  return () => { stopped = true; socket?.close() }
}
