// The editor binding: one CodeMirror 6 view on one live document.
//
// This is all an editor needs to join the engine: a Y.Doc, the stock y-websocket provider
// on `ws://HOST/yjs` with the room `<repo>/<branch>:<path>`, and y-codemirror.next binding
// the document's Y.Text `source` to the view. The server stamps each awareness state with
// the signed-in name, so the remote carets show who is who. A server that refuses writes (a
// read-only user on a branch not theirs) answers them with a y-protocols permission-denied
// message.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { readAuthMessage } from 'y-protocols/auth'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import {
  EditorView, keymap, lineNumbers, drawSelection, highlightActiveLine, highlightSpecialChars
} from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { syntaxHighlighting, defaultHighlightStyle, indentOnInput } from '@codemirror/language'
import { languageFor } from './languages.js'

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
 */
export function openEditor (parent, {
  docId, api, user, readOnly = false, onStatus = () => {}, extensions = [], url = yjsUrl()
}) {
  const doc = new Y.Doc()
  // disableBc: tabs of one browser must not sync behind the server's back
  const provider = new WebsocketProvider(url, roomName(docId), doc, { params: api.params, disableBc: true })
  // the server overwrites `name` with the signed-in name; the colour follows from it
  const hue = hueOf(user)
  provider.awareness.setLocalStateField('user', {
    name: user, color: `hsl(${hue} 70% 45%)`, colorLight: `hsl(${hue} 70% 45% / 0.25)`
  })
  let denied = '' // why the server refused a write, if it did
  const showStatus = () => {
    const state = provider.wsconnected ? 'connected' : provider.wsconnecting ? 'connecting' : 'disconnected'
    onStatus([state, readOnly && 'read-only', denied].filter(Boolean).join(' · '))
  }
  // y-websocket only logs a permission-denied message to the console: show it
  provider.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder) =>
    readAuthMessage(decoder, doc, (_doc, reason) => { denied = reason; showStatus() })
  provider.on('status', showStatus)
  const ytext = doc.getText('source')
  const path = docId.slice(docId.indexOf(':') + 1)
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: ytext.toString(),
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
        yCollab(ytext, provider.awareness, { undoManager: new Y.UndoManager(ytext) })
      ]
    })
  })
  showStatus()
  // A browser that loses the network keeps its WebSocket open (what is sent is lost) until
  // the connection times out: close it at once (the close completes when the network is
  // back), so that the provider reconnects and syncs everything typed meanwhile.
  const offline = () => provider.disconnect()
  const online = () => provider.connect()
  window.addEventListener('offline', offline)
  window.addEventListener('online', online)
  return {
    docId, doc, ytext, provider, view,
    destroy () {
      window.removeEventListener('offline', offline)
      window.removeEventListener('online', online)
      view.destroy()
      provider.destroy()
      doc.destroy()
    }
  }
}
