// The pieces behind Azure's and Cloud SQL's seams, in process: the token holder (single flight, backoff,
// renewal failures, refused tokens), each cloud's words, and the Cloud SQL connector's reading of connect.get.
import t from 'tap';
import { type PeerCertificate, rootCertificates } from 'node:tls';
import { azureConnectHints, entraClaims, entraSigner, entraWording } from '../src/azure/entra.js';
import { resolveInstance } from '../src/config.js';
import {
  adminApi,
  AdminApiError,
  casDnsName,
  cloudSqlConnectHints,
  cloudSqlIdentity,
  CloudSqlConnector,
  pickAddress,
  addressesOf,
} from '../src/gcp/connector.js';
import { cloudSqlChecklist, cloudSqlWording, googleFetch } from '../src/gcp/iam.js';
import { redactSecrets } from '../src/log.js';
import { BearerAuthenticator } from '../src/oauth/authenticator.js';
import { CloudCredentials } from '../src/clouds/credentials.js';
import { BearerTokens, jwtClaims, type BearerFetch } from '../src/oauth/tokens.js';
import { Failure, type WireError } from '../src/protocol/errors.js';
import { memoryLog } from './support/memory-log.js';
import { testJwt } from './support/oauth.js';

const KEY = Buffer.from('test key');
const HOUR = 3600_000;

/** A fetch that hands out numbered tokens valid for `lifeMs`, or fails when told to. */
function counter(now: () => number, lifeMs = HOUR) {
  const state = { calls: 0, fail: undefined as Error | undefined, value: undefined as string | undefined };
  const fetch: BearerFetch = async () => {
    state.calls++;
    if (state.fail) throw state.fail;
    return { value: state.value ?? `token-${state.calls}`, expiresAt: now() + lifeMs, signer: { identity: 'test' } };
  };
  return { state, fetch };
}

t.test('one fetch for a burst; the token held until it is due', async (t) => {
  let clock = 1_000_000;
  const now = () => clock;
  const { state, fetch } = counter(now);
  let renewed!: () => void;
  const second = new Promise<void>((resolve) => (renewed = resolve));
  let refreshes = 0;
  const tokens = new BearerTokens(fetch, { label: 'test', now, onRefresh: () => ++refreshes === 2 && renewed() });
  t.teardown(() => tokens.close());
  const burst = await Promise.all(Array.from({ length: 20 }, () => tokens.get()));
  t.equal(state.calls, 1, 'single flight');
  t.ok(
    burst.every((tok) => tok === burst[0]),
    'everyone has the same token',
  );
  clock += HOUR - 269_000; // within the 4.5 minutes of refresh-ahead
  t.equal((await tokens.get()).value, 'token-1', 'the held token answers at once');
  await second;
  t.equal(state.calls, 2, 'renewed behind the caller');
  t.equal(tokens.peek()?.value, 'token-2');
  clock += HOUR; // long past its end
  t.equal(tokens.peek(), undefined, 'an expired token is never handed out');
});

t.test('a failure: everyone within the backoff hears it; a still-valid token is kept', async (t) => {
  let clock = 0;
  const now = () => clock;
  const { log, lines } = memoryLog();
  const { state, fetch } = counter(now, 10 * 60_000);
  const tokens = new BearerTokens(fetch, { label: 'test source', now, log, retryMs: 1_000 });
  t.teardown(() => tokens.close());
  state.fail = new Error('no identity here');
  await t.rejects(tokens.get(), /no identity here/);
  await t.rejects(tokens.get(), /no identity here/, 'within the backoff: the same failure');
  t.equal(state.calls, 1, 'without a second fetch');
  t.equal(await tokens.warm(), false);
  clock += 1_000;
  state.fail = undefined;
  t.equal((await tokens.get()).value, 'token-2', 'after the backoff, fetched again');
  t.match(lines(), [{ msg: 'test source: no access token', reason: 'no identity here' }, { msg: 'access tokens available again' }]);
  clock += 6 * 60_000; // due for renewal, 4 minutes left
  state.fail = new Error('endpoint down');
  t.equal((await tokens.get()).value, 'token-2', 'the held token answers');
  t.equal((await tokens.get()).value, 'token-2', 'and the failed renewal keeps it');
  t.match(lines().at(-1), { msg: 'test source: token renewal failed; still using the current token', keepUsing: true });
  t.equal(await tokens.warm(), true);
});

