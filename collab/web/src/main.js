// The page: sign in, then the editor, the branch panel and the merge view side by side.
//
// What is open lives in the URL's hash, `#<repo>/<branch>:<path>` (the engine's document
// id, percent-encoded), so a reload or a shared link opens the same document. A newcomer
// starts on their own branch (`branch.join` creates it), where everything they type is
// committed for them; a branch they may not write opens read-only. The last document asked
// for wins (a slower answer for an earlier click is dropped), a link followed in the page
// (only the hash changes) opens its document, and the page asks before it is closed while
// a document holds edits the server has not confirmed.
import { Api, ApiError } from './api.js'
import { openEditor, roomName, settings, unsavedEdits } from './editor.js'
import { ghostText } from './ghost.js'
import { BranchPanel } from './branches.js'
import { MergeView } from './merge.js'

const $ = id => document.getElementById(id)

/**
 * The credentials: from the URL (then kept: a token in localStorage, a name per tab), or
 * asked for (always, when the last ones were refused).
 */
async function credentials (refused) {
  const { dev_mode: devMode } = await (await fetch('/web/config.json')).json()
  if (refused) return await signInForm(devMode)
  const params = new URLSearchParams(location.search)
  const token = params.get('token')
  if (token) {
    localStorage.setItem('collab.token', token)
    params.delete('token') // not left in the address bar, the history or a shared link
    history.replaceState(null, '', `${location.pathname}${params.size ? `?${params}` : ''}${location.hash}`)
  }
  if (!devMode && localStorage.getItem('collab.token')) {
    const stored = localStorage.getItem('collab.token')
    return { token: stored, user: tokenUser(stored) }
  }
  const user = params.get('user') || sessionStorage.getItem('collab.user')
  if (devMode && user) return { user }
  return await signInForm(devMode)
}

/** The user a token names (read, not checked: the server checks it on every call). */
function tokenUser (token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(payload)).u
  } catch { return 'me' }
}

function signInForm (devMode) {
  const form = $('signin')
  $('signin-name').hidden = !devMode
  $('signin-token').hidden = devMode
  form.hidden = false
  return new Promise(resolve => form.addEventListener('submit', event => {
    event.preventDefault()
    const data = new FormData(form)
    form.hidden = true
    if (devMode) {
      sessionStorage.setItem('collab.user', data.get('user').trim())
      resolve({ user: data.get('user').trim() })
    } else {
      localStorage.setItem('collab.token', data.get('token').trim())
      resolve({ token: data.get('token').trim(), user: tokenUser(data.get('token').trim()) })
    }
  }, { once: true }))
}

/**
 * A notice above the editor, one per `key` (a new one replaces it): `text`, buttons for
 * `actions` ({label: handler}), and a button that dismisses it. `null` text removes it.
 */
function notify (key, text, { actions = {}, kind = 'info', details = null } = {}) {
  const notices = $('notices')
  notices.querySelector(`[data-key="${CSS.escape(key)}"]`)?.remove()
  if (text === null) return
  const item = document.createElement('div')
  item.className = `notice ${kind}`
  item.dataset.key = key
  const words = document.createElement('span')
  words.textContent = text
  item.append(words)
  for (const [label, handler] of Object.entries(actions)) {
    const button = document.createElement('button')
    button.textContent = label
    button.addEventListener('click', () => { item.remove(); handler() })
    item.append(button)
  }
  if (details !== null) {
    const more = document.createElement('details')
    const summary = document.createElement('summary')
    summary.textContent = 'the text'
    const pre = document.createElement('pre')
    pre.textContent = details
    more.append(summary, pre)
    item.append(more)
  }
  const close = document.createElement('button')
  close.className = 'dismiss'
  close.title = 'dismiss'
  close.setAttribute('aria-label', 'dismiss')
  close.textContent = '×'
  close.addEventListener('click', () => item.remove())
  item.append(close)
  notices.append(item)
}

/** The document id in the hash; a hash that is not percent-encoded is taken as it is. */
function parseHash () {
  let id = location.hash.slice(1)
  try { id = decodeURIComponent(id) } catch {} // a stray `%` (an address written by hand)
  const slash = id.indexOf('/')
  const colon = id.indexOf(':')
  if (slash < 1 || colon < slash) return null
  return { repo: id.slice(0, slash), branch: id.slice(slash + 1, colon), path: id.slice(colon + 1) }
}

