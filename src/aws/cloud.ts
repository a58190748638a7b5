// AWS RDS and Aurora with IAM database authentication, as the proxy's table of clouds has it
// (src/clouds/table.ts): tokens signed with an AWS identity for the endpoint, region and DB user.
import type { Cloud } from '../cloud.js';
import { isRdsEndpointName } from './endpoint.js';
import { announce, type Identities } from './identity.js';
import { awsSeams, tokensOf } from './seams.js';
import { awsSettings } from './settings.js';

/** What AWS needs of the process: its identities (one credentials holder and token cache each). */
export interface AwsProcess {
  readonly identities: Identities;
}

export const awsCloud: Cloud<AwsProcess> = {
  title: 'AWS RDS/Aurora',
  credentialsNoun: 'AWS credentials',
  tokenVerb: 'sign',
  fileAwsIdentity: true,
  recognises: (endpoint) => isRdsEndpointName(endpoint.trim().replace(/:\d+$/, '')),
  settings: awsSettings,
  seams: ({ identities }) => awsSeams((instance) => tokensOf(identities, instance)),

  // Each identity in use (users: included) once.
  announce({ identities }, instance, log, seen) {
    const jobs: Array<Promise<boolean>> = [];
    for (const spec of [instance.identity, ...(instance.users?.values() ?? [])]) {
      const identity = identities.for(spec, instance.region);
      if (seen.has(identity)) continue;
      seen.add(identity);
      jobs.push(announce(identity, instance.region, log));
    }
    return jobs;
  },

  // Signed for the endpoint with the user's identity (`users:`) or the instance's.
  async token({ identities }, instance, user) {
    const { host, port } = instance.endpoint;
    return (await tokensOf(identities, instance).get({ host, port, region: instance.region, user })).value;
  },

  doctor: async () => (await import('./doctor.js')).awsDoctor,

  /**
   * The credentials themselves, as the SDK reads them from the environment. What only names or points at
   * a credential (AWS_PROFILE, AWS_REGION, AWS_WEB_IDENTITY_TOKEN_FILE) is no secret.
   */
  credentialVariables: [
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN',
    'AWS_SECURITY_TOKEN', // the older name of AWS_SESSION_TOKEN, still read by boto
    'AWS_CREDENTIAL_EXPIRATION', // goes with the keys above
    'AWS_CONTAINER_AUTHORIZATION_TOKEN', // the bearer token for the ECS / EKS Pod Identity credentials endpoint
  ],
};
