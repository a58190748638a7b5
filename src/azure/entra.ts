// Azure Database for PostgreSQL with Microsoft Entra ID authentication: the password is an Entra ID access
// token for the scope below, from @azure/identity's DefaultAzureCredential (environment, workload identity,
// managed identity, Azure CLI, ...); the user name is the principal's name as created with
// pgaadauth_create_principal, case-sensitive. The SDK loads on the first fetch: an AWS-only proxy never
// loads it. What Azure says when a login fails is here too.
import type { ConnectHints } from '../cloud.js';
import { quoteIdent, quoteLiteral } from '../sql-quote.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import type { TokenErrorWording } from '../oauth/authenticator.js';
import { type BearerFetch, type BearerToken, jwtClaims } from '../oauth/tokens.js';

/** The resource Azure Database for PostgreSQL accepts tokens for, and the scope that asks for it. */
export const AZURE_RESOURCE = 'https://ossrdbms-aad.database.windows.net';
export const AZURE_SCOPE = `${AZURE_RESOURCE}/.default`;

/** Who the tokens come from, in people's words. */
export const AZURE_LABEL = 'DefaultAzureCredential';

let sdk: Promise<typeof import('@azure/identity')> | undefined;

/** Tokens from DefaultAzureCredential, made on the first fetch; the SDK caches and renews them under us too. */
export function azureFetch(): BearerFetch {
  let credential: import('@azure/identity').TokenCredential | undefined;
  return async () => {
    if (!credential) {
      const { DefaultAzureCredential } = await (sdk ??= import('@azure/identity'));
      credential = new DefaultAzureCredential();
    }
    const got = await credential.getToken(AZURE_SCOPE);
    /* c8 ignore next -- typed as nullable; DefaultAzureCredential throws instead */
    if (!got) throw new Error('DefaultAzureCredential returned no token');
    return { value: got.token, expiresAt: got.expiresOnTimestamp, signer: entraSigner(got.token) };
  };
}

/** What a token's claims say of it: the principal, the tenant, the resource it is for. Never the token. */
export interface EntraClaims {
  /** A user's principal name, or a service principal's or managed identity's object ID. */
  readonly principal: string;
  readonly tenant: string | undefined;
  readonly audience: string | undefined;
}

/** The claims of an Entra ID token, read (not verified: the server does that) for logs and advice. */
export function entraClaims(token: string): EntraClaims {
  const claims = jwtClaims(token) ?? {};
  const text = (name: string) => (typeof claims[name] === 'string' ? (claims[name] as string) : undefined);
  const principal =
    text('upn') ??
    text('preferred_username') ??
    text('unique_name') ??
    (text('oid') ? `object ID ${text('oid')}` : text('appid') ? `application ${text('appid')}` : 'an unnamed principal');
  return { principal, tenant: text('tid'), audience: text('aud') };
}

/** Log fields that say whose a token is. */
export function entraSigner(token: string): Record<string, string> {
  const { principal, tenant } = entraClaims(token);
  return { identity: AZURE_LABEL, principal, ...(tenant ? { tenant } : {}) };
}

/** The audience of a token for Azure Database for PostgreSQL (v1 tokens carry the resource; v2 may carry it with a slash). */
const rightAudience = (audience: string | undefined) => audience === undefined || audience.replace(/\/$/, '') === AZURE_RESOURCE;

/** The causes of a refused Entra ID token, most likely first. */
export function entraChecklist(user: string, claims: EntraClaims): string {
  const quoted = quoteIdent(user);
  return [
    `Check, most likely first: 1) the role was created for this principal by a Microsoft Entra administrator of the server, in the postgres database: SELECT * FROM pgaadauth_create_principal(${quoteLiteral(user)}, false, false); (a service principal or managed identity: pgaadauth_create_principal_with_oid with its object ID; a group: the group's name).`,
    `2) The user name is the principal's name exactly, case included: Entra names are case-sensitive here (${quoted}; the token names ${claims.principal}).`,
    `3) The token is for the right resource (${AZURE_RESOURCE}) and the server's tenant: set AZURE_TENANT_ID or log in to that tenant (az login --tenant).`,
    '4) A new member of a group the role was created for can log in only once the server has synchronized the group, a while after the change.',
    '5) Microsoft Entra authentication is enabled on the server (Security, Authentication: "Microsoft Entra authentication only" or "PostgreSQL and Microsoft Entra authentication").',
  ].join(' ');
}

/** Azure's words for a token that cannot be had or is refused. */
export const entraWording: TokenErrorWording = {
  tokenName: 'a Microsoft Entra ID access token',
  tryCommand: `az account get-access-token --scope ${AZURE_SCOPE}`,
  rejection(user: string, token: BearerToken, label: string) {
    const claims = entraClaims(token.value);
    const wrong = rightAudience(claims.audience)
      ? ''
      : ` The token is for ${claims.audience}, not Azure Database for PostgreSQL (${AZURE_RESOURCE}).`;
    const caseOnly =
      claims.principal !== user && claims.principal.toLowerCase() === user.toLowerCase()
        ? ` The user name differs from the token's principal in case only: log in as "${claims.principal}".`
        : '';
    return {
      detail: `pg-iam-proxy sent an Entra ID access token from ${label} for ${claims.principal}${claims.tenant ? ` (tenant ${claims.tenant})` : ''}, valid until ${new Date(token.expiresAt).toISOString()}, as user ${quoteIdent(user)}.${wrong}${caseOnly}`,
      hint: entraChecklist(user, claims),
    };
  },
  notTokenUser(user: string, method: string) {
    const quoted = quoteIdent(user);
    return new WireError(
      SqlState.InvalidAuthorization,
      `user ${quoted} is not set up for Microsoft Entra authentication: the server asked for ${method} authentication`,
      {
        reason: Failure.NotIamUser,
        detail:
          'With Entra authentication the server asks for a cleartext password, which pg-iam-proxy answers with an access token. Any other request means a password role, which the proxy does not relay.',
        hint: `Create the role for the Entra principal (SELECT * FROM pgaadauth_create_principal(${quoteLiteral(user)}, false, false); as an Entra administrator) and enable Microsoft Entra authentication on the server.`,
      },
    );
  },
};

/** The advice attached to the engine's TLS errors for an Azure server. */
export function azureConnectHints(caFile: string | undefined): ConnectHints {
  return {
    untrusted: caFile
      ? `No CA in ${caFile} signed this certificate. Azure's servers chain to DigiCert Global Root G2 or Microsoft RSA Root CA 2017: drop --ca-file to trust Node's public roots, or put those roots in the file.`
      : "Azure's servers chain to DigiCert Global Root G2 or Microsoft RSA Root CA 2017, which Node trusts: something else answered (a proxy intercepting TLS?). Pass its CA with --ca-file only if you trust it.",
    nameMismatch:
      'Use the server name (NAME.postgres.database.azure.com), not an IP address or another alias: its certificate carries it. To dial an address, a private endpoint or a tunnel, keep the server name and add --connect-to HOST:PORT.',
    noTls:
      'Entra authentication requires TLS and pg-iam-proxy never falls back to plaintext: Azure always offers TLS, so check that --connect-to points at the server.',
  };
}