t.test('tokens that cannot serve a login are failures', async (t) => {
  const now = () => 0;
  const empty = new BearerTokens(async () => ({ value: '', expiresAt: HOUR, signer: {} }), { label: 'src', now });
  await t.rejects(empty.get(), /src returned an empty token/);
  const soon = new BearerTokens(async () => ({ value: 'x', expiresAt: 30_000, signer: {} }), { label: 'src', now });
  await t.rejects(soon.get(), /src returned a token that expires at .*too soon to log in with/);
  empty.close();
  soon.close();
});

t.test('a refused token is fetched anew, at most once a minute', async (t) => {
  let clock = 0;
  const now = () => clock;
  const { state, fetch } = counter(now);
  const tokens = new BearerTokens(fetch, { label: 'test', now });
  t.teardown(() => tokens.close());
  const first = await tokens.get();
  const second = await tokens.get(first);
  t.equal(second.value, 'token-2', 'refused: a new fetch');
  t.equal((await tokens.get(second)).value, 'token-2', 'refused again within the minute: no fetch');
  clock += 60_000;
  t.equal((await tokens.get(second)).value, 'token-3');
  t.equal(state.calls, 3);
});

t.test('JWT claims are read, never trusted, and only from a JWT', async (t) => {
  t.equal(jwtClaims('ya29.opaque'), undefined);
  t.equal(jwtClaims('a.b.c'), undefined, 'not JSON');
  t.equal(jwtClaims(`x.${Buffer.from('[1]').toString('base64url')}.y`), undefined, 'not an object');
  t.same(entraClaims(testJwt(KEY, { oid: 'o-1', tid: 't' })), { principal: 'object ID o-1', tenant: 't', audience: undefined });
  t.same(entraClaims(testJwt(KEY, { appid: 'a-1' })), { principal: 'application a-1', tenant: undefined, audience: undefined });
  t.equal(entraClaims('opaque').principal, 'an unnamed principal');
});