async function main (refused = false) {
  let creds, status
  try {
    creds = await credentials(refused)
    status = await new Api(creds).call('server.status')
  } catch (error) {
    if (!(error instanceof ApiError)) { // the server is not reachable: try again soon
      $('signin-error').textContent = `cannot reach the server (${error.message}); trying again…`
      $('signin-name').hidden = $('signin-token').hidden = true
      $('signin').hidden = false
      setTimeout(() => main(refused), 2000)
      return
    }
    localStorage.removeItem('collab.token')
    sessionStorage.removeItem('collab.user')
    $('signin-error').textContent = `${error.message}: sign in again`
    return main(true)
  }
  $('signin').hidden = true
  $('signin-error').textContent = ''
  const api = new Api(creds)
  $('app').hidden = false
  $('me').textContent = creds.user
  const repos = status.repositories
  const linked = parseHash()
  const repoInfo = repos.find(r => r.name === linked?.repo) || repos[0]
  if (!repoInfo) {
    $('where').textContent = 'no repositories on this server'
    return
  }
  $('repo').replaceChildren(...repos.map(r => Object.assign(document.createElement('option'), { value: r.name, textContent: r.name })))
  $('repo').value = repoInfo.name
  $('repo').addEventListener('change', () => { location.hash = ''; location.reload() })
  const repo = repoInfo.name
  const own = (await api.call('branch.join', { repo })).name

  let editor = null
  let current = null
  let wanted = null // the last document asked for: {branch, path}
  let opening = 0 // counts the opens: only the last one asked for goes on
  /** Opens `path` on `branch` (its README when no path is given): the last call wins.
   * `again`: even if it is the one open (a fresh copy). */
  const open = async (branch, path, { again = false } = {}) => {
    if (!again && wanted && wanted.branch === branch && wanted.path === path) return
    const mine = ++opening
    wanted = { branch, path }
    try {
      const [{ files }, list] = await Promise.all([
        api.call('branch.files', { repo, branch }),
        api.call('branch.list', { repo })
      ])
      if (mine !== opening) return // a later open was asked for meanwhile
      path = path || files.find(p => /readme/i.test(p)) || ''
      wanted = { branch, path }
      // a branch the user may not write opens read-only (the server would refuse the edits)
      const listed = list.find(b => b.name === branch)
      const readOnly = listed ? !listed.writable : false
      const missing = Boolean(path) && !files.includes(path)
      current = { branch, path, readOnly, missing }
      const docId = `${repo}/${branch}:${path}`
      history.replaceState(null, '', `#${roomName(docId)}`)
      showWhere()
      notify('document', missing ? `${path} is not on ${branch}: what you type creates it there.` : null)
      notify('error', null)
      editor?.destroy() // kept in the background until the server has its edits
      editor = null
      if (path) {
        const onStatus = text => { $('ghost-status').textContent = text }
        editor = openEditor($('editor'), {
          docId,
          api,
          user: creds.user,
          readOnly,
          onStatus: text => { $('status').textContent = text },
          onRefused: refusal => showRefusal(refusal, branch, path),
          onLost: lost,
          extensions: [ghostText({ api, docId, onStatus })]
        })
        window.collab.editor = editor
      }
      await panel.show(branch, path)
    } catch (error) {
      if (mine !== opening) return
      wanted = current // asking again tries again
      if (current) { // the address names what is open, not what could not be
        history.replaceState(null, '', `#${roomName(`${repo}/${current.branch}:${current.path}`)}`)
      }
      notify('error', `Could not open ${path || branch}${path ? ` on ${branch}` : ''}: ${error.message}`, { kind: 'error' })
    }
  }

  /** The header: the branch and file open, and what they are to this user. */
  const showWhere = () => {
    const { branch, path, readOnly, missing } = current
    const mark = missing ? '  (not on this branch)' : branch === own ? '  (your branch)' : readOnly ? '  (read-only)' : ''
    $('where').textContent = `${branch} : ${path}${mark}`
  }

  /** A fresh file list of the branch shown: a file typed into being is on it now. */
  const filesChanged = (branch, files) => {
    if (!current || current.branch !== branch || !current.missing || !files.includes(current.path)) return
    current.missing = false
    showWhere()
    notify('document', null)
  }

  /** The server refuses the open document for good (or no longer: `refusal` null). */
  const showRefusal = (refusal, branch, path) => {
    if (!refusal) return notify('document', null)
    const actions = {}
    if (refusal.code === 4001) actions['Sign in again'] = signInAgain
    if (refusal.code === 4019 || refusal.code === 4010 || refusal.code === 4009) {
      actions['Open it again'] = () => open(branch, path, { again: true })
    }
    const reason = refusal.reason ? ` (${refusal.reason})` : ''
    notify('document', `${refusal.text}${reason}`, { actions, kind: 'error' })
  }

  /** A document left with edits the server did not take: say so, with the text. */
  const lost = ({ docId, text, reason }) => {
    notify(`lost ${docId}`, `Your last edits to ${docId} could not be saved: ${reason}.`, { kind: 'error', details: text })
  }

  /** The token expired: a new one, and the open editor connects with it. */
  const signInAgain = async () => {
    $('app').hidden = true
    $('signin-error').textContent = 'signed out: sign in again'
    for (;;) {
      const fresh = await credentials(true)
      try {
        await new Api(fresh).call('server.status')
        creds = fresh
        api.credentials = fresh
        break
      } catch (error) {
        $('signin-error').textContent = `${error.message}: sign in again`
      }
    }
    $('signin-error').textContent = ''
    $('app').hidden = false
    editor?.retry()
  }

  const merge = new MergeView({ api, repo, onResolve: (branch, path) => open(branch, path) })
  const panel = new BranchPanel({
    api,
    repo,
    onOpen: (branch, path) => open(branch, path),
    onFiles: filesChanged,
    onBranches: list => merge.setBranches(list, { current: current?.branch ?? own, main: repoInfo.default_branch })
  })
  $('fork').addEventListener('click', async () => {
    const source = current?.branch ?? own
    let fork
    try {
      fork = await api.call('branch.fork', { repo, source })
    } catch (error) {
      notify('error', `Could not fork ${source}: ${error.message}`, { kind: 'error' })
      return
    }
    await open(fork.name, current?.path)
  })
  // a link to another document followed in this page: only the hash changes
  window.addEventListener('hashchange', () => {
    const linked = parseHash()
    if (!linked) return
    if (linked.repo !== repo) return location.reload()
    open(linked.branch, linked.path)
  })
  window.addEventListener('beforeunload', event => {
    if (!unsavedEdits()) return
    event.preventDefault() // the browser asks whether to leave
    event.returnValue = ''
  })
  // for the console, the browser tests and the keystroke benchmark
  window.collab = { api, repo, own, open, openEditor, settings, unsavedEdits, get current () { return current } }
  await open(linked?.repo === repo ? linked.branch : own, linked?.repo === repo ? linked.path : null)
}

main()
