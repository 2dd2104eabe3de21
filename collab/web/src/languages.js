// Syntax highlighting chosen by the file's extension.
import { javascript } from '@codemirror/lang-javascript'
import { python } from '@codemirror/lang-python'
import { markdown } from '@codemirror/lang-markdown'
import { json } from '@codemirror/lang-json'
import { css } from '@codemirror/lang-css'
import { html } from '@codemirror/lang-html'

const byExtension = {
  js: () => javascript(),
  mjs: () => javascript(),
  cjs: () => javascript(),
  jsx: () => javascript({ jsx: true }),
  ts: () => javascript({ typescript: true }),
  tsx: () => javascript({ jsx: true, typescript: true }),
  py: () => python(),
  pyi: () => python(),
  md: () => markdown(),
  json: () => json(),
  css: () => css(),
  html: () => html(),
  htm: () => html()
}

/** The CodeMirror language extension for `path`, or [] (plain text). */
export function languageFor (path) {
  const extension = path.includes('.') ? path.split('.').pop().toLowerCase() : ''
  const make = byExtension[extension]
  return make ? make() : []
}
