// A real OpenID Connect provider on 127.0.0.1 for the token tests (oidc-provider): a public client
// allowed the device flow and refresh tokens, JWT access tokens with a short life (via a resource
// indicator), revocation. `approve` plays the user who opens the verification URL and says yes.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export const RESOURCE = 'https://desfs.test/archive'
export const CLIENT_ID = 'desfs-cli'

export interface TestProvider {
  issuer: string
  approve(userCode: string, accountId?: string): Promise<void>
  /** Revokes a refresh token at the provider, as a user or an admin would. */
  revokeRefreshToken(refreshToken: string): Promise<void>
  /** True while the provider still honours this refresh token. */
  hasRefreshToken(refreshToken: string): Promise<boolean>
  close(): Promise<void>
}

export async function startProvider(opts: { accessTokenTTL?: number } = {}): Promise<TestProvider> {
  const accessTokenTTL = opts.accessTokenTTL ?? 60
  // oidc-provider warns about the runtime (Node 20) on stderr and prints notices via console.info to
  // stdout, which would end up in the TAP stream: keep stdout clean while it loads and runs.
  const info = console.info
  console.info = () => undefined
  const { default: Provider, errors } = await import('oidc-provider')
  const server = http.createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    scopes: ['openid', 'offline_access', 'storage.read'],
    findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx: unknown, c: { clientId: string }, token: { clientId: string }) => token.clientId === c.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, resource: string) => {
          if (resource !== RESOURCE) throw new errors.InvalidTarget()
          return { scope: 'storage.read', audience: RESOURCE, accessTokenTTL, accessTokenFormat: 'jwt' }
        },
      },
    },
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(g: string): boolean }) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: accessTokenTTL,
      IdToken: 300,
      DeviceCode: 600,
      RefreshToken: 3600,
      Grant: 3600,
      Session: 3600,
      Interaction: 600,
      ClientCredentials: 600,
      AuthorizationCode: 60,
      BackchannelAuthenticationRequest: 600,
    },
  })
  server.on('request', provider.callback())
  const norm = (code: string) => code.toUpperCase().replace(/\W/g, '')
  return {
    issuer,
    async approve(userCode, accountId = 'alice') {
      const dc = await provider.DeviceCode.findByUserCode(norm(userCode))
      if (!dc) throw new Error(`no device code ${userCode}`)
      const grant = new provider.Grant({ accountId, clientId: dc.clientId })
      grant.addOIDCScope('openid offline_access')
      grant.addResourceScope(RESOURCE, 'storage.read')
      Object.assign(dc, {
        accountId,
        grantId: await grant.save(),
        authTime: Math.floor(Date.now() / 1000),
        scope: String(dc.params.scope ?? 'openid'),
        resource: RESOURCE,
      })
      await dc.save()
    },
    async revokeRefreshToken(refreshToken) {
      const rt = await provider.RefreshToken.find(refreshToken)
      if (!rt) throw new Error('no such refresh token')
      await rt.destroy()
    },
    async hasRefreshToken(refreshToken) {
      const rt = await provider.RefreshToken.find(refreshToken)
      return !!rt && !rt.isExpired
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => {
          console.info = info
          r()
        })
      }),
  }
}