t.test("Azure's words", async (t) => {
  const token = {
    value: testJwt(KEY, { aud: 'https://management.azure.com/', upn: 'Alice@Example.com' }),
    expiresAt: HOUR,
    signedAt: 0,
    signer: {},
  };
  const { detail, hint } = entraWording.rejection('alice@example.com', token, 'DefaultAzureCredential');
  t.match(detail, /The token is for https:\/\/management\.azure\.com\/, not Azure Database for PostgreSQL/);
  t.match(detail, /differs from the token's principal in case only: log in as "Alice@Example\.com"/);
  t.match(hint, /pgaadauth_create_principal\('alice@example\.com', false, false\)/);
  const right = { ...token, value: testJwt(KEY, { aud: 'https://ossrdbms-aad.database.windows.net/', upn: 'alice@example.com' }) };
  t.notMatch(
    entraWording.rejection('alice@example.com', right, 'x').detail,
    /not Azure Database|case only/,
    'v2 audiences end with a slash',
  );
  t.match(entraWording.notTokenUser("o'brien", 'SCRAM-SHA-256'), {
    code: '28000',
    reason: Failure.NotIamUser,
    message: /user "o'brien" is not set up for Microsoft Entra authentication: the server asked for SCRAM-SHA-256/,
    hint: /pgaadauth_create_principal\('o''brien', false, false\)/,
  });
  t.match(azureConnectHints('/etc/ca.pem').untrusted, /No CA in \/etc\/ca\.pem/);
  t.match(azureConnectHints(undefined).untrusted, /which Node trusts/);
});

t.test("Cloud SQL's words", async (t) => {
  const words = cloudSqlWording(undefined);
  t.match(words.notTokenUser('bob@example.com', 'MD5 password'), {
    reason: Failure.NotIamUser,
    message: /not set up for IAM database authentication: the server asked for MD5 password/,
    hint: /gcloud sql users create bob@example\.com --instance=INSTANCE --type=cloud_iam_user/,
  });
  t.equal(words.refuseUser?.('bob@example.com'), undefined, 'a person keeps the email');
  t.match(cloudSqlChecklist('sa@p.iam', undefined), /--type=cloud_iam_service_account.*project PROJECT/);
  const instance = resolveInstance({ endpoint: 'my-project:us-central1:db', listen: null }).instance.cloudSql!.instance;
  t.match(cloudSqlConnectHints(instance, '/ca.pem').untrusted, /No CA in \/ca\.pem signed this certificate/);
  t.match(cloudSqlConnectHints(instance, undefined).untrusted, /from the SQL Admin API did not sign/);
});

t.test('the authenticator: no token, a slow source', async (t) => {
  const tokens = new BearerTokens(
    async () => {
      throw new Error('request to http://x failed, Authorization: Bearer ya29.secret-value');
    },
    { label: 'Application Default Credentials' },
  );
  t.teardown(() => tokens.close());
  const auth = new BearerAuthenticator(tokens, cloudSqlWording(undefined));
  t.equal(auth.label, 'Application Default Credentials');
  const err = (await auth.token('u').catch((e: unknown) => e)) as WireError;
  t.match(err, { code: '08001', reason: Failure.NoCredentials, hint: /gcloud auth application-default print-access-token/ });
  t.notMatch(err.message, /secret-value/, 'the token in the SDK message is blanked');
  const chained = new BearerAuthenticator(
    new BearerTokens(
      async () => {
        throw new Error(
          'ChainedTokenCredential authentication failed.\nCredentialUnavailableError: EnvironmentCredential is unavailable.\nCredentialUnavailableError: Azure CLI could not be found.',
        );
      },
      { label: 'DefaultAzureCredential' },
    ),
    entraWording,
  );
  t.match(await chained.token('u').catch((e: unknown) => e), {
    message: 'pg-iam-proxy could not get a Microsoft Entra ID access token: ChainedTokenCredential authentication failed.',
    detail:
      'Credentials from DefaultAzureCredential, tried in order: CredentialUnavailableError: EnvironmentCredential is unavailable. CredentialUnavailableError: Azure CLI could not be found.',
  });
  const silent = new BearerAuthenticator(
    new BearerTokens(
      async () => {
        throw new Error('');
      },
      { label: 'x' },
    ),
    entraWording,
  );
  t.match(await silent.token('u').catch((e: unknown) => e), { message: /: no reason given$/ });
  t.match(auth.tokenTimeout(10_000), {
    reason: Failure.CredentialsTimeout,
    message: /no access token from Application Default Credentials within 10 s/,
  });
  t.match(auth.refuseUser('sa@p.iam.gserviceaccount.com'), { reason: Failure.BadUserName });
});

t.test('redactSecrets blanks OAuth tokens', async (t) => {
  const jwt = testJwt(KEY, { upn: 'a' });
  t.equal(redactSecrets(`got ${jwt} back`), 'got [REDACTED] back');
  t.equal(redactSecrets('token ya29.a0AfH6SMB-xyz.123 expired'), 'token [REDACTED] expired');
  t.equal(redactSecrets('Authorization: Bearer abc.def'), 'Authorization: Bearer [REDACTED]');
  t.equal(
    redactSecrets('grant_type=x&client_secret=s3cr3t&refresh_token=r3fr3sh&client_assertion=a55 {"access_token":"opaque-token"}'),
    'grant_type=x&client_secret=[REDACTED]&refresh_token=[REDACTED]&client_assertion=[REDACTED] {"access_token":"[REDACTED]"}',
  );
  t.equal(redactSecrets('headers: { "x-identity-header": "hdr-secret" }'), 'headers: { "x-identity-header": "[REDACTED]" }');
  t.equal(
    redactSecrets('the SQL Admin API (https://me:pa55w0rd@sqladmin.example.com) failed; postgresql://app@db/orders'),
    'the SQL Admin API (https://me:[REDACTED]@sqladmin.example.com) failed; postgresql://app@db/orders',
    "a URL's password, not its user alone",
  );
});

t.test('an SDK error logged whole: its request, response and aggregated errors leave no secret', async (t) => {
  const { log, raw } = memoryLog();
  const inner = Object.assign(new Error('ManagedIdentityCredential: Bearer inner-secret refused'), { response: { body: 'x' } });
  const err = Object.assign(new AggregateError([inner, new Error('AzureCliCredential: not logged in')], 'ChainedTokenCredential failed'), {
    config: { headers: { Authorization: 'Bearer ya29.config-secret' } },
    response: { data: { access_token: 'response-secret' } },
  });
  log.error({ err }, 'no token');
  const text = raw();
  for (const secret of ['inner-secret', 'config-secret', 'response-secret']) t.notOk(text.includes(secret), `no ${secret} in the log`);
  t.match(text, /AzureCliCredential: not logged in/, 'the aggregated errors are kept, scrubbed');
});

t.test('connect.get read as the connectors read it', async (t) => {
  const both = {
    ipAddresses: [
      { type: 'PRIVATE', ipAddress: '10.0.0.2' },
      { type: 'OUTGOING', ipAddress: '1.1.1.1' },
      { type: 'PRIMARY', ipAddress: '34.1.2.3' },
    ],
  };
  t.equal(pickAddress(both), '34.1.2.3', 'public by default');
  t.equal(pickAddress(both, ['private']), '10.0.0.2');
  t.equal(pickAddress(both, ['psc', 'private', 'public']), '10.0.0.2', 'the first kind the instance has');
  const privateOnly = {
    ipAddresses: [
      { type: 'OUTGOING', ipAddress: '1.1.1.1' },
      { type: 'PRIVATE', ipAddress: '10.0.0.2' },
    ],
  };
  t.equal(pickAddress(privateOnly), undefined, 'public by default, and nothing else (an outgoing address is not one to dial)');
  t.equal(pickAddress(privateOnly, ['public', 'private']), '10.0.0.2', 'public,private: the auto-ip order');
  const psc = {
    pscEnabled: true,
    dnsName: 'legacy.p.sql.goog.',
    dnsNames: [
      { name: 'cas.p.sql.goog.', connectionType: 'PUBLIC', dnsScope: 'INSTANCE' },
      { name: 'abc.psc.p.sql.goog.', connectionType: 'PRIVATE_SERVICE_CONNECT', dnsScope: 'INSTANCE' },
    ],
  };
  t.equal(pickAddress(psc, ['psc']), 'abc.psc.p.sql.goog', 'the PSC DNS name of the instance');
  t.equal(pickAddress({ ...psc, dnsNames: [] }, ['psc']), 'legacy.p.sql.goog', 'else the legacy dnsName');
  t.equal(pickAddress({ ...psc, pscEnabled: false }, ['psc']), undefined, 'a CAS instance sets dnsName without PSC');
  t.same(addressesOf({ ...both, ...psc }), { public: '34.1.2.3', private: '10.0.0.2', psc: 'abc.psc.p.sql.goog' });
  t.equal(pickAddress({}), undefined);
  t.equal(casDnsName({ serverCaMode: 'GOOGLE_MANAGED_INTERNAL_CA', dnsName: 'x.sql.goog' }), undefined, 'a per-instance CA: the CN');
  t.equal(casDnsName({ dnsName: 'x.sql.goog' }), undefined, 'no CA mode: the CN');
  t.equal(casDnsName({ serverCaMode: 'CUSTOMER_MANAGED_CAS_CA', dnsNames: [{}, { name: 'y.sql.goog.' }] }), 'y.sql.goog');
  const instance = { project: 'p', region: 'r', instance: 'i', connectionName: 'p:r:i' };
  const byCn = cloudSqlIdentity(instance, undefined);
  t.equal(byCn.servername, null, 'no SNI: a connection name is no host name');
  t.equal(byCn.checkIdentity!({ subject: { CN: 'p:i' } } as unknown as PeerCertificate), undefined);
  t.match(byCn.checkIdentity!({ subject: {} } as unknown as PeerCertificate), {
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    message: /for undefined, not the instance p:i/,
  });
});

t.test('the SQL Admin API client: each refusal with its advice', async (t) => {
  const instance = { project: 'p', region: 'r', instance: 'i', connectionName: 'p:r:i' };
  // Credentials that give a token, as GoogleAuth's client does.
  const client = { getClient: async () => ({ getAccessToken: async () => ({ token: 'ya29.test' }) }) };
  const failing = (status: number | undefined) =>
    adminApi(
      async () => ({ ...client, request: async () => Promise.reject(Object.assign(new Error(`status ${status}`), { status })) }) as never,
    );
  const rows: Array<[number | undefined, RegExp]> = [
    [403, /roles\/cloudsql\.client.*gcloud services enable sqladmin\.googleapis\.com/],
    [404, /No instance i in project p/],
    [401, /gcloud auth application-default login/],
    [undefined, /give both --connect-to .* and --ca-file/],
  ];
  for (const [status, hint] of rows) {
    const err = (await failing(status)(instance, 'https://api', 1_000).catch((e: unknown) => e)) as AdminApiError;
    t.ok(err instanceof AdminApiError, `${status}`);
    t.match(err, { status, hint, message: /the SQL Admin API \(https:\/\/api\) did not describe p:r:i/ });
  }
  const ok = adminApi(async () => ({ ...client, request: async (opts: { url: string }) => ({ data: { region: opts.url } }) }) as never);
  t.same(await ok(instance, 'https://api', 1_000), { region: 'https://api/sql/v1beta4/projects/p/instances/i/connectSettings' });
  // No token: the credentials are the cause, named with their fix; the API was never asked.
  let asked = 0;
  const none = adminApi(
    async () =>
      ({
        getClient: async () => ({ getAccessToken: async () => Promise.reject(new Error('Could not load the default credentials.')) }),
        request: async () => (asked++, { data: {} }),
      }) as never,
  );
  const err = (await none(instance, 'https://api', 1_000).catch((e: unknown) => e)) as AdminApiError;
  t.match(err, {
    noCredentials: true,
    message: /^no Google credentials to ask the SQL Admin API about p:r:i: Could not load the default credentials\.$/,
    hint: /^Set up Application Default Credentials/,
  });
  t.equal(asked, 0);
});

t.test('the connector: what the API must give, and how long it is trusted', async (t) => {
  const config = resolveInstance({ endpoint: 'my-project:us-central1:db:1', listen: null }).instance;
  let calls = 0;
  let answer: object = {};
  let clock = 0;
  const connector = new CloudSqlConnector(
    config,
    1_000,
    async () => (calls++, answer as never),
    () => clock,
  );
  t.equal(connector.usesApi, true);
  t.equal(connector.connectTo, config.endpoint, 'no address before the API answers');
  await t.rejects(connector.connect(), {
    reason: Failure.UpstreamUnreachable,
    message: 'the SQL Admin API gives no public address for my-project:us-central1:db (it has none)',
    hint: /Give the instance an IP address/,
  });
  answer = { ipAddresses: [{ type: 'PRIVATE', ipAddress: '10.0.0.2' }] };
  await t.rejects(connector.connect(), {
    reason: Failure.UpstreamUnreachable,
    message: 'the SQL Admin API gives no public address for my-project:us-central1:db (it has private)',
    hint: /Pick one it has with --ip-type \(private;/,
  });
  answer = { ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }] };
  await t.rejects(connector.connect(), { reason: Failure.TlsUntrusted, message: /gives no server CA/ });
  answer = { ipAddresses: [{ type: 'PRIMARY', ipAddress: '127.0.0.1' }], serverCaCert: { cert: NOT_A_CA } };
  // Port 1 on loopback: refused, after the API answered.
  await t.rejects(connector.connect(), {
    reason: Failure.UpstreamUnreachable,
    message: /could not connect to the server at 127\.0\.0\.1:1/,
  });
  t.same(connector.connectTo, { host: '127.0.0.1', port: 1 });
  await t.rejects(connector.connect());
  t.equal(calls, 4, 'the answer is reused');
  clock += 3600_000;
  await t.rejects(connector.connect());
  t.equal(calls, 5, 'and asked again after an hour');
  const refusing = new CloudSqlConnector(config, 1_000, async () => {
    throw new AdminApiError('denied', 403, 'grant roles/cloudsql.client');
  });
  await t.rejects(refusing.connect(), { reason: Failure.NoCredentials, message: 'denied', hint: 'grant roles/cloudsql.client' });
  const broken = new CloudSqlConnector(config, 1_000, async () => {
    throw new Error('socket hang up');
  });
  await t.rejects(broken.connect(), { reason: Failure.UpstreamUnreachable, message: 'socket hang up' });
  t.equal(refusing.explain(new Error('other')), undefined, 'other failures are left as they are');
});

