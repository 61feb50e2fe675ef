// oidc-provider ships no types; the tests use a small part of it through `any`.
declare module 'oidc-provider' {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const Provider: any
  export default Provider
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  export const errors: any
}
