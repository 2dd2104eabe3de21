// Text diffs as CodeMirror change sets, and the three-way merge the editor needs when it
// must open a document again on a fresh copy (close code 4017, editor.js).
//
// `diff(a, b)` is Myers' O(ND) diff over code points (a surrogate pair is never split), after
// the common prefix and suffix are set aside. When the texts differ in more than MAX_EDITS
// code points (a paste, say), it diffs their lines instead, then each run of changed lines
// over code points again (or replaces that run whole, if it is itself that different): the
// edits stay apart, as they were made. Past MAX_EDITS lines, it replaces the whole middle.
// `ChangeSet.map` does the merge.
import { ChangeSet } from '@codemirror/state'

const MAX_EDITS = 1000 // beyond this many inserted or deleted code points, one replacement

const isHigh = code => code >= 0xd800 && code <= 0xdbff
const isLow = code => code >= 0xdc00 && code <= 0xdfff

/** The changes that turn `a` into `b`, as a ChangeSet over `a` (UTF-16 offsets). */
export function diff (a, b) {
  let start = 0
  const shorter = Math.min(a.length, b.length)
  while (start < shorter && a.charCodeAt(start) === b.charCodeAt(start)) start++
  if (start > 0 && isHigh(a.charCodeAt(start - 1))) start-- // not inside a surrogate pair
  let endA = a.length
  let endB = b.length
  while (endA > start && endB > start && a.charCodeAt(endA - 1) === b.charCodeAt(endB - 1)) {
    endA--
    endB--
  }
  if (endA < a.length && isLow(a.charCodeAt(endA))) { endA++; endB++ }
  const middleA = Array.from(a.slice(start, endA))
  const middleB = Array.from(b.slice(start, endB))
  const edits = myers(middleA, middleB) ?? byLines(middleA, middleB) ??
    [{ from: 0, to: middleA.length, insert: middleB.join('') }]
  // code-point indexes in the middle of `a` to UTF-16 offsets in `a`
  const offsets = [start]
  for (const char of middleA) offsets.push(offsets[offsets.length - 1] + char.length)
  return ChangeSet.of(edits.map(({ from, to, insert }) => ({ from: offsets[from], to: offsets[to], insert })), a.length)
}

/**
 * Myers' diff of two arrays: the edits `{from, to, insert}` (indexes into `a`, sorted and
 * apart) that turn `a` into `b`, or null past MAX_EDITS.
 */
function myers (a, b) {
  const n = a.length
  const m = b.length
  // v[k]: the furthest x reached on diagonal k (where y = x - k); trace[d]: v before step d
  // (it holds the diagonals -d..d only, so the memory is O(D²))
  const v = new Map([[1, 0]])
  const trace = []
  let found = -1
  for (let d = 0; d <= Math.min(n + m, MAX_EDITS) && found < 0; d++) {
    trace.push(new Map(v))
    for (let k = -d; k <= d; k += 2) {
      let x = (k === -d || (k !== d && v.get(k - 1) < v.get(k + 1))) ? v.get(k + 1) : v.get(k - 1) + 1
      let y = x - k
      while (x < n && y < m && a[x] === b[y]) { x++; y++ }
      v.set(k, x)
      if (x >= n && y >= m) { found = d; break }
    }
  }
  if (found < 0) return null
  // walk back from (n, m): each step is one deletion (a[x]) or one insertion (b[y]) followed
  // by a run of equal elements
  const steps = []
  let x = n
  let y = m
  for (let d = found; d > 0; d--) {
    const before = trace[d]
    const k = x - y
    const prevK = (k === -d || (k !== d && before.get(k - 1) < before.get(k + 1))) ? k + 1 : k - 1
    const prevX = before.get(prevK)
    const prevY = prevX - prevK
    while (x > prevX && y > prevY) { x--; y-- }
    steps.push(x === prevX ? { at: prevX, insert: b[prevY] } : { at: prevX, delete: true })
    x = prevX
    y = prevY
  }
  // adjacent steps become one edit
  const edits = []
  for (const step of steps.reverse()) {
    const last = edits[edits.length - 1]
    const edit = last && last.to === step.at ? last : { from: step.at, to: step.at, insert: '' }
    if (edit !== last) edits.push(edit)
    if (step.delete) edit.to++
    else edit.insert += step.insert
  }
  return edits
}

/**
 * The edits (as `myers` gives them) that turn the code points `a` into `b`, found over their
 * lines first: each run of changed lines is then diffed over code points, or replaced whole
 * if that is past MAX_EDITS too. Null past MAX_EDITS lines. (One replacement of everything
 * between the first change and the last would overlap another page's changes, and a merge
 * would keep both pages' copies of the lines between them.)
 */
function byLines (a, b) {
  const linesA = splitLines(a)
  const runs = myers(linesA.map(line => line.text), splitLines(b).map(line => line.text))
  if (runs === null) return null
  const starts = [0] // the index in `a` of each line's first code point
  for (const line of linesA) starts.push(starts[starts.length - 1] + line.length)
  const edits = []
  for (const { from, to, insert } of runs) {
    const before = a.slice(starts[from], starts[to])
    const after = Array.from(insert)
    const fine = myers(before, after) ?? [{ from: 0, to: before.length, insert }]
    for (const edit of fine) {
      edits.push({ from: starts[from] + edit.from, to: starts[from] + edit.to, insert: edit.insert })
    }
  }
  return edits
}

/** The lines of an array of code points: each its text (its \n included) and its length in
 * code points. */
function splitLines (codePoints) {
  const lines = []
  let start = 0
  for (let i = 0; i < codePoints.length; i++) {
    if (codePoints[i] === '\n' || i === codePoints.length - 1) {
      lines.push({ text: codePoints.slice(start, i + 1).join(''), length: i + 1 - start })
      start = i + 1
    }
  }
  return lines
}

/**
 * What was typed offline, ready for the fresh copy: the changes from `base` (the text the
 * server last had) to `mine` (this page's copy), mapped over the changes from `base` to
 * `theirs` (the fresh copy), so that they apply to `theirs`. Only the offline part is
 * applied, never the whole old copy (two pages applying theirs would double every line).
 */
export function offlineChanges (base, mine, theirs) {
  return diff(base, mine).map(diff(base, theirs))
}

/** Applies a ChangeSet over `ytext`'s current text to it, in one transaction. */
export function applyToYText (ytext, changes) {
  ytext.doc.transact(() => {
    let shift = 0 // the positions are the old text's; earlier edits moved them by this much
    changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
      if (toA > fromA) ytext.delete(fromA + shift, toA - fromA)
      const text = inserted.toString()
      if (text) ytext.insert(fromA + shift, text)
      shift += text.length - (toA - fromA)
    })
  })
}
