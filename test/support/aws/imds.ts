// Stands in for the EC2 instance metadata service, IMDSv2 only (as on an
// instance with HttpTokens=required), serving one instance-profile role.
// Point the SDK at it with AWS_EC2_METADATA_SERVICE_ENDPOINT=<url> (and
// AWS_EC2_METADATA_DISABLED unset or 'false').
//
// It answers what @smithy/credential-provider-imds asks, in order: PUT
// /latest/api/token, GET .../security-credentials/ (the role name), GET
// .../security-credentials/stand-in-role; each role GET issues a new
// credential set.

import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { awsTimestamp } from './keys.js';
import { StandInServer, TEXT, type RecordedRequest, type Reply, type StandIn } from './stand-in.js';

/** The instance profile's role. */
const IMDS_ROLE = 'stand-in-role';

const TOKEN_PATH = '/latest/api/token';
const CREDENTIALS_PATH = '/latest/meta-data/iam/security-credentials/';
// IMDS refuses a session token TTL outside 1 s to 6 h.
const MAX_TOKEN_TTL_SECONDS = 21_600;

class Imds extends StandInServer {
  /** Session token -> when it expires (ms since the epoch). */
  private readonly live = new Map<string, number>();

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    if (rec.path === TOKEN_PATH) {
      if (rec.method !== 'PUT') return { status: 405, headers: TEXT, body: 'Method Not Allowed' };
      // IMDS refuses token requests that went through a proxy.
      if (req.headers['x-forwarded-for'] !== undefined) return { status: 403, headers: TEXT, body: 'Forbidden' };
      const ttlHeader = req.headers['x-aws-ec2-metadata-token-ttl-seconds'];
      const ttl = Number(ttlHeader);
      if (typeof ttlHeader !== 'string' || !/^\d+$/.test(ttlHeader) || ttl < 1 || ttl > MAX_TOKEN_TTL_SECONDS) {
        return { status: 400, headers: TEXT, body: 'Bad Request' };
      }
      const token = `AQAE${randomBytes(18).toString('base64url')}`;
      this.live.set(token, Date.now() + ttl * 1000);
      return { status: 200, headers: { ...TEXT, 'x-aws-ec2-metadata-token-ttl-seconds': String(ttl) }, body: token };
    }
    if (rec.method !== 'GET') return { status: 405, headers: TEXT, body: 'Method Not Allowed' };
    const token = req.headers['x-aws-ec2-metadata-token'];
    const expiry = typeof token === 'string' ? this.live.get(token) : undefined;
    // IMDSv2 required: no IMDSv1 fallback for a GET without a live token.
    if (expiry === undefined || expiry < Date.now()) return { status: 401, headers: TEXT, body: 'Unauthorized' };
    switch (rec.path) {
      case CREDENTIALS_PATH:
        return { status: 200, headers: TEXT, body: IMDS_ROLE };
      case CREDENTIALS_PATH + IMDS_ROLE: {
        const creds = this.nextCredentials();
        const doc = {
          Code: 'Success',
          LastUpdated: awsTimestamp(new Date()),
          Type: 'AWS-HMAC',
          AccessKeyId: creds.accessKeyId,
          SecretAccessKey: creds.secretAccessKey,
          Token: creds.sessionToken,
          Expiration: awsTimestamp(creds.expiration),
        };
        return { status: 200, headers: TEXT, body: JSON.stringify(doc, null, 2), issued: creds };
      }
      default:
        return { status: 404, headers: { 'content-type': 'text/html' }, body: '<html><body><h1>404 - Not Found</h1></body></html>' };
    }
  }
}

/** IMDSv2 on 127.0.0.1 and a random port; `url` is the endpoint (no path). */
export async function startImds(): Promise<StandIn> {
  return new Imds().start();
}
