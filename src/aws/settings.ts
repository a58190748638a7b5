// How an RDS instance takes its settings: the endpoint name, the signing region it carries (or
// --region, or AWS_REGION), and the identity that signs; and the identity settings, AWS's own.
import { isIP } from 'node:net';
import type { CloudSettings } from '../cloud.js';
import { formatHostPort } from '../host-port.js';
import { regionFromEndpoint } from './endpoint.js';

/** The settings that name an AWS identity: refused for another cloud, whose identity comes from its own SDK's chain. */
const IDENTITY_SETTINGS = ['region', 'profile', 'roleArn', 'roleSessionName', 'externalId', 'mfaSerial'] as const;

/** An AWS region name (us-east-1, cn-north-1, us-gov-west-1). */
const REGION_NAME = /^[a-z]{2}(-[a-z]+)+-\d+$/;

export const awsSettings: CloudSettings = {
  credentialsFrom: "the AWS SDK's default chain (AWS_* variables, AWS_PROFILE, SSO, the instance, task or pod role)",

  refuseOn(input, other) {
    const given: Readonly<Record<string, unknown>> = input;
    for (const key of IDENTITY_SETTINGS) {
      if (given[key] !== undefined) {
        const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
        return `--${flag} is an AWS setting, and ${input.endpoint} is ${other.title}: its credentials come from ${other.credentialsFrom}`;
      }
    }
    if (input.users && Object.keys(input.users).length > 0)
      return `users: identities per DB user are AWS identities; ${input.endpoint} is ${other.title}`;
    return undefined;
  },

  resolve(input, { envRegion, fail, hostPort, identity }, warnings) {
    const endpoint = hostPort(input.endpoint, 'endpoint');
    const connectTo = input.connectTo ? hostPort(input.connectTo, '--connect-to') : endpoint;
    const region = input.region ?? regionFromEndpoint(endpoint.host) ?? envRegion;
    if (!region) {
      throw fail(
        `cannot tell the signing region for ${endpoint.host}: it is not an RDS endpoint name (NAME.ID.REGION.rds.amazonaws.com); pass --region or set AWS_REGION`,
      );
    }
    if (!REGION_NAME.test(region)) throw fail(`--region: "${region}" is not an AWS region name (e.g. us-east-1)`);
    if (isIP(endpoint.host)) {
      warnings.push(
        `endpoint ${endpoint.host} is an IP address: RDS accepts only tokens signed for the endpoint name, and its certificate names that too. Pass the RDS endpoint name and --connect-to ${formatHostPort(endpoint)}.`,
      );
    } else if (!regionFromEndpoint(endpoint.host)) {
      warnings.push(
        `endpoint ${endpoint.host} is not an *.rds.amazonaws.com name: tokens for a CNAME or custom domain are rejected by RDS.`,
      );
    }
    return { endpoint, connectTo, region, identity: identity() };
  },
};
