#!/usr/bin/env node
/**
 * browser.cjs - real Chromium driven with playwright-core, for the web editor's tests.
 *
 * Newline-delimited JSON on stdin, one reply line per command on stdout:
 * {"id", "ok": true, ...} or {"id", "ok": false, "error"}. Commands run concurrently; match
 * replies by `id`. `page` names a browser context with one page (its own cookies and
 * storage: another person).
 *
 *   open {page, url}                 a new context and page at url
 *   eval {page, fn, arg?}            fn: a function's source, called in the page with arg
 *   wait {page, fn, arg?, timeout_ms?}  until fn(arg) is truthy in the page -> {value}
 *   type {page, text, delay_ms?}     keyboard.type
 *   insert {page, text}              keyboard.insertText
 *   press {page, key}                keyboard.press ("Tab", "Control+End"...)
 *   down {page, key} / up {page, key}  keyboard.down / keyboard.up (a key held meanwhile)
 *   click {page, selector}
 *   select {page, selector, value}
 *   offline {page, offline}          context.setOffline
 *   reload {page}
 *   screenshot {page, path}
 *   errors {page}                    what the page logged as an error (console.error, an
 *                                    uncaught exception) since it opened -> {errors}
 *   close {page}
 *   leave {page}                     closes the page as a person leaving it would: if the
 *                                    browser asks whether to leave, stays -> {asked: true};
 *                                    else the page is gone -> {asked: false}
 *   shutdown
 *
 * playwright-core comes from collab/web/node_modules (NODE_PATH); the browser is the
 * system's Chromium ($CHROMIUM).
 */
const readline = require('node:readline')
const { chromium } = require('playwright-core')

let browser = null
const pages = new Map()
const errors = new Map() // page name -> what it logged as an error

async function launch () {
  browser ??= await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ['--no-sandbox', '--disable-dev-shm-usage']
  })
  return browser
}

function pageOf (name) {
  const page = pages.get(name)
  if (!page) throw new Error(`no page ${name}`)
  return page
}

const call = (fn, arg) => `(${fn})(${JSON.stringify(arg ?? null)})`

const commands = {
  async open ({ page: name, url }) {
    const context = await (await launch()).newContext({ viewport: { width: 1280, height: 760 } })
    const page = await context.newPage()
    const logged = []
    errors.set(name, logged)
    page.on('pageerror', error => {
      logged.push(`uncaught: ${error.message}`)
      process.stderr.write(`[${name}] page error: ${error.message}\n`)
    })
    page.on('console', message => {
      if (message.type() === 'error') logged.push(message.text())
    })
    pages.set(name, page)
    await page.goto(url)
    return {}
  },
  async eval ({ page, fn, arg }) {
    return { value: await pageOf(page).evaluate(call(fn, arg)) }
  },
  // polled from here: waitForFunction evaluates its predicate with eval inside the page,
  // which the page's Content-Security-Policy forbids
  async wait ({ page, fn, arg, timeout_ms: timeout = 10000 }) {
    const deadline = Date.now() + timeout
    for (;;) {
      let value
      try {
        value = await pageOf(page).evaluate(call(fn, arg))
      } catch (error) { // the page is navigating: ask its next document
        if (!/context was destroyed|navigat/i.test(String(error?.message))) throw error
      }
      if (value) return { value }
      if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms: ${fn}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  },
  async type ({ page, text, delay_ms: delay = 0 }) {
    await pageOf(page).keyboard.type(text, { delay })
    return {}
  },
  async insert ({ page, text }) {
    await pageOf(page).keyboard.insertText(text)
    return {}
  },
  async press ({ page, key }) {
    await pageOf(page).keyboard.press(key)
    return {}
  },
  async down ({ page, key }) {
    await pageOf(page).keyboard.down(key)
    return {}
  },
  async up ({ page, key }) {
    await pageOf(page).keyboard.up(key)
    return {}
  },
  async click ({ page, selector }) {
    await pageOf(page).click(selector)
    return {}
  },
  async select ({ page, selector, value }) {
    await pageOf(page).selectOption(selector, value)
    return {}
  },
  async offline ({ page, offline }) {
    await pageOf(page).context().setOffline(offline)
    return {}
  },
  async reload ({ page }) {
    await pageOf(page).reload()
    return {}
  },
  async screenshot ({ page, path }) {
    await pageOf(page).screenshot({ path })
    return {}
  },
  async leave ({ page: name }) {
    const page = pageOf(name)
    const asked = new Promise(resolve => {
      page.once('dialog', async dialog => {
        resolve(dialog.type() === 'beforeunload')
        await dialog.dismiss() // stay on the page
      })
      page.once('close', () => resolve(false))
    })
    await page.close({ runBeforeUnload: true })
    const answer = await asked
    if (!answer) {
      await page.context().close()
      pages.delete(name)
    }
    return { asked: answer }
  },
  async errors ({ page }) {
    pageOf(page)
    return { errors: errors.get(page).slice() }
  },
  async close ({ page }) {
    await pageOf(page).context().close()
    pages.delete(page)
    return {}
  },
  async shutdown () {
    if (browser) await browser.close()
    return {}
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', async line => {
  let command = {}
  try {
    command = JSON.parse(line)
    const run = commands[command.cmd]
    if (!run) throw new Error(`unknown command ${command.cmd}`)
    const reply = await run(command)
    process.stdout.write(JSON.stringify({ id: command.id, ok: true, ...reply }) + '\n')
    if (command.cmd === 'shutdown') process.exit(0)
  } catch (error) {
    process.stdout.write(JSON.stringify({ id: command.id, ok: false, error: String(error.message || error) }) + '\n')
  }
})
lines.on('close', async () => {
  if (browser) await browser.close()
  process.exit(0)
})
