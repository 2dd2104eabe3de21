// The editor binding: one CodeMirror 6 view on one live document.
//
// This is all an editor needs to join the engine: a Y.Doc, the stock y-websocket provider
// on `ws://HOST/yjs` with the room `<repo>/<branch>:<path>`, and y-codemirror.next binding
// the document's Y.Text `source` to the view. The server stamps each awareness state with
// the signed-in name, so the remote carets show who is who.
//
// Two things a stock client must handle besides: a server that refuses writes (a read-only
// user on a branch not theirs) answers them with a y-protocols permission-denied message,
// and a server whose store lost the document closes with 4017 (RELOAD): the copy belongs to
// an earlier history of the document, and must be replaced by a fresh one.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { readAuthMessage } from 'y-protocols/auth'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { Compartment, EditorState } from '@codemirror/state'
import {
  EditorView, keymap, lineNumbers, drawSelection, highlightActiveLine, highlightSpecialChars
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { syntaxHighlighting, defaultHighlightStyle, indentOnInput } from '@codemirror/language'
import { languageFor } from './languages.js'
import { applyToYText, diff, offlineChanges } from './textmerge.js'

const RELOAD = 4017 // close code: the copy belongs to another epoch of the document
const MESSAGE_AUTH = 2 // y-websocket's message type for y-protocols/auth

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
 * state; `url` is this server's /yjs unless given.
 *
 * The returned editor's `doc`, `ytext` and `provider` are those the view is bound to now:
 * they are replaced when the server says the copy belongs to an earlier history (4017).
 */
export function openEditor (parent, {
  docId, api, user, readOnly = false, onStatus = () => {}, extensions = [], url = yjsUrl()
}) {
  const hue = hueOf(user)
  const binding = new Compartment() // yCollab on the current copy
  let fresh = null // after a 4017, the fresh copy until it has synced
  // the text when the connection was last up (synced), kept for a 4017; null before, when
  // nothing can have been typed offline (a copy that never synced cannot be told 4017)
  let base = null
  let denied = '' // why the server refused a write, if it did
  let destroyed = false
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
    // y-websocket only logs a permission-denied message to the console: show it
    provider.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder) =>
      readAuthMessage(decoder, doc, (_doc, reason) => { denied = reason; showStatus() })
    const copy = { doc, ytext: doc.getText('source'), provider }
    provider.on('status', () => showStatus())
    provider.on('connection-close', event => {
      if (copy !== current) return
      // `synced` is still this connection's: it was up, and the server had what the copy had
      if (provider.synced) base = copy.ytext.toString()
      if (event.code === RELOAD) queueMicrotask(reopen) // after y-websocket's own close handling
    })
    provider.on('sync', synced => { if (synced && copy === fresh) swap() })
    return copy
  }

  /** 4017: the copy can never sync again. Opens a fresh one; the view stays on the old one
   * (what is typed meanwhile is kept) until the fresh one has synced. */
  function reopen () {
    if (fresh || destroyed) return
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
    // y-codemirror.next's plugin keeps the Y.Text it started with: unbind it, bring the view
    // to the fresh text (as a diff, so that the cursor stays where it was), bind the fresh one
    view.dispatch({ effects: binding.reconfigure([]) })
    view.dispatch({ changes: diff(mine, merged) })
    view.dispatch({ effects: binding.reconfigure(bind(current)) })
    old.doc.destroy()
    showStatus()
  }

  function bind ({ ytext, provider }) {
    return yCollab(ytext, provider.awareness, { undoManager: new Y.UndoManager(ytext) })
  }

  function showStatus () {
    const { provider } = fresh ?? current
    const state = provider.wsconnected ? 'connected' : provider.wsconnecting ? 'connecting' : 'disconnected'
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
        highlightSpecialChars(),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        // undo and redo take back your own edits only, never someone else's
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap, indentWithTab]),
        languageFor(path),
        EditorState.readOnly.of(readOnly),
        EditorView.editable.of(!readOnly),
        binding.of(bind(current))
      ]
    })
  })
  showStatus()
  // A browser that loses the network keeps its WebSocket open (what is sent is lost) until
  // the connection times out: close it at once (the close completes when the network is
  // back), so that the provider reconnects and syncs everything typed meanwhile.
  const offline = () => (fresh ?? current).provider.disconnect()
  const online = () => (fresh ?? current).provider.connect()
  window.addEventListener('offline', offline)
  window.addEventListener('online', online)
  return {
    docId,
    view,
    get doc () { return current.doc },
    get ytext () { return current.ytext },
    get provider () { return current.provider },
    destroy () {
      destroyed = true
      window.removeEventListener('offline', offline)
      window.removeEventListener('online', online)
      view.destroy()
      for (const copy of [current, fresh]) {
        copy?.provider.destroy()
        copy?.doc.destroy()
      }
    }
  }
}
