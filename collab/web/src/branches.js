// The branch panel: who is on which branch and file, the file tree and the commit log.
//
// `branch.list` names the people on each branch and the file each has open; `branch.files`
// and `branch.log` are read again whenever a branch's head moves (the continuous commits
// move it a second or so after typing stops). Each event of the repository (events.js)
// brings a fresh read.
import { hueOf } from './editor.js'
import { subscribe } from './events.js'

const SETTLE_MS = 50 // events come in bursts (a merge: commit, ref, presence): read once

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props)
  node.append(...children)
  return node
}

/**
 * Makes `nodes` the children of `parent`, moving only those out of place and removing the
 * rest. A node left in place keeps the focus, and a press on it: a button clicks at the
 * release of Space or of the mouse button only if it is the one pressed (a button replaced
 * in between did nothing).
 */
const place = (parent, nodes) => {
  const focused = document.activeElement
  nodes.forEach((node, i) => {
    const there = parent.children[i]
    if (there !== node) parent.insertBefore(node, there ?? null)
  })
  while (parent.children.length > nodes.length) parent.lastElementChild.remove()
  // the focused node itself moved (the order changed): it has the focus again
  if (focused !== document.activeElement && focused?.isConnected) focused.focus()
}

export class BranchPanel {
  /**
   * `onOpen(branch, path)` is called when someone picks a branch or a file;
   * `onBranches(list)` with every fresh branch list (the merge view uses it);
   * `onFiles(branch, files)` with every fresh file list of the branch shown.
   */
  constructor ({ api, repo, onOpen, onBranches, onFiles = () => {} }) {
    Object.assign(this, { api, repo, onOpen, onBranches, onFiles })
    this.branch = null
    this.path = null
    this.heads = {} // what the tree and log were last drawn at, by branch
    this.turn = 0 // the refreshes made so far
    this.timer = null
    this.unsubscribe = subscribe({ api, repo, onEvent: () => this.soon() })
  }

  soon () {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.refresh(), SETTLE_MS)
  }

  /** Shows `branch` and `path` as the current ones. */
  async show (branch, path) {
    const moved = branch !== this.branch
    this.branch = branch
    this.path = path
    if (moved) this.heads = {}
    await this.refresh()
  }

  async refresh () {
    // a later refresh (another branch shown, someone's move) supersedes this one: what this
    // one is answered is not drawn over what that one draws
    const turn = ++this.turn
    if (!this.branch) return
    const branch = this.branch
    let list
    try {
      list = await this.api.call('branch.list', { repo: this.repo })
    } catch { return } // the server restarting: its events come again once it is back
    if (turn !== this.turn) return
    this.renderBranches(list)
    this.onBranches(list)
    const current = list.find(b => b.name === branch)
    if (current && current.head !== this.heads[branch]) {
      let files, log
      try {
        [files, log] = await Promise.all([
          this.api.call('branch.files', { repo: this.repo, branch }),
          this.api.call('branch.log', { repo: this.repo, branch, limit: 30 })
        ])
      } catch { return } // asked again at the next event (the events' socket is back)
      if (turn !== this.turn) return
      this.heads[branch] = current.head
      this.renderFiles(files.files)
      this.renderLog(branch, log.commits)
      this.onFiles(branch, files.files)
    } else {
      this.markCurrentFile()
    }
  }

  renderBranches (list) {
    // buttons: reached with Tab, opened with Enter or Space. The list is made again at every
    // move of anyone: the buttons already shown are kept (updated), not replaced
    const panel = document.getElementById('branches')
    const shown = new Map([...panel.children].map(item => [item.dataset.branch, item]))
    place(panel, list.map(branch => {
      let item = shown.get(branch.name)
      if (!item) {
        const name = el('button', { type: 'button', textContent: branch.name, title: 'open this branch' })
        name.addEventListener('click', () => this.onOpen(branch.name, this.path))
        item = el('li', {}, name)
        item.dataset.branch = branch.name
      }
      item.className = branch.name === this.branch ? 'current' : ''
      const name = item.firstElementChild
      name.className = 'name' + (branch.mine ? ' mine' : '')
      // a person per file open (the same person twice: two tabs on the same file)
      const people = new Map()
      for (const person of item.querySelectorAll('.person')) {
        people.set(person.dataset.key, [...(people.get(person.dataset.key) ?? []), person])
      }
      place(item, [name, ...branch.people.map(({ user, path }) => {
        const key = `${user}\n${path}`
        return people.get(key)?.shift() ?? this.person(branch.name, user, path, key)
      })])
      return item
    }))
  }

  /** A button for `user` on `branch`, at `path`: it opens that file there. */
  person (branch, user, path, key) {
    const person = el('button', { type: 'button', className: 'person', title: `open ${path} on ${branch}` },
      el('i', { style: `background: hsl(${hueOf(user)} 70% 45%)` }), `${user} · ${path}`)
    person.dataset.key = key
    person.addEventListener('click', () => this.onOpen(branch, path))
    return person
  }

  renderFiles (paths) {
    // a nested <details> per folder; the buttons and folders already shown are kept (a
    // folder closed stays closed)
    const root = { folders: {}, files: [] }
    for (const path of paths) {
      const parts = path.split('/')
      let node = root
      for (const part of parts.slice(0, -1)) node = node.folders[part] ??= { folders: {}, files: [] }
      node.files.push(path)
    }
    const tree = document.getElementById('files')
    const folders = new Map([...tree.querySelectorAll('details')].map(folder => [folder.dataset.folder, folder]))
    const files = new Map([...tree.querySelectorAll('.file')].map(file => [file.dataset.path, file]))
    const render = (node, above) => [
      ...Object.entries(node.folders).map(([name, sub]) => {
        const path = above + name + '/'
        let folder = folders.get(path)
        if (!folder) {
          folder = el('details', { open: true }, el('summary', { textContent: name }), el('div'))
          folder.dataset.folder = path
        }
        place(folder.lastElementChild, render(sub, path))
        return folder
      }),
      ...node.files.map(path => {
        let file = files.get(path)
        if (!file) {
          file = el('button', { type: 'button', className: 'file', textContent: path.split('/').pop(), title: path })
          file.dataset.path = path
          file.addEventListener('click', () => this.onOpen(this.branch, path))
        }
        return file
      })
    ]
    place(tree, render(root, ''))
    this.markCurrentFile()
  }

  markCurrentFile () {
    for (const file of document.querySelectorAll('#files .file')) {
      file.classList.toggle('current', file.dataset.path === this.path)
    }
  }

  renderLog (branch, commits) {
    document.getElementById('log-branch').textContent = branch
    document.getElementById('log').replaceChildren(...commits.map(commit => {
      const who = [commit.author, ...commit.co_authors].map(a => a.replace(/ <.*>$/, '')).join(', ')
      const when = new Date(commit.time * 1000).toLocaleTimeString()
      return el('li', {},
        el('span', { className: 'subject', textContent: commit.subject }),
        el('span', { className: 'who', textContent: `${commit.commit.slice(0, 8)} · ${who} · ${when}` }))
    }))
  }

  destroy () {
    clearTimeout(this.timer)
    this.unsubscribe()
  }
}