t.test('the clouds: one holder per cloud, made on first use', async (t) => {
  const made: string[] = [];
  const clouds = new CloudCredentials({
    fetchFor: (cloud) => (
      made.push(cloud), async () => ({ value: `${cloud}-token`, expiresAt: Date.now() + HOUR, signer: { identity: cloud } })
    ),
    connectSettings: async () => ({}),
  });
  t.teardown(() => clouds.close());
  t.same(clouds.all(), []);
  t.equal(clouds.tokens('azure'), clouds.tokens('azure'));
  t.same(made, ['azure']);
  t.equal(await clouds.account('gcp'), undefined, 'no account from a swapped SDK');
  const { log, lines } = memoryLog();
  t.equal(await clouds.announce('gcp', log), true);
  t.match(lines(), [{ msg: 'access tokens from Application Default Credentials', signer: { identity: 'gcp' } }]);
  t.same(
    clouds.all().map(([cloud]) => cloud),
    ['azure', 'gcp'],
  );
  t.equal(clouds.connectSettings(), clouds.connectSettings());
  const failing = new CloudCredentials({
    fetchFor: () => async () => {
      throw new Error('none');
    },
  });
  t.equal(await failing.announce('azure', log), false);
  failing.close();
});

/** A CA certificate that parses (whose does not matter: nothing that answers is dialled). */
const NOT_A_CA = rootCertificates[0]!;

