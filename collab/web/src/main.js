// The page: sign in, then the editor, the branch panel and the merge view side by side.
//
// What is open lives in the URL's hash, `#<repo>/<branch>:<path>` (the engine's document
// id, percent-encoded), so a reload or a shared link opens the same document. A newcomer
// starts on their own branch (`branch.join` creates it), where everything they type is
// committed for them; a branch they may not write opens read-only.
import { Api, ApiError } from './api.js'
import { openEditor, roomName } from './editor.js'
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
  const wanted = parseHash()
  const repoInfo = repos.find(r => r.name === wanted?.repo) || repos[0]
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
  const open = async (branch, path) => {
    if (current && current.branch === branch && current.path === path) return
    path = path || (await api.call('branch.files', { repo, branch })).files.find(p => /readme/i.test(p)) || ''
    // a branch the user may not write opens read-only (the server would refuse the edits)
    const listed = (await api.call('branch.list', { repo })).find(b => b.name === branch)
    const readOnly = listed ? !listed.writable : false
    current = { branch, path }
    const docId = `${repo}/${branch}:${path}`
    history.replaceState(null, '', `#${roomName(docId)}`)
    const mark = branch === own ? '  (your branch)' : readOnly ? '  (read-only)' : ''
    $('where').textContent = `${branch} : ${path}${mark}`
    editor?.destroy()
    editor = null
    if (path) {
      const onStatus = text => { $('ghost-status').textContent = text }
      editor = openEditor($('editor'), {
        docId,
        api,
        user: creds.user,
        readOnly,
        onStatus: text => { $('status').textContent = text },
        extensions: [ghostText({ api, docId, onStatus })]
      })
      window.collab.editor = editor
    }
    await panel.show(branch, path)
  }

  const merge = new MergeView({ api, repo, onResolve: (branch, path) => open(branch, path) })
  const panel = new BranchPanel({
    api,
    repo,
    onOpen: (branch, path) => open(branch, path),
    onBranches: list => merge.setBranches(list, { current: current?.branch ?? own, main: repoInfo.default_branch })
  })
  $('fork').addEventListener('click', async () => {
    const fork = await api.call('branch.fork', { repo, source: current.branch })
    await open(fork.name, current.path)
  })
  // for the console, the browser tests and the keystroke benchmark
  window.collab = { api, repo, own, open, openEditor, get current () { return current } }
  await open(wanted?.repo === repo ? wanted.branch : own, wanted?.repo === repo ? wanted.path : null)
}

main()
