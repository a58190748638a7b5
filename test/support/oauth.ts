// Loopback stand-ins that the real SDKs reach, issuing compact test JWTs the database's token checker
// accepts (HS256 with the test database's key):
// - Azure App Service's managed identity endpoint, as @azure/identity (through MSAL) calls it with
//   IDENTITY_ENDPOINT and IDENTITY_HEADER set: GET ?api-version=2019-08-01&resource=..., the secret in
//   X-IDENTITY-HEADER; the answer carries access_token, expires_on (epoch seconds, as text), resource.
// - Google's metadata server, as gcp-metadata calls it with GCE_METADATA_HOST set (and only there): every
//   request and answer carries Metadata-Flavor: Google; the token at
//   /computeMetadata/v1/instance/service-accounts/default/token?scopes=...
// - the SQL Admin API's connect.get (GET /sql/v1beta4/projects/P/instances/I/connectSettings), answering
//   only a bearer token with the sqlservice.admin scope.
import { createHmac } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { JSON_TYPE, StandInServer, TEXT, type RecordedRequest, type Reply } from './aws/stand-in.js';

/** A compact HS256 JWT: small enough for pam_exec's 511 bytes. */
export function testJwt(key: Buffer, claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

/** The claims of a test JWT (no verification: the stand-ins' own tokens). */
export function jwtClaimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

export const AZURE_RESOURCE = 'https://ossrdbms-aad.database.windows.net';
export const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';

/** Every token a stand-in issued, to prove none leaks. */
export interface Issuing {
  readonly tokens: string[];
}

/** Every token `issued` gave out is absent from `text`, and so is each one's signature (a JWT's third part). */
export function noTokenIn(t: { notOk: (v: unknown, m: string) => unknown }, issued: readonly string[], text: string, what: string): void {
  t.notOk(
    issued.some((token) => text.includes(token) || text.includes(token.split('.')[2]!)),
    `no token (nor its signature) in ${what}`,
  );
}

/**
 * Make this process's SDK see `env` and nothing else of a cloud's (`prefix`: its variables' names): no
 * credentials of the machine's, no HTTP proxy.
 */
export function onlyCloudEnv(prefix: RegExp, env: Record<string, string>): void {
  for (const name of Object.keys(process.env)) {
    if (prefix.test(name) || /^(https?|no|all)_proxy$/i.test(name)) delete process.env[name];
  }
  Object.assign(process.env, env);
}

/** Azure's variables (what @azure/identity and MSAL read). */
export const AZURE_ENV = /^(AZURE_|IDENTITY_|MSI_|MSAL_)/;
/** Google's variables (what google-auth-library and gcloud read). */
export const GOOGLE_ENV = /^(GOOGLE_|GCE_|CLOUDSDK_|GCLOUD_)/;

export class AzureIdentityStandIn extends StandInServer implements Issuing {
  readonly tokens: string[] = [];
  /** The secret App Service puts in IDENTITY_HEADER. */
  readonly secret = 'stand-in-identity-header-secret';
  /** Seconds each token lives. */
  lifetimeS = 3600;
  /** Who the tokens name (upn) and for what (aud): a test may issue for the wrong principal or resource. */
  principal: string;
  audience = AZURE_RESOURCE;
  /** Answer with this status and no token (a broken identity endpoint). */
  failWith: number | undefined;
  /** Pad each token to about this many bytes (Entra ID tokens with many group claims reach 7 KB). */
  padTo = 0;

  constructor(
    private readonly key: Buffer,
    principal: string,
  ) {
    super();
    this.path = '/msi/token';
    this.principal = principal;
  }

  /** IDENTITY_ENDPOINT and IDENTITY_HEADER, and nothing else of Azure's: no IMDS probe, no CLI. */
  env(): Record<string, string> {
    return { IDENTITY_ENDPOINT: this.url, IDENTITY_HEADER: this.secret };
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    // An identity endpoint that refuses the request (a misconfigured identity), which MSAL does not retry.
    if (rec.path === '/msi/broken')
      return { status: 400, headers: JSON_TYPE, body: '{"error":"invalid_request","error_description":"no identity"}' };
    if (rec.path !== this.path || rec.method !== 'GET') return { status: 404, headers: TEXT, body: 'Not Found' };
    if (req.headers['x-identity-header'] !== this.secret) return { status: 401, headers: JSON_TYPE, body: '{"error":"unauthorized"}' };
    if (rec.params['api-version'] !== '2019-08-01' || !rec.params.resource)
      return { status: 400, headers: JSON_TYPE, body: '{"error":"invalid_request"}' };
    if (this.failWith)
      return { status: this.failWith, headers: JSON_TYPE, body: '{"error":"unavailable","error_description":"stand-in down"}' };
    const now = Math.floor(Date.now() / 1000);
    const exp = now + this.lifetimeS;
    const claims: Record<string, unknown> = { aud: this.audience, tid: TENANT, upn: this.principal, iat: now, exp };
    if (this.padTo > 0) claims.groups = 'g'.repeat(Math.max(0, this.padTo - 300));
    const token = testJwt(this.key, claims);
    this.tokens.push(token);
    return {
      status: 200,
      headers: JSON_TYPE,
      body: JSON.stringify({
        access_token: token,
        expires_on: String(exp),
        resource: rec.params.resource,
        token_type: 'Bearer',
        client_id: 'c0ffee',
      }),
    };
  }
}

export const LOGIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.login';
export const ADMIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.admin';
const METADATA = { 'metadata-flavor': 'Google' };

export class GceMetadataStandIn extends StandInServer implements Issuing {
  readonly tokens: string[] = [];
  lifetimeS = 3600;
  /** The attached service account's email. */
  email: string;

  constructor(
    private readonly key: Buffer,
    email: string,
  ) {
    super();
    this.email = email;
  }

  /** GCE_METADATA_HOST (host:port, as gcloud's own tests set it): gcp-metadata then pings only this host. */
  env(): Record<string, string> {
    return { GCE_METADATA_HOST: this.origin.replace('http://', '') };
  }

  /** Token requests, by scope. */
  tokenRequests(scope?: string): number {
    return this.count((r) => r.path.endsWith('/token') && (scope === undefined || (r.params.scopes ?? '').split(',').includes(scope)));
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    if (req.headers['metadata-flavor'] !== 'Google') return { status: 403, headers: TEXT, body: 'Missing Metadata-Flavor:Google header.' };
    const base = '/computeMetadata/v1';
    switch (rec.path) {
      case `${base}/instance`:
      case `${base}/instance/`:
        return { status: 200, headers: { ...TEXT, ...METADATA }, body: 'attributes/\nservice-accounts/\n' };
      case `${base}/instance/service-accounts/default/email`:
        return { status: 200, headers: { ...TEXT, ...METADATA }, body: this.email };
      case `${base}/project/project-id`:
        return { status: 200, headers: { ...TEXT, ...METADATA }, body: 'my-project' };
      case `${base}/universe/universe-domain`:
        return { status: 200, headers: { ...TEXT, ...METADATA }, body: 'googleapis.com' };
      case `${base}/instance/service-accounts/default/token`: {
        const now = Math.floor(Date.now() / 1000);
        const scope = (rec.params.scopes ?? 'https://www.googleapis.com/auth/cloud-platform').split(',').join(' ');
        const token = testJwt(this.key, { email: this.email, scope, iat: now, exp: now + this.lifetimeS });
        this.tokens.push(token);
        return {
          status: 200,
          headers: { ...JSON_TYPE, ...METADATA },
          body: JSON.stringify({ access_token: token, expires_in: this.lifetimeS, token_type: 'Bearer' }),
        };
      }
      default:
        return { status: 404, headers: { ...TEXT, ...METADATA }, body: 'Not Found' };
    }
  }
}

/** What connect.get answers for one instance. */
export interface StandInInstance {
  ipAddresses?: Array<{ type: string; ipAddress: string }>;
  serverCaCert?: { cert: string };
  dnsName?: string;
  dnsNames?: Array<{ name: string; connectionType: string; dnsScope: string }>;
  pscEnabled?: boolean;
  serverCaMode?: string;
  region?: string;
  databaseVersion?: string;
}

export class SqlAdminStandIn extends StandInServer {
  /** Instances by `project/instance`. */
  readonly instances = new Map<string, StandInInstance>();

  constructor(private readonly key: Buffer) {
    super();
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    const match = /^\/sql\/v1beta4\/projects\/([^/]+)\/instances\/([^/]+)\/connectSettings$/.exec(rec.path);
    if (!match || rec.method !== 'GET') return { status: 404, headers: JSON_TYPE, body: '{"error":{"code":404,"message":"Not Found"}}' };
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!auth || !this.verify(auth[1]!))
      return {
        status: 401,
        headers: JSON_TYPE,
        body: '{"error":{"code":401,"message":"Request had invalid authentication credentials."}}',
      };
    const instance = this.instances.get(`${decodeURIComponent(match[1]!)}/${decodeURIComponent(match[2]!)}`);
    if (!instance)
      return { status: 404, headers: JSON_TYPE, body: '{"error":{"code":404,"message":"The Cloud SQL instance does not exist."}}' };
    return {
      status: 200,
      headers: JSON_TYPE,
      body: JSON.stringify({ kind: 'sql#connectSettings', backendType: 'SECOND_GEN', ...instance }),
    };
  }

  /** A token of ours, unexpired, with the admin scope. */
  private verify(token: string): boolean {
    const [header, payload, signature] = token.split('.');
    if (!header || !payload || !signature) return false;
    if (createHmac('sha256', this.key).update(`${header}.${payload}`).digest('base64url') !== signature) return false;
    const claims = jwtClaimsOf(token);
    return (claims.exp as number) * 1000 > Date.now() && String(claims.scope).split(' ').includes(ADMIN_SCOPE);
  }
}

/** An environment with nothing of Azure's or Google's but what the test gives (no proxies, no files in HOME). */
export function cleanCloudEnv(home: string, extra: Record<string, string> = {}): Record<string, string> {
  const kept = Object.entries(process.env).filter(
    ([k]) =>
      !AZURE_ENV.test(k) &&
      !GOOGLE_ENV.test(k) &&
      !k.startsWith('AWS_') &&
      !k.startsWith('PG_IAM_PROXY_') &&
      !/^(https?|no|all)_proxy$/i.test(k),
  ) as Array<[string, string]>;
  return {
    ...Object.fromEntries(kept),
    HOME: home,
    // Azure's CLI and PowerShell credentials look in HOME; Google's well-known file too (CLOUDSDK_CONFIG).
    CLOUDSDK_CONFIG: `${home}/gcloud`,
    // Google: only the metadata server the test names; never a ping of 169.254.169.254.
    METADATA_SERVER_DETECTION: 'ping-only',
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}
