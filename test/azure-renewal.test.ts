// Azure, continued: the token renewed ahead of its expiry with no client waiting, and an Entra ID token
// of 7 KB (many group claims) carried whole by the password message. A process of its own: MSAL keeps one
// managed identity token cache per process, and both need tokens of their own making.
import t from 'tap';
import pg from 'pg';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { TLSSocket } from 'node:tls';
import { AZURE_ENDPOINT, AZURE_USER, startTestDb } from './support/testdb.js';
import { AZURE_ENV, AzureIdentityStandIn, noTokenIn as noIssuedToken, onlyCloudEnv } from './support/oauth.js';
import { startCloudProxy } from './support/cloud-proxy.js';
import { Bytes } from './support/bytes.js';
import { errorResponse } from '../src/protocol/errors.js';

const db = await startTestDb();
t.teardown(() => db.destroy());
const msi = await new AzureIdentityStandIn(db.jwtKey, AZURE_USER).start();
t.teardown(() => msi.close());
// The SDK reads process.env: the stand-in's endpoint and nothing else of Azure's (no IMDS probe, no CLI
// login in HOME, no proxy).
onlyCloudEnv(AZURE_ENV, msi.env());

const endpoint = `${AZURE_ENDPOINT}:${db.port}`;
const viaLoopback = { endpoint, connectTo: `127.0.0.1:${db.port}`, caFile: db.caFile };

/** Tokens were issued, and none of them (nor its signature) is in `text`. */
function noTokenIn(t: { ok: (v: unknown, m: string) => unknown; notOk: (v: unknown, m: string) => unknown }, text: string, what: string) {
  t.ok(msi.tokens.length > 0, 'tokens were issued');
  noIssuedToken(t, msi.tokens, text, what);
}

t.test('the token is renewed before it expires, with no client waiting', async (t) => {
  // A token with 272 s to live is inside the 4.5 minutes of refresh-ahead: renewed within 2 s, by then
  // inside MSAL's own 5 minutes, so the SDK fetches a new one.
  let refreshes = 0;
  let renewed!: () => void;
  const second = new Promise<void>((resolve) => (renewed = resolve));
  const short = await startCloudProxy(viaLoopback, { clouds: { onRefresh: () => ++refreshes === 2 && renewed() } });
  msi.lifetimeS = 272;
  const before = msi.count();
  const first = new pg.Client({ host: '127.0.0.1', port: short.port, user: AZURE_USER, database: 'orders' });
  await first.connect();
  await first.end();
  t.equal(msi.count(), before + 1, 'fetched for the first login');
  await second;
  t.equal(msi.count(), before + 2, 'renewed in the background');
  const held = short.clouds.tokens('azure').peek()!;
  t.ok(held.value === msi.tokens.at(-1), 'the renewed token is the one held');
  const again = new pg.Client({ host: '127.0.0.1', port: short.port, user: AZURE_USER, database: 'orders' });
  await again.connect();
  await again.end();
  t.ok((await db.checkerLog()).at(-1)!.ok, 'the next login uses it');
  noTokenIn(t, short.rawLogs(), 'the logs');
  await short.close();
});

t.test('a 7 KB token goes through the password message whole', async (t) => {
  // pam_exec passes 511 bytes: a server in-process takes the token's place, with the database's certificate.
  const cert = await readFile(join(db.dir, 'server.crt'));
  const key = await readFile(join(db.dir, 'server.key'));
  let received: Buffer | undefined;
  const server = createServer((raw: Socket) => {
    raw.on('error', () => undefined);
    raw.once('data', () => {
      raw.write('S');
      const s = new TLSSocket(raw, { isServer: true, cert, key });
      s.on('error', () => undefined);
      let buffered = Buffer.alloc(0);
      let stage: 'startup' | 'password' = 'startup';
      s.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (stage === 'startup') {
          if (buffered.length < 4 || buffered.length < buffered.readUInt32BE(0)) return;
          buffered = buffered.subarray(buffered.readUInt32BE(0));
          stage = 'password';
          s.write(new Bytes().int32(3).join('R')); // AuthenticationCleartextPassword
          return;
        }
        if (buffered.length < 5 || buffered.length < 1 + buffered.readUInt32BE(1)) return;
        received = buffered.subarray(5, 1 + buffered.readUInt32BE(1) - 1); // less the NUL
        s.write(Buffer.concat([new Bytes().int32(0).join('R'), new Bytes().raw([0x49]).join('Z')]));
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  const port = (server.address() as { port: number }).port;
  // MSAL's cached token (272 s) is within its 5 minutes: the next proxy's fetch makes a new one.
  msi.lifetimeS = 3600;
  msi.padTo = 7_200;
  const big = await startCloudProxy({ endpoint, connectTo: `127.0.0.1:${port}`, caFile: db.caFile });
  t.teardown(() => big.close());
  const client = new pg.Client({ host: '127.0.0.1', port: big.port, user: AZURE_USER, database: 'orders' });
  await client.connect();
  await client.end();
  const issued = msi.tokens.at(-1)!;
  t.ok(issued.length > 7_000, `the token is ${issued.length} bytes`);
  t.equal(received?.toString('utf8'), issued, 'the server received it byte for byte');
  noTokenIn(t, big.rawLogs(), 'the logs');
});

t.test("a refusal answered as a wrong password (28P01) is a refused token too, told in Azure's words", async (t) => {
  const cert = await readFile(join(db.dir, 'server.crt'));
  const key = await readFile(join(db.dir, 'server.key'));
  let passwords = 0;
  const server = createServer((raw: Socket) => {
    raw.on('error', () => undefined);
    raw.once('data', () => {
      raw.write('S');
      const s = new TLSSocket(raw, { isServer: true, cert, key });
      s.on('error', () => undefined);
      let stage: 'startup' | 'password' = 'startup';
      s.on('data', () => {
        if (stage === 'startup') {
          stage = 'password';
          s.write(new Bytes().int32(3).join('R'));
          return;
        }
        passwords++;
        s.end(errorResponse({ severity: 'FATAL', code: '28P01', message: `password authentication failed for user "${AZURE_USER}"` }));
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise((r) => server.close(r)));
  const port = (server.address() as { port: number }).port;
  const proxy = await startCloudProxy({ endpoint, connectTo: `127.0.0.1:${port}`, caFile: db.caFile });
  t.teardown(() => proxy.close());
  const client = new pg.Client({ host: '127.0.0.1', port: proxy.port, user: AZURE_USER, database: 'orders' });
  const err = (await client.connect().catch((e: unknown) => e)) as pg.DatabaseError;
  t.match(err, {
    code: '28000',
    message: `password authentication failed for user "${AZURE_USER}"`,
    detail: /Entra ID access token from DefaultAzureCredential for alice@example\.com/,
    hint: /pgaadauth_create_principal/,
  });
  t.equal(passwords, 2, 'tried once more with a fresh token, as a PAM refusal is');
});
