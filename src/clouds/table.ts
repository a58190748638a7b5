// The clouds the proxy serves, one line each: everything else reaches a cloud through its Cloud
// (src/cloud.ts), found here by the instance's cloud name. A new cloud is its folder and its line here
// (and its name in names.ts, whose list this table must cover: the compiler says which line is missing).
import type { Identities } from '../aws/identity.js';
import { awsCloud } from '../aws/cloud.js';
import { azureCloud } from '../azure/cloud.js';
import type { Cloud } from '../cloud.js';
import { cloudSqlCloud } from '../gcp/cloud.js';
import type { CloudCredentials } from './credentials.js';
import type { CloudName } from './names.js';

/** What a process holds for its clouds, made by the commands: AWS's identities, the other clouds' tokens. */
export interface CloudProcess {
  readonly identities: Identities;
  /** Undefined only where no instance of a token cloud can be (the commands always make them). */
  readonly clouds: CloudCredentials | undefined;
}

export const CLOUD_TABLE = {
  aws: awsCloud,
  azure: azureCloud,
  gcp: cloudSqlCloud,
} as const satisfies Readonly<Record<CloudName, unknown>>;

/**
 * The table as the commands use it: every name has its line, and each cloud takes the process the
 * commands make. (Checked here rather than with `satisfies` above: the process holds the token clouds'
 * holders, whose type is read from the table.)
 */
const EVERY_CLOUD: Readonly<Record<CloudName, Cloud<CloudProcess>>> = CLOUD_TABLE;

/** An instance's cloud. */
export const cloudOf = (name: CloudName): Cloud<CloudProcess> => EVERY_CLOUD[name];

/** The clouds whose password is an access token from their SDK (they have a `bearer`). */
export type BearerCloudName = {
  [Name in CloudName]: (typeof CLOUD_TABLE)[Name] extends { readonly bearer: unknown } ? Name : never;
}[CloudName];

/** The cloud an endpoint's form names, or undefined when it names none (each form looks like no other). */
export function cloudOfEndpoint(text: string): CloudName | undefined {
  return (Object.keys(CLOUD_TABLE) as CloudName[]).find((name) => CLOUD_TABLE[name].recognises(text));
}
