// Stands in for the container credentials endpoint: the ECS task role
// endpoint, EKS Pod Identity's agent, anything fromHttp / fromContainerMetadata
// reads. Point the SDK at it with AWS_CONTAINER_CREDENTIALS_FULL_URI=<url>
// (and AWS_CONTAINER_AUTHORIZATION_TOKEN=<authorizationToken> when one is set).
// Each GET of /creds issues a new credential set.

import type { IncomingMessage } from 'node:http';
import { awsTimestamp } from './keys.js';
import { JSON_TYPE, StandInServer, type RecordedRequest, type Reply, type StandIn } from './stand-in.js';

export interface EcsOptions {
  /** When set, requests must carry exactly this Authorization header value, else 401. */
  authorizationToken?: string;
}

const ROLE_ARN = 'arn:aws:iam::123456789012:role/stand-in-task-role';

class Ecs extends StandInServer {
  constructor(private readonly authorizationToken: string | undefined) {
    super();
    this.path = '/creds';
  }

  protected handle(rec: RecordedRequest, _body: string, req: IncomingMessage): Reply {
    const deny = (status: number, code: string, message: string): Reply => ({
      status,
      headers: JSON_TYPE,
      body: JSON.stringify({ Code: code, Message: message }),
    });
    if (rec.path !== this.path) return deny(404, 'NotFound', `no credentials at ${rec.path}`);
    if (rec.method !== 'GET') return deny(405, 'MethodNotAllowed', rec.method);
    if (this.authorizationToken !== undefined && req.headers.authorization !== this.authorizationToken) {
      return deny(401, 'AccessDenied', 'missing or wrong Authorization token');
    }
    const creds = this.nextCredentials();
    const doc = {
      RoleArn: ROLE_ARN,
      AccessKeyId: creds.accessKeyId,
      SecretAccessKey: creds.secretAccessKey,
      Token: creds.sessionToken,
      Expiration: awsTimestamp(creds.expiration),
    };
    return { status: 200, headers: JSON_TYPE, body: JSON.stringify(doc), issued: creds };
  }
}

/** The container credentials endpoint; `url` is the full credentials URL (`http://127.0.0.1:PORT/creds`). */
export async function startEcs(opts: EcsOptions = {}): Promise<StandIn> {
  return new Ecs(opts.authorizationToken).start();
}
