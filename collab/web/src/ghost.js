// Ghost text: an AI completion shown at the cursor after a short pause.
//
// The page sends no document: POST /api/complete names the document and the cursor (in
// UTF-16 code units, as CodeMirror counts) with the text just before it, and the server
// builds the prompt from the live document. Tab accepts (`complete.accept`: the server inserts the text as the AI's edit on
// the user's behalf, and it reaches everyone through the document like any edit); Esc or
// typing dismisses. A newer request aborts the older one, and the server drops it too.
import { StateField, StateEffect, Prec } from '@codemirror/state'
import { EditorView, Decoration, WidgetType, ViewPlugin, keymap } from '@codemirror/view'

const PAUSE_MS = 300 // typing pause before asking
const BEFORE_UNITS = 64 // text before the cursor sent with a request (the server's limit)

const setGhost = StateEffect.define() // {pos, text, id} or null

class GhostWidget extends WidgetType {
  constructor (text) { super(); this.text = text }
  eq (other) { return other.text === this.text }
  toDOM () {
    const span = document.createElement('span')
    span.className = 'cm-ghost'
    span.textContent = this.text
    return span
  }
}

// The offer shown, mapped through every change (remote ones keep it where it belongs).
const ghostField = StateField.define({
  create: () => null,
  update (ghost, tr) {
    for (const effect of tr.effects) if (effect.is(setGhost)) return effect.value
    if (!ghost) return null
    if (tr.isUserEvent('input') || tr.isUserEvent('delete')) return null // typing dismisses
    return tr.docChanged ? { ...ghost, pos: tr.changes.mapPos(ghost.pos) } : ghost
  },
  provide: field => EditorView.decorations.from(field, ghost => ghost
    ? Decoration.set([Decoration.widget({ widget: new GhostWidget(ghost.text), side: 1 }).range(ghost.pos)])
    : Decoration.none)
})

/**
 * The ghost-text extension for the document `docId`; `onStatus(text)` shows the latency.
 */
export function ghostText ({ api, docId, onStatus = () => {} }) {
  let timer = null
  let inflight = null // AbortController of the request in flight

  function abort () {
    clearTimeout(timer)
    if (inflight) inflight.abort()
    inflight = null
  }

  async function ask (view) {
    const controller = inflight = new AbortController()
    const { head, empty } = view.state.selection.main
    if (!empty) return
    const started = performance.now()
    // the text before the cursor as this page sees it: the server answers where that text
    // is, should others' edits have reached it first (requests go over HTTP, edits over /ws)
    let from = Math.max(0, head - BEFORE_UNITS)
    const first = view.state.doc.sliceString(from, from + 1).charCodeAt(0)
    if (from > 0 && first >= 0xDC00 && first <= 0xDFFF) from += 1 // not half a pair
    const before = view.state.doc.sliceString(from, head)
    try {
      const answer = await api.call('complete', { doc: docId, index: head, unit: 'utf16', before },
        { signal: controller.signal })
      const ms = Math.round(performance.now() - started)
      if (controller !== inflight) return // a newer request took over
      inflight = null
      // typing or moving aborted the request; shown at the cursor only while the text
      // before it is still what was asked about (others' edits may have moved it)
      const now = view.state.selection.main.head
      if (!answer.text || !view.state.selection.main.empty ||
          view.state.doc.sliceString(Math.max(0, now - before.length), now) !== before) {
        onStatus(`completion: nothing to offer (${ms} ms)`)
        return
      }
      view.dispatch({ effects: setGhost.of({ pos: now, text: answer.text, id: answer.id }) })
      onStatus(`completion in ${ms} ms (server ${Math.round(answer.latency.total_ms)} ms): Tab accepts, Esc dismisses`)
    } catch (error) {
      if (error.name !== 'AbortError' && controller === inflight && navigator.onLine) onStatus(`completion: ${error.message}`)
    }
  }

  function accept (view) {
    const ghost = view.state.field(ghostField)
    if (!ghost) return false
    view.dispatch({ effects: setGhost.of(null) })
    api.call('complete.accept', { id: ghost.id }).then(() => {
      // the server's insert arrives through the document, on another socket than this
      // answer: once it is there, put the cursor after it
      const end = ghost.pos + ghost.text.length
      const place = (tries) => {
        if (view.state.doc.sliceString(ghost.pos, end) === ghost.text) {
          if (view.state.selection.main.head === ghost.pos) view.dispatch({ selection: { anchor: end } })
        } else if (tries > 0) {
          setTimeout(() => place(tries - 1), 25)
        }
      }
      place(40)
      onStatus('completion accepted')
    }, error => onStatus(`completion: ${error.message}`))
    return true
  }

  function dismiss (view) {
    if (!view.state.field(ghostField)) return false
    view.dispatch({ effects: setGhost.of(null) })
    api.call('complete.cancel', { doc: docId }).catch(() => {})
    onStatus('completion dismissed')
    return true
  }

  const scheduler = ViewPlugin.fromClass(class {
    update (update) {
      const typed = update.transactions.some(tr => tr.isUserEvent('input') || tr.isUserEvent('delete'))
      if (typed) {
        abort()
        timer = setTimeout(() => ask(update.view), PAUSE_MS)
      } else if (update.selectionSet && !update.docChanged) {
        abort() // the cursor moved: what was asked for is stale
        if (update.state.field(ghostField)) queueMicrotask(() => update.view.dispatch({ effects: setGhost.of(null) }))
      }
    }

    destroy () { abort() }
  })

  return [
    ghostField,
    scheduler,
    Prec.highest(keymap.of([{ key: 'Tab', run: accept }, { key: 'Escape', run: dismiss }]))
  ]
}
