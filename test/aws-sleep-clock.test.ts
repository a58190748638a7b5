// Sleep, clock and SSO expiry: a wake-up noticed and credentials renewed at once; the clock compared
// with AWS's; an SSO session that will end warned of ten minutes ahead, with the command to run.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import { Identities, type TracedProvider, warnOfClockSkew, watchSsoSession } from '../src/aws/identity.js';
import { ssoSession } from '../src/aws/sso.js';
import { WakeWatch } from '../src/aws/wake.js';
import { memoryLog } from './support/memory-log.js';

t.test('a tick that comes hours late by the wall clock is a wake-up', async (t) => {
  let clock = 1_800_000_000_000;
  const alive = setInterval(() => undefined, 60_000); // the watch's timer is unref'd: this test waits for it
  t.teardown(() => clearInterval(alive));
  const slept = await new Promise<number>((resolve) => {
    const watch = new WakeWatch(
      (ms) => {
        watch.close();
        resolve(ms);
      },
      { tickMs: 5, slackMs: 1_000, now: () => (clock += 2 * 3_600_000) },
    );
  });
  t.ok(slept > 3_600_000, `slept about ${Math.round(slept / 60_000)} min`);
});

t.test('on waking, every identity renews its credentials at once, and the log says why', async (t) => {
  const { log, lines } = memoryLog('info');
  let fetches = 0;
  let clock = Date.now();
  const providerFor = (): TracedProvider => ({
    provider: async () => {
      fetches++;
      return { accessKeyId: 'AKIAWAKE', secretAccessKey: 's', expiration: new Date(clock + 3_600_000) } as AwsCredentialIdentity;
    },
    source: () => undefined,
  });
  let jump = 0;
  let refreshed: () => void = () => undefined;
  // One wall clock for the watch and the holder: three hours pass by it while timers stand still.
  const identities = new Identities({
    log,
    providerFor,
    onRefresh: () => refreshed(),
    holder: { now: () => clock },
    wake: { tickMs: 5, slackMs: 1_000, now: () => (clock += jump) },
  });
  t.teardown(() => identities.close());
  const alive = setInterval(() => undefined, 60_000); // the watch's timer is unref'd: this test waits for it
  t.teardown(() => clearInterval(alive));
  const identity = identities.for({}, 'us-east-1');
  await identity.holder.get();
  t.equal(fetches, 1);
  const renewed = new Promise<void>((resolve) => (refreshed = resolve));
  jump = 3 * 3_600_000; // the next tick comes three hours later by the wall clock
  await renewed;
  t.equal(fetches, 2, 'fetched again at once, no client needed');
  jump = 0;
  identity.holder.renew();
  t.equal(fetches, 2, 'credentials still good by the wall clock are not fetched again (an MFA role would ask for a code)');
  t.match(
    lines().find((l) => /^woke up/.test(String(l.msg))),
    { msg: /^woke up: this machine slept about \d+ min .*renewing AWS credentials now/, sleptSeconds: Number },
  );
});

t.test("the clock against AWS's: more than a minute off is a warning", async (t) => {
  const { log, lines } = memoryLog('info');
  const now = Date.now();
  warnOfClockSkew(new Date(now - 30_000), log, now);
  warnOfClockSkew(undefined, log, now);
  t.equal(lines().length, 0, 'within a minute, or no Date: nothing');
  warnOfClockSkew(new Date(now - 95_000), log, now);
  warnOfClockSkew(new Date(now + 300_000), log, now);
  t.match(lines(), [
    { level: 40, skewSeconds: 95, msg: /clock is 95 s ahead of AWS's: RDS may refuse tokens/ },
    { level: 40, skewSeconds: -300, msg: /clock is 300 s behind AWS's/ },
  ]);
});

t.test('an SSO session read from the cache of `aws sso login`, warned of before it ends', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'sso-'));
  t.teardown(() => rmSync(home, { recursive: true, force: true }));
  mkdirSync(join(home, '.aws', 'sso', 'cache'), { recursive: true });
  writeFileSync(
    join(home, '.aws', 'config'),
    [
      '[profile dev]',
      'sso_session = corp',
      'sso_account_id = 123456789012',
      '[profile legacy]',
      'sso_start_url = https://corp.awsapps.com/start#/  ; the old form, with a # in its URL',
      '[profile keys]',
      'region = us-east-1',
      '[sso-session corp]',
      'sso_start_url = https://corp.awsapps.com/start',
      '',
    ].join('\n'),
  );
  const cache = (id: string, body: Record<string, string>) =>
    writeFileSync(join(home, '.aws', 'sso', 'cache', `${createHash('sha1').update(id).digest('hex')}.json`), JSON.stringify(body));
  const env = { HOME: home };
  const soon = new Date(Date.now() + 5 * 60_000).toISOString();
  cache('corp', { expiresAt: soon, accessToken: 'x' });
  cache('https://corp.awsapps.com/start#/', { expiresAt: soon, refreshToken: 'r', accessToken: 'y' });
  t.match(ssoSession('dev', env), { end: new Date(soon), refreshable: false, command: 'aws sso login --profile dev' });
  t.match(ssoSession('legacy', env), { refreshable: true }, 'the legacy form, by its start URL; a refresh token renews it quietly');
  t.equal(ssoSession('keys', env), undefined, 'not an SSO profile');
  t.equal(ssoSession('nope', env), undefined, 'no such profile');
  t.equal(ssoSession('dev', { HOME: join(home, 'nowhere') }), undefined, 'no config file');
  cache('corp', { expiresAt: 'whenever' });
  t.equal(ssoSession('dev', env), undefined, 'an expiry that is no date');
  writeFileSync(join(home, '.aws', 'sso', 'cache', `${createHash('sha1').update('corp').digest('hex')}.json`), '{not json');
  t.equal(ssoSession('dev', env), undefined, 'a cache file that is no JSON');
  cache('corp', { expiresAt: soon, accessToken: 'x' });

  const { log, lines } = memoryLog('info');
  watchSsoSession('dev', log, env);
  t.match(lines(), [{ level: 40, msg: /the SSO session ends in [45] min .*run `aws sso login --profile dev` before then/ }]);
  watchSsoSession('legacy', log, env);
  t.equal(lines().length, 1, 'refreshable: no warning');
  cache('corp', { expiresAt: new Date(Date.now() + 3_600_000).toISOString() });
  watchSsoSession('dev', log, env);
  t.equal(lines().length, 1, 'an hour left: not yet (a timer will say so ten minutes before)');
  cache('corp', { expiresAt: new Date(Date.now() - 60_000).toISOString() });
  watchSsoSession('dev', log, env);
  t.match(lines()[1], { msg: /the SSO session has ended .*run `aws sso login --profile dev`/ });
});
