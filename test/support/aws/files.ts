// Stands in for the user's ~/.aws: the shared config and credentials files and
// a credential_process helper. Point the SDK at them with AWS_CONFIG_FILE and
// AWS_SHARED_CREDENTIALS_FILE (isolateAwsEnv sets both, and clears every other
// AWS_* variable so the developer's own setup never leaks into a test).
//
// NOTE: the SDK caches file contents per path for the life of the process
// (unless a provider is given `ignoreCache: true`); write to a fresh directory
// when a test needs different contents.

import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { awsTimestamp, type IssuedCredentials } from './keys.js';

/** Profile name -> its settings, e.g. `{ default: { aws_access_key_id, aws_secret_access_key } }`. */
export type IniProfiles = Record<string, Record<string, string>>;

function iniText(sections: Array<[string, Record<string, string>]>): string {
  const lines: string[] = [];
  // A newline in a value would start a new line the SDK reads as its own setting or section.
  const check = (s: string) => {
    if (/[\r\n]/.test(s)) throw new Error(`INI value may not contain a newline: ${JSON.stringify(s)}`);
    return s;
  };
  for (const [header, entries] of sections) {
    lines.push(`[${check(header)}]`);
    for (const [k, v] of Object.entries(entries)) lines.push(`${check(k)} = ${check(v)}`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Writes `<dir>/credentials` (`[name]` sections) and returns its path. */
export function credentialFile(dir: string, profiles: IniProfiles): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'credentials');
  writeFileSync(path, iniText(Object.entries(profiles)), { mode: 0o600 });
  return path;
}

/** Writes `<dir>/config` and returns its path; `default` stays `[default]`, any other name becomes `[profile name]`. */
export function configFile(dir: string, profiles: IniProfiles): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'config');
  const sections = Object.entries(profiles).map(
    ([name, entries]) => [name === 'default' ? name : `profile ${name}`, entries] as [string, Record<string, string>],
  );
  writeFileSync(path, iniText(sections), { mode: 0o600 });
  return path;
}

export interface CredentialProcess {
  /** Value for a profile's `credential_process`. */
  command: string;
  /** How many times the process has been run. */
  count(): number;
}

/**
 * Writes a credential_process helper (a node script printing the Version 1
 * JSON document for `creds`) and returns the command line for the profile.
 */
export function credentialProcess(
  dir: string,
  creds: Partial<IssuedCredentials> & { accessKeyId: string; secretAccessKey: string },
): CredentialProcess {
  mkdirSync(dir, { recursive: true });
  const script = join(dir, 'credential-process.mjs');
  // Each run appends a line, so count() sees runs made by the SDK in another process too.
  const log = `${script}.log`;
  const doc: Record<string, string | number> = { Version: 1, AccessKeyId: creds.accessKeyId, SecretAccessKey: creds.secretAccessKey };
  if (creds.sessionToken !== undefined) doc.SessionToken = creds.sessionToken;
  if (creds.expiration !== undefined) doc.Expiration = awsTimestamp(creds.expiration);
  writeFileSync(
    script,
    `import { appendFileSync } from 'node:fs';\n` +
      `appendFileSync(${JSON.stringify(log)}, 'run\\n');\n` +
      `process.stdout.write(${JSON.stringify(JSON.stringify(doc))});\n`,
  );
  chmodSync(script, 0o700);
  writeFileSync(log, '');
  const q = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, '\\$1')}"`);
  return {
    command: `${q(process.execPath)} ${q(script)}`,
    count: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0),
  };
}

/**
 * Clears every AWS_* variable from process.env, points AWS_CONFIG_FILE and
 * AWS_SHARED_CREDENTIALS_FILE at (empty unless already written) files in
 * `dir`, applies `extra`, and returns a function restoring the old env.
 */
export function isolateAwsEnv(dir: string, extra: Record<string, string | undefined> = {}): () => void {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'config');
  const cred = join(dir, 'credentials');
  if (!existsSync(cfg)) writeFileSync(cfg, '');
  if (!existsSync(cred)) writeFileSync(cred, '');
  process.env.AWS_CONFIG_FILE = cfg;
  process.env.AWS_SHARED_CREDENTIALS_FILE = cred;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  };
}
