// AWS IAM Identity Center (SSO) profiles: the SDK renews role credentials from the SSO session's token,
// cached by `aws sso login` in ~/.aws/sso/cache. When that token ends (and it cannot be refreshed), every
// renewal fails until someone runs `aws sso login` again: the proxy reads the token's own expiry and
// warns ten minutes ahead, with the command to run.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { timerDelay } from '../renewing.js';
import { iniSections } from './profiles.js';

/** Warn this long before an SSO session ends. */
export const SSO_WARN_AHEAD_MS = 10 * 60_000;

export interface SsoSession {
  /** When the cached SSO token ends. */
  readonly end: Date;
  /** Whether the SDK can refresh the token itself (then the end is the access token's, renewed quietly). */
  readonly refreshable: boolean;
  /** What the user runs to log in again. */
  readonly command: string;
}

/**
 * The SSO session a profile's credentials come from, as `aws sso login` cached it; undefined when the
 * profile is not an SSO profile or nothing is cached (then the SDK's own error says what to do).
 */
export function ssoSession(profile: string | undefined, env: NodeJS.ProcessEnv = process.env): SsoSession | undefined {
  const name = profile ?? env.AWS_PROFILE ?? 'default';
  const home = env.HOME ?? homedir();
  let text: string;
  try {
    text = readFileSync(env.AWS_CONFIG_FILE ?? join(home, '.aws', 'config'), 'utf8');
  } catch {
    return undefined;
  }
  const sections = iniSections(text);
  const settings = sections.get(name === 'default' ? 'default' : `profile ${name}`) ?? sections.get(`profile ${name}`);
  if (!settings) return undefined;
  // A named sso-session (the CLI's current form) is cached under its name; the legacy form under its start URL.
  const id = settings.sso_session ?? settings.sso_start_url;
  if (!id) return undefined;
  try {
    const cached = JSON.parse(
      readFileSync(join(home, '.aws', 'sso', 'cache', `${createHash('sha1').update(id).digest('hex')}.json`), 'utf8'),
    ) as { expiresAt?: string; refreshToken?: string };
    const end = new Date(cached.expiresAt ?? '');
    if (Number.isNaN(end.getTime())) return undefined;
    return {
      end,
      refreshable: typeof cached.refreshToken === 'string' && cached.refreshToken !== '',
      command: `aws sso login${name === 'default' ? '' : ` --profile ${name}`}`,
    };
  } catch {
    return undefined;
  }
}

/**
 * An SSO profile whose session token cannot be refreshed: warn ten minutes before it ends, with the
 * command to run (at once when it is that close already). The timer never holds the process.
 */
export function watchSsoSession(profile: string | undefined, log: Logger, env: NodeJS.ProcessEnv = process.env, now = Date.now()): void {
  const session = ssoSession(profile, env);
  if (!session || session.refreshable) return;
  const end = session.end.getTime();
  const warn = () => {
    const left = Math.round((end - Date.now()) / 60_000);
    log.warn(
      { ssoSessionEnds: session.end.toISOString() },
      left > 0
        ? `the SSO session ends in ${left} min (${session.end.toISOString()}): run \`${session.command}\` before then, or renewals fail`
        : `the SSO session has ended (${session.end.toISOString()}): run \`${session.command}\``,
    );
  };
  const at = end - SSO_WARN_AHEAD_MS - now;
  // One warning timer per profile: announced again (a reload), the last reading of the cache stands.
  clearTimeout(ssoTimers.get(profile ?? ''));
  if (at <= 0) warn();
  else ssoTimers.set(profile ?? '', setTimeout(warn, timerDelay(at)).unref());
}
const ssoTimers = new Map<string, NodeJS.Timeout>();
