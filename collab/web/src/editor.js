// The editor binding: one CodeMirror 6 view on one live document.
//
// This is all an editor needs to join the engine: a Y.Doc, the stock y-websocket provider
// on `ws://HOST/yjs` with the room `<repo>/<branch>:<path>`, and y-codemirror.next binding
// the document's Y.Text `source` to the view. The server stamps each awareness state with
// the signed-in name, so the remote carets show who is who.
//
// What a stock client must handle besides: a server that refuses writes (a read-only user
// on a branch not theirs) answers them with a y-protocols permission-denied message; a
// server whose store lost the document closes with 4017 (RELOAD): the copy belongs to an
// earlier history of the document, and must be replaced by a fresh one; a server that
// refuses the document for good (a final close code: the document full, the token expired,
// not a text file...) must not be asked again and again, and the page says why.
//
// y-websocket does not say when the server has an edit: the editor asks (a sync step 1
// after the edit, whose step 2 the server answers once it has applied everything sent
// before), so that a document left with edits the server never got is kept until it has
// them, and the page can warn before it is closed.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { readAuthMessage } from 'y-protocols/auth'
import { writeSyncStep1 } from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import { encodeQueryParams } from 'lib0/url'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { Compartment, EditorState } from '@codemirror/state'
import {
  EditorView, keymap, lineNumbers, drawSelection, highlightActiveLine
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { syntaxHighlighting, defaultHighlightStyle, indentOnInput } from '@codemirror/language'
import { languageFor } from './languages.js'
import { lineEnds } from './lineends.js'
import { applyToYText, diff, offlineChanges } from './textmerge.js'

const RELOAD = 4017 // close code: the copy belongs to another epoch of the document
const UNAUTHORIZED = 4001
const DAMAGED = 4018
const MESSAGE_SYNC = 0 // y-websocket's message types
const MESSAGE_AUTH = 2
const SYNC_STEP_2 = 1 // y-protocols' sync message types

/** Close codes after which connecting again cannot help (protocol/README.md): the status
 * and the sentence the page shows. 4018 is tried again slowly (the server's store may be
 * repaired); 4001 after signing in again. Others (4008, 4029, 4500, 4503...) are retried. */
export const REFUSED = {
  4001: ['signed out', 'You are signed out (your access token has expired or was refused): sign in again. What you type meanwhile is kept here.'],
  4003: ['no access', 'You have no access to this repository: the document cannot be opened.'],
  4004: ['not found', 'This branch or repository no longer exists on the server.'],
  4006: ['bad name', 'The server does not accept this document\'s name.'],
  4007: ['unsupported', 'The server does not speak this page\'s protocol version: reload the page.'],
  4009: ['too large', 'Too large: the file is over the server\'s size limit for live documents, or the last change was over its message limit and was not kept.'],
  4010: ['change refused', 'The server refused a change: the last change was not kept.'],
  4013: ['not a text file', 'Not a text file (a binary file, a directory or a submodule): it cannot be edited here.'],
  4018: ['damaged', 'The server\'s stored history of this document is damaged; an operator must repair it. What you have is kept here, and the page tries again every 30 seconds.'],
  4019: ['document full', 'The document is full (over the server\'s size limit): the last change was not kept.']
}

export const settings = {
  keepFor: 10 * 60 * 1000, // how long a left document keeps trying to save its edits
  ackDelay: 200, // after an edit, the pause before asking the server whether it has it
  damagedRetry: 30 * 1000 // how often a damaged document (4018) is tried again
}

const live = new Set() // the editors, open or left, whose copies may hold unsaved edits

/** Whether any document, open or left, holds edits the server has not acknowledged (and
 * may still get: a copy refused for good cannot save them). */
export function unsavedEdits () {
  return [...live].some(editor => editor.unsaved)
}

function yjsUrl () {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/yjs`
}

/**
 * A document id as a room name for y-websocket, which puts it in the URL's path as it is:
 * percent-encoded, or `%`, `#` and `?` in a file's name would open another document (the
 * server decodes the path). `/` and `:` are left readable.
 */
export function roomName (docId) {
  return encodeURIComponent(docId).replace(/%2F/gi, '/').replace(/%3A/gi, ':')
}

/** A hue per name, the same in every browser. */
export function hueOf (name) {
  let hash = 0
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0
  return hash % 360
}

/**
 * Opens `docId` (`<repo>/<branch>:<path>`) in a new view under `parent`.
 * `extensions` come before the defaults (the ghost text binds Tab before indentation does);
 * `readOnly` for a branch the user may not write; `onStatus(text)` is told the connection's
 * state; `onRefused(refusal)` is told when the server refuses the document for good
 * (`{code, status, text, reason}`, from `REFUSED`) and with `null` when that is over;
 * `onLost({docId, text, reason})` when the editor, destroyed with edits the server had not
 * acknowledged, could not save them within `settings.keepFor`; `url` is this server's /yjs
 * unless given.
 *
 * The returned editor's `doc`, `ytext` and `provider` are those the view is bound to now:
 * they are replaced when the server says the copy belongs to an earlier history (4017).
 * `destroy()` takes the view away at once, and the copy once the server has its edits.
 */
export function openEditor (parent, {
  docId, api, user, readOnly = false, onStatus = () => {}, onRefused = () => {},
  onLost = () => {}, extensions = [], url = yjsUrl()
}) {
  const hue = hueOf(user)
  const binding = new Compartment() // yCollab on the current copy
  const access = new Compartment() // read-only or not
  let fresh = null // after a 4017, the fresh copy until it has synced
  // the text when the connection was last up (synced), kept for a 4017; null before, when
  // nothing can have been typed offline (a copy that never synced cannot be told 4017)
  let base = null
  let denied = '' // why the server refused a write, if it did
  let refused = null // {code, status, text, reason} while the server refuses the document
  let focusBack = false // the editor had the focus when it was refused: it gets it back
  let retryTimer = 0 // a damaged document's next try
  let left = false // destroy() was called: the view is gone, the copies wait to be saved
  let lostTimer = 0
  let destroyed = false // everything is gone
  let current = connect() // the copy the view is bound to

  /** A Y.Doc and its provider: a copy of the document. */
  function connect () {
    const doc = new Y.Doc()
    // disableBc: tabs of one browser must not sync behind the server's back
    const provider = new WebsocketProvider(url, roomName(docId), doc, { params: api.params, disableBc: true })
    // the server overwrites `name` with the signed-in name; the colour follows from it
    provider.awareness.setLocalStateField('user', {
      name: user, color: `hsl(${hue} 70% 45%)`, colorLight: `hsl(${hue} 70% 45% / 0.25)`
    })
    // `changes`: local updates so far; `saved`: how many of them the server has said it has;
    // `asks`: for each sync step 1 sent on this connection, the `changes` its answer confirms
    const copy = { doc, ytext: doc.getText('source'), provider, changes: 0, saved: 0, asks: [], timer: 0 }
    // y-websocket only logs a permission-denied message to the console: show it
    provider.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder) =>
      readAuthMessage(decoder, doc, (_doc, reason) => { denied = reason; showStatus() })
    // a sync step 2 answers the oldest step 1 not yet answered: the server has applied
    // everything sent before that step 1
    const handleSync = provider.messageHandlers[MESSAGE_SYNC]
    provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, ...rest) => {
      const step = decoder.arr[decoder.pos] // (a one-byte varuint)
      handleSync(encoder, decoder, ...rest)
      if (step === SYNC_STEP_2 && copy.asks.length) {
        copy.saved = Math.max(copy.saved, copy.asks.shift())
        settle()
      }
    }
    doc.on('update', (_update, origin) => {
      if (origin === provider) return // from the server
      copy.changes++
      clearTimeout(copy.timer)
      copy.timer = setTimeout(() => ask(copy), settings.ackDelay)
    })
    provider.on('status', ({ status }) => {
      // y-websocket sends its own step 1 as it connects, before the answer to the server's
      // step 1 that carries what was typed offline: its step 2 confirms nothing new
      if (status === 'connected') copy.asks.push(copy.saved)
      showStatus()
    })
    provider.on('connection-close', event => {
      copy.asks = []
      if (copy !== current && copy !== fresh) return
      if (REFUSED[event.code]) {
        provider.disconnect() // y-websocket would try again at once, forever
        refuse(event)
        return
      }
      if (copy !== current) return
      // `synced` is still this connection's: it was up, and the server had what the copy had
      if (provider.synced) base = copy.ytext.toString()
      if (event.code === RELOAD) queueMicrotask(reopen) // after y-websocket's own close handling
    })
    provider.on('sync', synced => {
      if (!synced) return
      if (refused) refuse(null) // a damaged document repaired, or signed in again
      ask(copy) // confirms what was typed offline
      if (copy === fresh) swap()
    })
    return copy
  }

  /** Asks the server (a sync step 1) to confirm it has this copy's changes so far. */
  function ask (copy) {
    const { provider } = copy
    clearTimeout(copy.timer)
    if (!provider.synced || provider.ws?.readyState !== WebSocket.OPEN) return // asked on sync
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    writeSyncStep1(encoder, copy.doc)
    copy.asks.push(copy.changes)
    provider.ws.send(encoding.toUint8Array(encoder))
  }

  const unsavedIn = copy => !!copy && copy.changes > copy.saved
  /** Whether a copy holds changes the server has not confirmed, and may still take. */
  function unsaved () {
    if (destroyed) return false
    if (refused && refused.code !== UNAUTHORIZED && refused.code !== DAMAGED) return false
    return unsavedIn(current) || unsavedIn(fresh)
  }

  /** A final close code (`event`), or `null` when the document is taken again. */
  function refuse (event) {
    clearTimeout(retryTimer)
    if (event) {
      const [status, text] = REFUSED[event.code]
      refused = { code: event.code, status, text, reason: event.reason || '' }
      if (event.code === DAMAGED) {
        retryTimer = setTimeout(() => (fresh ?? current).provider.connect(), settings.damagedRetry)
      }
    } else {
      refused = null
    }
    if (left) {
      if (refused && refused.code !== DAMAGED) lose(refused.text)
      return
    }
    if (refused) focusBack ||= view.hasFocus // (read-only, the editor loses it)
    view.dispatch({ effects: access.reconfigure(accessOf()) })
    if (!refused && focusBack) {
      focusBack = false
      // unless the person has gone to something else meanwhile
      if (!document.activeElement || document.activeElement === document.body) view.focus()
    }
    onRefused(refused)
    showStatus()
  }

  function accessOf () {
    const locked = readOnly || !!refused
    return [EditorState.readOnly.of(locked), EditorView.editable.of(!locked)]
  }

  /** 4017: the copy can never sync again. Opens a fresh one; the view stays on the old one
   * (what is typed meanwhile is kept) until the fresh one has synced. */
  function reopen () {
    if (fresh || destroyed) return
    current.asks = []
    current.provider.destroy() // no more reconnecting with the old copy
    fresh = connect()
    showStatus()
  }

  /** The fresh copy has synced: what was typed offline goes into it, and the view over. */
  function swap () {
    const old = current
    const mine = old.ytext.toString()
    // the offline part only: the changes from the base to this copy, mapped over the fresh
    // text (never the whole old copy: every page re-applying it would double every line)
    if (base !== null) applyToYText(fresh.ytext, offlineChanges(base, mine, fresh.ytext.toString()))
    current = fresh
    fresh = null
    const merged = current.ytext.toString()
    if (!left) {
      // y-codemirror.next's plugin keeps the Y.Text it started with: unbind it, bring the
      // view to the fresh text (as a diff, so that the cursor stays where it was), bind the
      // fresh one
      view.dispatch({ effects: binding.reconfigure([]) })
      view.dispatch({ changes: diff(mine, merged) })
      view.dispatch({ effects: binding.reconfigure(bind(current)) })
    }
    old.doc.destroy()
    showStatus()
    settle()
  }

  /** Left, and everything saved: the copies go. */
  function settle () {
    if (left && !destroyed && !unsaved()) finish()
  }

  /** Left, and the edits cannot be saved (or not in time): the page is told, the copies go. */
  function lose (reason) {
    if (destroyed) return
    onLost({ docId, text: current.ytext.toString(), reason })
    finish()
  }

  function finish () {
    destroyed = true
    live.delete(editor)
    clearTimeout(lostTimer)
    clearTimeout(retryTimer)
    window.removeEventListener('offline', offline)
    window.removeEventListener('online', online)
    for (const copy of [current, fresh]) {
      if (!copy) continue
      clearTimeout(copy.timer)
      copy.provider.destroy()
      copy.doc.destroy()
    }
  }

  function bind ({ ytext, provider }) {
    return yCollab(ytext, provider.awareness, { undoManager: new Y.UndoManager(ytext) })
  }

  function showStatus () {
    if (left) return
    const { provider } = fresh ?? current
    // a browser that goes offline keeps its socket until the network is back (see below)
    const state = !navigator.onLine
      ? 'offline'
      : refused ? refused.status
        : provider.wsconnected ? 'connected' : provider.wsconnecting ? 'connecting' : 'disconnected'
    onStatus([fresh && 'reloading', state, readOnly && 'read-only', denied].filter(Boolean).join(' · '))
  }

  const path = docId.slice(docId.indexOf(':') + 1)
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: current.ytext.toString(),
      extensions: [
        ...extensions,
        lineNumbers(),
        lineEnds(),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        // undo and redo take back your own edits only, never someone else's
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        languageFor(path),
        access.of(accessOf()),
        binding.of(bind(current))
      ]
    })
  })
  showStatus()
  // A browser that loses the network keeps its WebSocket open (what is sent is lost) until
  // the connection times out: close it at once (the close completes when the network is
  // back), so that the provider reconnects and syncs everything typed meanwhile.
  const offline = () => { (fresh ?? current).provider.disconnect(); showStatus() }
  const online = () => { if (!refused) (fresh ?? current).provider.connect(); showStatus() }
  window.addEventListener('offline', offline)
  window.addEventListener('online', online)
  const editor = {
    docId,
    view,
    get doc () { return current.doc },
    get ytext () { return current.ytext },
    get provider () { return current.provider },
    /** Whether this document holds edits the server has not confirmed (and may still take). */
    get unsaved () { return unsaved() },
    /** The reason the server refuses the document, while it does. */
    get refused () { return refused },
    /** After signing in again: connects with the api's new credentials. */
    retry () {
      if (destroyed) return
      for (const copy of [current, fresh]) {
        if (!copy) continue
        const query = encodeQueryParams(api.params)
        copy.provider.url = `${url}/${roomName(docId)}${query ? `?${query}` : ''}`
      }
      const { provider } = fresh ?? current
      if (provider.ws) provider.ws.close() // (then connected again by y-websocket)
      else provider.connect()
    },
    /** Takes the view away; the copies stay, connected, until the server has confirmed
     * their edits (or `settings.keepFor` has passed: then `onLost`). */
    destroy () {
      if (left) return
      left = true
      view.destroy()
      for (const copy of [current, fresh]) copy?.provider.awareness.setLocalState(null)
      if (!unsaved()) return finish()
      if (refused && refused.code !== DAMAGED) return lose(refused.text)
      const { provider } = fresh ?? current
      if (!provider.shouldConnect && navigator.onLine && !refused) provider.connect()
      lostTimer = setTimeout(() => lose('the server did not confirm them in time'), settings.keepFor)
    }
  }
  live.add(editor)
  return editor
}
