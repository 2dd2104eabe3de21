// Files with CRLF line ends (or lone CRs), edited with offsets that match the live text.
//
// CodeMirror takes "\r\n", "\r" and "\n" alike as a line break of one position, while the
// live text (a Y.Text) counts "\r\n" as two: with CodeMirror's default, every "\r" before
// the cursor would shift an edit by one, and the binding would put text in the wrong place.
// Here only "\n" breaks a line: a "\r" is a character of its line, shown as nothing, and
// positions are the live text's offsets one for one. So that a CRLF file stays one:
// - the cursor never rests between a line's closing "\r" and its break (it goes before it);
// - a line break typed (Enter) or pasted into a file whose first line ends with "\r" gets
//   its "\r", and one pasted into a file with LF line ends loses it;
// - deleting a line break or its "\r" alone takes both.

import { EditorSelection, EditorState } from '@codemirror/state'
import { EditorView, highlightSpecialChars } from '@codemirror/view'

// CodeMirror's default special characters, less "\r" (shown as nothing here), and every
// bidi control (U+202A-U+202E, U+2066-U+2069: text that reads otherwise than it runs)
const SPECIAL = /[\u0000-\u0008\u000a-\u000c\u000e-\u001f\u007f-\u009f\u00ad\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufff9-\ufffc]/gu

/** Whether the document breaks its lines with "\r\n" (its first line says). */
function crlf (doc) {
  return doc.lines > 1 && doc.line(1).text.endsWith('\r')
}

/** ``pos``, or the position before a "\r" that ends its line if ``pos`` is right after it. */
function beforeCR (doc, pos) {
  const line = doc.lineAt(pos)
  return pos === line.to && pos > line.from && line.text.endsWith('\r') ? pos - 1 : pos
}

const keepBeforeCR = EditorState.transactionFilter.of(tr => {
  if (!tr.selection) return tr
  const doc = tr.newDoc
  const ranges = tr.selection.ranges.map(range => {
    const anchor = beforeCR(doc, range.anchor)
    const head = beforeCR(doc, range.head)
    return anchor === range.anchor && head === range.head ? range : EditorSelection.range(anchor, head)
  })
  if (ranges.every((range, i) => range === tr.selection.ranges[i])) return tr
  return [tr, { selection: EditorSelection.create(ranges, tr.selection.mainIndex), sequential: true }]
})

const wholeBreaks = EditorState.transactionFilter.of(tr => {
  if (!tr.docChanged || !tr.isUserEvent('delete')) return tr
  const doc = tr.startState.doc
  const changes = []
  let widened = false
  tr.changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
    let from = fromA
    let to = toA
    if (from < to) {
      // a break taken without its "\r", or a "\r" without its break
      if (from > 0 && doc.sliceString(from - 1, from + 1) === '\r\n') from -= 1
      if (to < doc.length && doc.sliceString(to - 1, to + 1) === '\r\n') to += 1
    }
    widened ||= from !== fromA || to !== toA
    changes.push({ from, to, insert: inserted })
  })
  if (!widened) return tr
  const set = tr.startState.changes(changes)
  return {
    changes: set,
    selection: EditorSelection.cursor(set.mapPos(tr.startState.selection.main.head, -1)),
    scrollIntoView: tr.scrollIntoView,
    userEvent: 'delete'
  }
})

// text put into a file breaks its lines as the file does: in a CRLF file, each line break
// typed (Enter, with the language's indentation) or pasted gets its "\r"
const crlfBreaks = EditorState.transactionFilter.of(tr => {
  if (!tr.docChanged || !tr.isUserEvent('input') || !crlf(tr.startState.doc)) return tr
  // each break in what changed, and the one right after it (Enter takes the whitespace
  // after the cursor, the line's "\r" with it), that has no "\r" gets one
  const doc = tr.newDoc
  const fixes = new Set()
  tr.changes.iterChanges((_fromA, _toA, fromB, toB) => {
    const start = Math.max(0, fromB - 1)
    const text = doc.sliceString(start, Math.min(doc.length, toB + 1), '\n')
    for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) {
      if (start + i > 0 && doc.sliceString(start + i - 1, start + i) !== '\r') fixes.add(start + i)
    }
  })
  if (!fixes.size) return tr
  const changes = [...fixes].sort((a, b) => a - b).map(from => ({ from, insert: '\r' }))
  return [tr, { changes, sequential: true }]
})

// pasted into a file with LF line ends, CRLF (or lone CR) line ends become LF
const pastedBreaks = EditorView.clipboardInputFilter.of((text, state) =>
  crlf(state.doc) ? text : text.replace(/\r\n?/g, '\n'))

/** The extensions that edit a document's line ends as they are (see above). */
export function lineEnds () {
  return [
    EditorState.lineSeparator.of('\n'),
    highlightSpecialChars({ specialChars: SPECIAL }),
    keepBeforeCR,
    wholeBreaks,
    crlfBreaks,
    pastedBreaks
  ]
}
