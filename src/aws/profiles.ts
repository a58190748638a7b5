// The shared config and credentials files, read the way the SDK reads them (@smithy's shared-ini-file-loader:
// the same paths, sections and precedence), for what the SDK does not say: which profile's credential_process
// failed when a role profile reaches it through source_profile, and (src/aws/sso.ts) which SSO session a
// profile uses. The SDK itself reads them for credentials; nothing here decides where credentials come from.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The sections of an INI file ("profile dev", "sso-session corp", "default"), key = value each. */
export function iniSections(text: string): Map<string, Record<string, string>> {
  const sections = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    // Whole-line comments, and inline ones after a space (a start URL may hold '#').
    const line = raw
      .trim()
      .replace(/^[#;].*$/, '')
      .replace(/\s[#;].*$/, '')
      .trim();
    const header = /^\[\s*(.+?)\s*\]$/.exec(line);
    if (header) {
      current = {};
      sections.set(header[1]!.replace(/\s+/g, ' '), current);
    } else if (current && line.includes('=')) {
      const at = line.indexOf('=');
      current[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return sections;
}

/** The home directory as the SDK finds it. */
function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || env.USERPROFILE || (env.HOMEPATH ? `${env.HOMEDRIVE ?? 'C:\\'}${env.HOMEPATH}` : homedir());
}

export const configPath = (env: NodeJS.ProcessEnv = process.env): string => env.AWS_CONFIG_FILE || join(home(env), '.aws', 'config');
export const credentialsPath = (env: NodeJS.ProcessEnv = process.env): string =>
  env.AWS_SHARED_CREDENTIALS_FILE || join(home(env), '.aws', 'credentials');

/** The profile the SDK reads when given `profile`: that one, else AWS_PROFILE, else "default". */
export const profileName = (profile: string | undefined, env: NodeJS.ProcessEnv = process.env): string =>
  profile || env.AWS_PROFILE || 'default';

function read(path: string): Map<string, Record<string, string>> {
  try {
    return iniSections(readFileSync(path, 'utf8'));
  } catch {
    return new Map();
  }
}

/**
 * Every profile's settings, both files merged as the SDK merges them: `[profile NAME]` and `[default]` of
 * the config file, `[NAME]` of the credentials file, which wins a setting both have.
 */
export function sharedProfiles(env: NodeJS.ProcessEnv = process.env): Map<string, Record<string, string>> {
  const profiles = new Map<string, Record<string, string>>();
  for (const [section, settings] of read(configPath(env))) {
    const name = section === 'default' ? section : /^profile (\S+)$/.exec(section)?.[1];
    if (name !== undefined) profiles.set(name, { ...profiles.get(name), ...settings });
  }
  for (const [name, settings] of read(credentialsPath(env))) profiles.set(name, { ...profiles.get(name), ...settings });
  return profiles;
}

/**
 * The profile whose credential_process is `commandLine`: `profile` itself, or one it reaches through
 * source_profile (a role profile's base, as the SDK follows them); `profile` when none has it.
 */
export function processProfile(commandLine: string, profile: string, env: NodeJS.ProcessEnv = process.env): string {
  const profiles = sharedProfiles(env);
  const seen = new Set<string>();
  for (let name: string | undefined = profile; name !== undefined && !seen.has(name); name = profiles.get(name)?.source_profile) {
    seen.add(name);
    if (profiles.get(name)?.credential_process === commandLine) return name;
  }
  return profile;
}
