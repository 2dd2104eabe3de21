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

export class BranchPanel {
  /**
   * `onOpen(branch, path)` is called when someone picks a branch or a file;
   * `onBranches(list)` with every fresh branch list (the merge view uses it).
   */
  constructor ({ api, repo, onOpen, onBranches }) {
    Object.assign(this, { api, repo, onOpen, onBranches })
    this.branch = null
    this.path = null
    this.heads = {} // what the tree and log were last read at, by branch
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
    if (!this.branch) return
    let list
    try {
      list = await this.api.call('branch.list', { repo: this.repo })
    } catch { return } // the server restarting: its events come again once it is back
    this.renderBranches(list)
    this.onBranches(list)
    const current = list.find(b => b.name === this.branch)
    if (current && current.head !== this.heads[this.branch]) {
      this.heads[this.branch] = current.head
      const [files, log] = await Promise.all([
        this.api.call('branch.files', { repo: this.repo, branch: this.branch }),
        this.api.call('branch.log', { repo: this.repo, branch: this.branch, limit: 30 })
      ])
      this.renderFiles(files.files)
      this.renderLog(log.commits)
    } else {
      this.markCurrentFile()
    }
  }

  renderBranches (list) {
    const items = list.map(branch => {
      // buttons: reached with Tab, opened with Enter or Space
      const name = el('button', {
        type: 'button',
        className: 'name' + (branch.mine ? ' mine' : ''),
        textContent: branch.name,
        title: 'open this branch'
      })
      name.addEventListener('click', () => this.onOpen(branch.name, this.path))
      const people = branch.people.map(({ user, path }) => {
        const person = el('button', { type: 'button', className: 'person', title: `open ${path} on ${branch.name}` },
          el('i', { style: `background: hsl(${hueOf(user)} 70% 45%)` }), `${user} · ${path}`)
        person.addEventListener('click', () => this.onOpen(branch.name, path))
        return person
      })
      const item = el('li', { className: branch.name === this.branch ? 'current' : '' }, name, ...people)
      item.dataset.branch = branch.name
      return item
    })
    const panel = document.getElementById('branches')
    // the list is made again at every move of anyone: the control that had the focus keeps it
    const focused = panel.contains(document.activeElement) ? document.activeElement : null
    const branch = focused?.closest('li')?.dataset.branch
    const person = focused?.classList.contains('person') ? focused.textContent : null
    panel.replaceChildren(...items)
    if (focused) {
      const item = items.find(li => li.dataset.branch === branch)
      const again = person === null
        ? item?.querySelector('.name')
        : [...(item?.querySelectorAll('.person') ?? [])].find(b => b.textContent === person)
      again?.focus()
    }
  }

  renderFiles (paths) {
    // a nested <details> per folder
    const root = { folders: {}, files: [] }
    for (const path of paths) {
      const parts = path.split('/')
      let node = root
      for (const part of parts.slice(0, -1)) node = node.folders[part] ??= { folders: {}, files: [] }
      node.files.push(path)
    }
    const render = node => [
      ...Object.entries(node.folders).map(([name, sub]) =>
        el('details', { open: true }, el('summary', { textContent: name }), el('div', {}, ...render(sub)))),
      ...node.files.map(path => {
        const file = el('button', { type: 'button', className: 'file', textContent: path.split('/').pop(), title: path })
        file.dataset.path = path
        file.addEventListener('click', () => this.onOpen(this.branch, path))
        return file
      })
    ]
    const tree = document.getElementById('files')
    const focused = tree.contains(document.activeElement) ? document.activeElement.dataset.path : undefined
    tree.replaceChildren(...render(root))
    if (focused !== undefined) {
      [...tree.querySelectorAll('.file')].find(file => file.dataset.path === focused)?.focus()
    }
    this.markCurrentFile()
  }

  markCurrentFile () {
    for (const file of document.querySelectorAll('#files .file')) {
      file.classList.toggle('current', file.dataset.path === this.path)
    }
  }

  renderLog (commits) {
    document.getElementById('log-branch').textContent = this.branch
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