t.test('log fields name the principal and tenant, never the token', async (t) => {
  t.same(entraSigner(testJwt(KEY, { upn: 'a@b.c', tid: 't-1' })), {
    identity: 'DefaultAzureCredential',
    principal: 'a@b.c',
    tenant: 't-1',
  });
  t.same(entraSigner(testJwt(KEY, { upn: 'a@b.c' })), { identity: 'DefaultAzureCredential', principal: 'a@b.c' });
});

t.test("Google's library: no token is a failure; a token without an end lives an hour", async (t) => {
  const client = (token: string | null, credentials: object) => async () =>
    ({ getClient: async () => ({ getAccessToken: async () => ({ token }), credentials }) }) as never;
  await t.rejects(googleFetch('s', client(null, {}))(), /returned no access token/);
  const before = Date.now();
  const got = await googleFetch('s', client('ya29.x', {}))();
  t.ok(got.expiresAt >= before + 3600_000 && got.expiresAt <= Date.now() + 3600_000, 'an hour from now');
  t.equal((await googleFetch('s', client('ya29.x', { expiry_date: 42 }))()).expiresAt, 42, "the library's own end when it has one");
});

t.test('no Google account is named when Application Default Credentials have none', async (t) => {
  const saved = { ...process.env };
  t.teardown(() => {
    for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
    Object.assign(process.env, saved);
  });
  for (const name of Object.keys(process.env)) if (/^(GOOGLE_|GCE_|CLOUDSDK_)/.test(name)) delete process.env[name];
  // Nothing to find: no key file, no gcloud login, no metadata server (not even pinged).
  Object.assign(process.env, { CLOUDSDK_CONFIG: '/nonexistent/gcloud', METADATA_SERVER_DETECTION: 'none' });
  const clouds = new CloudCredentials();
  t.equal(await clouds.account('gcp'), undefined);
  clouds.close();
});
