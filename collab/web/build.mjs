// Builds the web editor into dist/: one bundle (esbuild), the page and its styles.
// `make run` and `make test` run it (`npm run build`); the server serves dist/ at /.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'

const here = new URL('.', import.meta.url).pathname
rmSync(`${here}dist`, { recursive: true, force: true })
mkdirSync(`${here}dist`)
await build({
  entryPoints: [`${here}src/main.js`],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outfile: `${here}dist/app.js`,
  logLevel: 'warning'
})
for (const name of ['index.html', 'style.css']) copyFileSync(`${here}src/${name}`, `${here}dist/${name}`)
