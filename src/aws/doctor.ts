// `pg-iam-proxy doctor` for RDS: the chain walked the way AWS's troubleshooting page walks it. The
// credentials and who they sign as (STS), the region and the endpoint name, DNS, TCP, TLS and the
// certificate against the RDS CAs, the clock against STS's, a token, and a real login whose refusal is
// explained cause by cause.
import { lookup, resolveCname } from 'node:dns/promises';
import { connect as tcpConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type PeerCertificate } from 'node:tls';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import type { CloudDoctor } from '../cloud.js';
import type { InstanceConfig } from '../config.js';
import { checkPooling } from '../doctor/pooling.js';
import { type DoctorRun, doctorStartup, missingDatabaseFix, type Outcomes, Stop } from '../doctor/walk.js';
import { formatHostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { NegotiationReply, TERMINATE_MESSAGE } from '../protocol/constants.js';
import type { WireError } from '../protocol/errors.js';
import { connectUpstream, SSL_REQUEST } from '../upstream/connect.js';
import { loginUpstream, PasswordMethodRefused, TokenRejected } from '../upstream/auth.js';
import { upstreamTls, type UpstreamTls } from './ca.js';
import type { AwsProcess } from './cloud.js';
import { isRdsEndpointName, regionFromEndpoint } from './endpoint.js';
import { GLOBAL_BUNDLE_URL, notIamUser, rdsConnectHints, rejectionFixes } from './hints.js';
import { CLOCK_SKEW_WARN_MS, callerIdentity, NoCredentialsError, type CallerIdentity, type SignerIdentity } from './identity.js';
import type { IamToken } from './tokens.js';

const DAY_MS = 86_400_000;
/** A server certificate this close to its end is warned of: time to rotate the instance's CA. */
const CERT_EXPIRY_WARN_DAYS = 30;
/** AWS refuses a signature dated more than 5 minutes off its own clock. */
const SIGNATURE_SKEW_MAX_MS = 5 * 60_000;

/** The RDS walk: each step one or more checks, in the order the troubleshooting page takes them. */
export const awsDoctor: CloudDoctor<AwsProcess> = (instance, options, { identities }) => {
  const now = options.now ?? Date.now;
  const at = (outcomes: Outcomes): Context => ({ instance, options, now, set: outcomes.set, fail: outcomes.fail });
  // The identity this DB user signs with: its own under `users:`, else the instance's.
  const signer = identities.for(instance.users?.get(options.user) ?? instance.identity, instance.region);
  let had: { creds: AwsCredentialIdentity; who: CallerIdentity | undefined } | undefined;
  let tls: UpstreamTls;
  let token: IamToken;
  return [
    {
      checks: [['credentials', 'AWS credentials and identity']],
      // Without credentials the walk goes on to what needs none (the name, DNS, TCP, TLS, the certificate).
      run: async (outcomes) => {
        had = await checkCredentials(at(outcomes), signer).catch((err: unknown) => {
          if (!(err instanceof Stop)) throw err;
          return undefined;
        });
      },
    },
    { checks: [['endpoint', 'Region and endpoint name']], run: (outcomes) => checkEndpoint(at(outcomes)) },
    { checks: [['dns', 'DNS resolution of the dial address']], run: (outcomes) => checkDns(at(outcomes)) },
    {
      checks: [
        ['tcp', 'TCP connection'],
        ['tls', 'TLS offered by the server'],
        ['certificate', 'Server certificate'],
      ],
      run: (outcomes) => {
        tls = upstreamTls(instance.caFile);
        return checkConnection(at(outcomes), tls);
      },
    },
    {
      checks: [['clock', 'Clock']],
      needs: { met: () => had !== undefined, skipped: 'not checked: it needs AWS credentials, which could not be had (above)' },
      run: (outcomes) => checkClock(at(outcomes), had!.who),
    },
    {
      checks: [['token', 'IAM token']],
      run: async (outcomes) => {
        token = await checkToken(at(outcomes), signer, had!.creds);
      },
    },
    {
      checks: [
        ['login', 'Login'],
        ['pooling', 'Pooling against the server'],
      ],
      run: (outcomes) => checkLogin(at(outcomes), tls, token, had!.who),
    },
  ];
};

interface Context extends Outcomes {
  readonly instance: InstanceConfig;
  readonly options: DoctorRun;
  readonly now: () => number;
}

async function checkCredentials(
  { instance, set, fail }: Context,
  signer: SignerIdentity,
): Promise<{ creds: AwsCredentialIdentity; who: CallerIdentity | undefined }> {
  let creds: AwsCredentialIdentity;
  try {
    creds = await signer.holder.get();
  } catch (err) {
    const tried = err instanceof NoCredentialsError && err.tried.length > 0 ? ` Sources tried: ${err.describeTried()}.` : '';
    throw fail(
      'credentials',
      `${redactSecrets((err as Error).message)}.${tried}`,
      'Make `aws sts get-caller-identity` work here with the same profile or role: environment variables, `--profile` (after `aws sso login` for SSO), or the instance, task or pod role.',
    );
  }
  const source = signer.source() ?? 'static credentials';
  const expires = creds.expiration ? `, expiring ${creds.expiration.toISOString()}` : '';
  const data = { source, accessKeyId: creds.accessKeyId, ...(creds.expiration ? { expiration: creds.expiration.toISOString() } : {}) };
  try {
    const who = await callerIdentity(creds, instance.region);
    set(
      'credentials',
      'pass',
      `${signer.label}: ${source}, access key ${creds.accessKeyId}${expires}; signs as ${who.arn} (account ${who.account})`,
      undefined,
      { ...data, arn: who.arn, account: who.account },
    );
    return { creds: creds, who };
  } catch (err) {
    const e = err as Error & { name: string };
    if (/InvalidClientTokenId|ExpiredToken|SignatureDoesNotMatch|AccessDenied/.test(e.name)) {
      throw fail(
        'credentials',
        `STS refused the credentials from ${source} (access key ${creds.accessKeyId}): ${redactSecrets(e.message)}`,
        'The keys are wrong, revoked or expired: renew them (`aws sso login`, new access keys, a fresh session token).',
        data,
      );
    }
    set(
      'credentials',
      'warn',
      `${signer.label}: ${source}, access key ${creds.accessKeyId}${expires}; sts:GetCallerIdentity did not answer (${redactSecrets(e.message)}), so the identity is unconfirmed`,
      'Check that STS is reachable from here (a VPC endpoint for STS, a proxy) if the login below fails.',
      data,
    );
    return { creds: creds, who: undefined };
  }
}

async function checkEndpoint({ instance, options, set, fail }: Context): Promise<void> {
  const { host } = instance.endpoint;
  const named = regionFromEndpoint(host);
  const from = { flag: 'from --region', endpoint: 'from the endpoint name', env: 'from AWS_REGION' }[options.regionSource];
  const region = `region ${instance.region} (${from})`;
  if (isIP(host)) {
    throw fail(
      'endpoint',
      `${region}; the endpoint ${host} is an IP address`,
      `Sign for the exact RDS endpoint: tokens and the certificate carry the endpoint name, never an address. Pass the name and dial the address with --connect-to ${host}:${instance.endpoint.port}.`,
    );
  }
  if (!isRdsEndpointName(host)) {
    const target = await cnameTarget(host);
    if (target && isRdsEndpointName(target)) {
      throw fail(
        'endpoint',
        `${region}; ${host} is a CNAME for ${target}`,
        `Sign for the exact RDS endpoint: use ${target} as the endpoint (and --connect-to ${host}:${instance.endpoint.port} if you must dial the alias).`,
      );
    }
    set(
      'endpoint',
      'warn',
      `${region}; ${host} is not an RDS endpoint name (NAME.ID.REGION.rds.amazonaws.com)`,
      'Sign for the exact RDS endpoint: RDS rejects tokens signed for a custom domain or alias, and its certificate does not carry one.',
    );
    return;
  }
  if (named !== instance.region) {
    set(
      'endpoint',
      'warn',
      `${region}, but the endpoint is in ${named}`,
      `Tokens must be signed for the database's own region: drop --region or pass --region ${named}.`,
    );
    return;
  }
  set('endpoint', 'pass', `${region}; ${host} is an RDS endpoint name`);
}

/** CNAMEs followed from the endpoint at most: a longer chain is a loop, or nothing an RDS name ends. */
const MAX_CNAME_HOPS = 8;

async function cnameTarget(host: string): Promise<string | undefined> {
  let name = host;
  for (let hop = 0; hop < MAX_CNAME_HOPS; hop++) {
    const next = (await resolveCname(name).catch(() => []))[0];
    if (!next) break;
    name = next;
  }
  return name === host ? undefined : name;
}

async function checkDns({ instance, set, fail }: Context): Promise<void> {
  const { host } = instance.connectTo;
  const via = instance.connectTo === instance.endpoint ? '' : ' (--connect-to)';
  if (isIP(host)) return set('dns', 'pass', `the dial address ${host}${via} is an IP address: nothing to resolve`);
  try {
    const addresses = await lookup(host, { all: true });
    set('dns', 'pass', `${host}${via} resolves to ${addresses.map((a) => a.address).join(', ')}`);
  } catch (err) {
    throw fail(
      'dns',
      `${host}${via} does not resolve: ${(err as NodeJS.ErrnoException).code}`,
      'Check the endpoint name in the RDS console; a private endpoint resolves only inside its VPC (or through a tunnel: --connect-to).',
    );
  }
}

/** TCP, SSLRequest and the TLS handshake on one connection, each reported as its own check. */
async function checkConnection({ instance, options, set, fail }: Context, tls: UpstreamTls): Promise<void> {
  const where = formatHostPort(instance.connectTo);
  const started = performance.now();
  const tcp = await new Promise<Socket | NodeJS.ErrnoException>((resolve) => {
    const socket = tcpConnect({ host: instance.connectTo.host, port: instance.connectTo.port });
    socket.setTimeout(options.connectTimeoutMs, () => socket.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    socket.once('connect', () => (socket.setTimeout(0), resolve(socket)));
    socket.once('error', (err) => resolve(err));
  });
  if (!('write' in tcp)) {
    throw fail(
      'tcp',
      `could not connect to ${where}: ${tcp.code ?? tcp.message}`,
      "Check the database is running, its security group admits this host's address on this port, and it is reachable from this network (publicly accessible, same VPC, VPN, or a tunnel given as --connect-to).",
    );
  }
  const socket = tcp as Socket;
  try {
    set('tcp', 'pass', `connected to ${where} in ${Math.round(performance.now() - started)} ms`);
    socket.write(SSL_REQUEST);
    const answer = await new Promise<Buffer | undefined>((resolve) => {
      socket.setTimeout(options.connectTimeoutMs, () => resolve(undefined));
      socket.once('data', (chunk: Buffer) => resolve(chunk));
      socket.once('close', () => resolve(undefined));
    });
    socket.setTimeout(0);
    if (answer?.toString('latin1') !== 'S') {
      const what =
        answer === undefined
          ? 'no answer'
          : answer[0] === NegotiationReply.Decline
            ? "'N' (no TLS)"
            : `${JSON.stringify(answer.subarray(0, 16).toString('latin1'))}`;
      throw fail(
        'tls',
        `the server at ${where} answered the SSLRequest with ${what}`,
        'RDS always offers TLS: the dial address is not the database (check --connect-to and the port). The proxy never falls back to plaintext.',
      );
    }
    set('tls', 'pass', `the server accepts TLS`);
    await checkCertificate(instance, tls, socket, set, fail);
  } finally {
    socket.destroy();
  }
}

async function checkCertificate(
  instance: InstanceConfig,
  tls: UpstreamTls,
  socket: Socket,
  set: Outcomes['set'],
  fail: Outcomes['fail'],
): Promise<void> {
  const { host } = instance.endpoint;
  const secure = tlsConnect({
    socket,
    secureContext: tls.context,
    servername: isIP(host) ? undefined : host,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
  });
  const outcome = await new Promise<PeerCertificate | Error>((resolve) => {
    secure.once('secureConnect', () => resolve(secure.getPeerCertificate()));
    secure.once('error', (err) => resolve(err));
  });
  secure.destroy();
  if (outcome instanceof Error) throw fail('certificate', `the TLS handshake failed: ${outcome.message}`);
  const cert = outcome;
  const subject = cert.subject?.CN ?? 'no CN';
  const issuer = cert.issuer?.CN ?? cert.issuer?.O ?? 'unknown issuer';
  const names = cert.subjectaltname ?? 'no subjectAltName';
  const data = {
    subject,
    issuer,
    names,
    validTo: new Date(cert.valid_to).toISOString(),
    caSource: tls.source.kind === 'bundled' ? 'bundled RDS CAs' : tls.source.path,
  };
  // Node reports a name mismatch as an authorization error too (ERR_TLS_CERT_ALTNAME_INVALID): the chain first.
  if (!secure.authorized && !String(secure.authorizationError).includes('ALTNAME')) {
    const bundle = tls.source.kind === 'bundled' ? 'the bundled RDS CAs' : tls.source.path;
    throw fail(
      'certificate',
      `the certificate for ${subject}, issued by ${issuer}, does not chain to ${bundle}: ${String(secure.authorizationError)}`,
      tls.source.kind === 'bundled'
        ? `The bundled CAs lack regions launched after mid-2022, GovCloud and China. Download AWS's global bundle (curl -o global-bundle.pem ${GLOBAL_BUNDLE_URL}) and pass --ca-file global-bundle.pem.`
        : `No CA in ${tls.source.path} signed it. AWS's global bundle (${GLOBAL_BUNDLE_URL}) covers every commercial region; a man in the middle would also look like this.`,
      data,
    );
  }
  if (checkServerIdentity(host, cert)) {
    throw fail(
      'certificate',
      `the certificate does not match host name ${host}: it names ${names}`,
      'Sign for the exact RDS endpoint the certificate names (instance, cluster, reader or RDS Proxy endpoint); dial any other address with --connect-to.',
      data,
    );
  }
  const daysLeft = (Date.parse(cert.valid_to) - Date.now()) / DAY_MS;
  if (daysLeft < CERT_EXPIRY_WARN_DAYS) {
    return set(
      'certificate',
      'warn',
      `trusted and names ${host}, but expires ${data.validTo}`,
      'Rotate the instance to a current CA (the RDS console shows the certificate authority and its rotation).',
      data,
    );
  }
  set('certificate', 'pass', `issued by ${issuer} to ${subject}, names ${host}, valid until ${data.validTo}`, undefined, data);
}

function checkClock({ set, fail, now }: Context, who: CallerIdentity | undefined): void {
  if (!who?.serverDate) {
    set(
      'clock',
      'warn',
      'no trustworthy clock was reached (STS did not answer), so the clock is unchecked',
      'Tokens are dated by this clock: keep it synchronized (NTP, chrony).',
    );
    return;
  }
  const skewS = Math.round((now() - who.serverDate.getTime()) / 1000);
  const found = `this clock is ${Math.abs(skewS)} s ${skewS >= 0 ? 'ahead of' : 'behind'} STS's`;
  if (Math.abs(skewS) * 1000 > SIGNATURE_SKEW_MAX_MS)
    throw fail('clock', found, 'AWS rejects signatures more than 5 minutes off: synchronize the clock (NTP, chrony).');
  else if (Math.abs(skewS) * 1000 > CLOCK_SKEW_WARN_MS)
    set('clock', 'warn', found, 'Synchronize the clock (NTP, chrony): tokens are dated by it.');
  else set('clock', 'pass', found, undefined, { skewSeconds: skewS });
}

async function checkToken(
  { instance, options, set, fail }: Context,
  signer: SignerIdentity,
  creds: AwsCredentialIdentity,
): Promise<IamToken> {
  const scope = { host: instance.endpoint.host, port: instance.endpoint.port, region: instance.region, user: options.user };
  let token: IamToken;
  try {
    token = await signer.tokens.get(scope);
  } catch (err) {
    throw fail('token', `signing failed: ${redactSecrets((err as Error).message)}`);
  }
  set(
    'token',
    'pass',
    `signed with ${token.accessKeyId} for ${scope.host}:${scope.port}, region ${scope.region}, user "${scope.user}"; valid until ${new Date(token.expiresAt).toISOString()}`,
    undefined,
    {
      host: scope.host,
      port: scope.port,
      region: scope.region,
      user: scope.user,
      accessKeyId: creds.accessKeyId,
      expiresAt: new Date(token.expiresAt).toISOString(),
    },
  );
  return token;
}

async function checkLogin(
  { instance, options, set, fail }: Context,
  tls: UpstreamTls,
  token: IamToken,
  who: CallerIdentity | undefined,
): Promise<void> {
  const { user, database } = options;
  const target = {
    endpoint: instance.endpoint,
    connectTo: instance.connectTo,
    tls: tls.context,
    hints: rdsConnectHints(tls.source),
    connectTimeoutMs: options.connectTimeoutMs,
  };
  const signal = AbortSignal.timeout(options.connectTimeoutMs);
  const startup = doctorStartup(user, database);
  try {
    const server = await connectUpstream(target, signal);
    try {
      const login = await loginUpstream(server, startup, { token: async () => token, signal });
      if (login.failure) {
        throw fail(
          'login',
          `IAM authentication succeeded, then the server ended the session: ${login.failure}`,
          missingDatabaseFix(login.failure, database),
        );
      }
      set('login', 'pass', `logged in as "${user}" to database "${database}" over verified TLS`);
      await checkPooling(instance, { set, fail }, server, options.connectTimeoutMs);
      server.end(TERMINATE_MESSAGE);
    } finally {
      server.destroy();
    }
  } catch (err) {
    if (err instanceof Stop) throw err;
    if (err instanceof TokenRejected) {
      throw fail(
        'login',
        `the server rejected the IAM token: ${err.message}`,
        rejectionFixes({ host: instance.endpoint.host, region: instance.region, user }, who),
      );
    }
    const e = err instanceof PasswordMethodRefused ? notIamUser(user, err.method) : (err as WireError);
    throw fail('login', redactSecrets(e.message), e.hint);
  }
}
