// The engine's HTTP operations (POST /api/<op>) and the credentials every call carries.
//
// Dev mode signs in with a name (?user=NAME, loopback only); a server with a secret wants a
// token minted by `collab token`, which goes in the Authorization header here and in the
// y-websocket URL's query (browsers cannot set headers on a WebSocket).

export class ApiError extends Error {
  constructor (error) {
    super(error.message)
    this.code = error.code // the engine's error code, e.g. 4009 CONFLICT
    this.name = error.name
  }
}

export class Api {
  /** @param {{user?: string, token?: string}} credentials */
  constructor (credentials) {
    this.credentials = credentials
  }

  /** Query parameters for /yjs and /api URLs: {user} in dev mode, {token} otherwise. */
  get params () {
    return this.credentials.token ? { token: this.credentials.token } : { user: this.credentials.user }
  }

  /** Calls an operation; resolves to its value, or rejects with an ApiError. */
  async call (op, args = {}, { signal } = {}) {
    const headers = { 'Content-Type': 'application/json' }
    let query = ''
    if (this.credentials.token) headers.Authorization = `Bearer ${this.credentials.token}`
    else query = `?user=${encodeURIComponent(this.credentials.user)}`
    const response = await fetch(`/api/${op}${query}`, {
      method: 'POST', headers, body: JSON.stringify(args), signal
    })
    const body = await response.json()
    if (body.error) throw new ApiError(body.error)
    return body.value
  }
}
