// The merge view: merging one branch into another instead of a pull request.
//
// Preview first (`merge.preview` changes nothing: files, diffs, conflicts), then apply
// (`merge.apply`). On conflict, "Resolve together" applies it with `markers: true`: the
// conflict markers are written into the target's live documents, so everyone who has them
// open sees them at once and fixes them together. Apply passes the source's commit the
// preview was made at: if the source has moved since (someone typed there), the server
// refuses, and the preview is made again, so that what is merged in is always what was
// shown. The target may move (people typing in it, whose edits the merge keeps): passing
// its commit too would refuse every apply while anyone types there.

const CONFLICT = 4015 // the source moved since the preview (or the merge conflicts)

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props)
  node.append(...children)
  return node
}

export class MergeView {
  /** `onResolve(branch, path)` opens a conflicted file after "Resolve together". */
  constructor ({ api, repo, onResolve }) {
    Object.assign(this, { api, repo, onResolve })
    this.source = document.getElementById('merge-source')
    this.target = document.getElementById('merge-target')
    this.result = document.getElementById('merge-result')
    document.getElementById('merge-preview').addEventListener('click', () => this.preview())
    this.source.addEventListener('change', () => this.result.replaceChildren())
    this.target.addEventListener('change', () => this.result.replaceChildren())
  }

  /** Keeps both pickers' options in step with the branch list, selections kept. */
  setBranches (list, { current, main }) {
    for (const [select, fallback] of [[this.source, current], [this.target, main]]) {
      const chosen = select.value || fallback
      const names = list.map(b => b.name)
      if (names.join('\n') !== [...select.options].map(o => o.value).join('\n')) {
        select.replaceChildren(...names.map(name => el('option', { value: name, textContent: name })))
      }
      select.value = names.includes(chosen) ? chosen : fallback
    }
  }

  /** `why`: a sentence shown above the preview (why it was made again). */
  async preview (why = null) {
    const args = { repo: this.repo, source: this.source.value, target: this.target.value }
    const because = why ? [el('p', { className: 'error moved', textContent: why })] : []
    this.result.replaceChildren(...because, el('p', { textContent: 'previewing…' }))
    let plan
    try {
      plan = await this.api.call('merge.preview', args)
    } catch (error) {
      this.result.replaceChildren(el('p', { className: 'error', textContent: error.message }))
      return
    }
    const parts = [...because]
    if (plan.up_to_date) {
      parts.push(el('p', { className: 'summary', textContent: `${args.target} already has everything in ${args.source}` }))
    } else {
      const kind = plan.fast_forward ? 'fast-forward' : 'merge commit'
      parts.push(el('p', { className: 'summary', textContent: `${plan.files.length} file(s), ${kind}` }))
      for (const file of plan.files) {
        parts.push(el('div', { className: 'file' }, el('strong', { textContent: `${file.status} ${file.path}` }), diffView(file.diff || '')))
      }
      // applied only if the source has not moved since this preview
      const exact = { ...args, source_head: plan.source }
      if (plan.conflicts.length) {
        parts.push(el('p', { className: 'conflicts', textContent: `conflicts: ${plan.conflicts.join(', ')}` }))
        parts.push(this.button('Resolve together', { ...exact, markers: true }, plan.conflicts[0]))
      } else {
        parts.push(this.button('Apply', exact, null))
      }
    }
    this.result.replaceChildren(...parts)
  }

  button (label, args, conflicted) {
    const button = el('button', { textContent: label, className: 'merge-apply' })
    button.addEventListener('click', async () => {
      button.disabled = true
      try {
        const done = await this.api.call('merge.apply', args)
        const what = done.applied ? `merged (${(done.commit || '').slice(0, 8) || 'fast-forward'})` : 'nothing to merge'
        this.result.replaceChildren(el('p', { className: 'summary', textContent: what }))
        if (conflicted) this.onResolve(args.target, conflicted)
      } catch (error) {
        if (error.code === CONFLICT) { // a branch moved since the preview: nothing was changed
          await this.preview(`Not applied: ${error.message}. The preview below is made again, at what the branches hold now.`)
          return
        }
        this.result.append(el('p', { className: 'error', textContent: error.message }))
        button.disabled = false
      }
    })
    return button
  }
}

/** A unified diff with its added and removed lines coloured. */
function diffView (diff) {
  return el('pre', {}, ...diff.split('\n').map(line => el('div', {
    className: /^(\+\+\+|---) /.test(line) ? '' : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '',
    textContent: line
  })))
}
