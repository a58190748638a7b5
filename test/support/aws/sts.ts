// Stands in for AWS STS, AWS query protocol (POST / with a form body, XML
// answers): AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity and
// GetSessionToken. Point the SDK at it with AWS_ENDPOINT_URL_STS=<url> (or
// `clientConfig: { endpoint: url }`); any region works.
//
// Like STS it checks what a caller can get wrong: the Version, signed actions
// carrying a SigV4 scope for sts, RoleArn and RoleSessionName syntax, both MFA
// fields or neither. Keys it issued are known to it afterwards, with the
// identity GetCallerIdentity then reports.

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { awsTimestamp, type IssuedCredentials } from './keys.js';
import { StandInServer, type RecordedRequest, type Reply, type StandIn } from './stand-in.js';

export interface StsFault {
  code: string;
  message?: string;
  /** HTTP status. Default 403. */
  status?: number;
  type?: 'Sender' | 'Receiver';
}

export interface StsIdentity {
  arn: string;
  userId: string;
  account: string;
}

export interface StsOptions {
  /**
   * Allow-list of access key ids that may sign requests. When given, signed
   * actions from any other key get 403 InvalidClientTokenId. Keys issued by
   * this stand-in are added automatically.
   */
  knownAccessKeyIds?: Iterable<string>;
  /** Expected MFA TokenCode whenever SerialNumber is sent; mismatch -> 403 AccessDenied. */
  mfaTokenCode?: string;
  /** Hook to reject any request with a fault (after parsing, before the action runs). */
  reject?: (rec: RecordedRequest) => StsFault | undefined;
}

export interface StsStandIn extends StandIn {
  /** Identity GetCallerIdentity reports for a key; set your own for static keys. */
  readonly identities: Map<string, StsIdentity>;
}

const STS_NS = 'https://sts.amazonaws.com/doc/2011-06-15/';
const ACCOUNT = '123456789012';
// AssumeRoleWithWebIdentity is the one unsigned action: the token is the proof.
const SIGNED_ACTIONS = new Set(['AssumeRole', 'GetCallerIdentity', 'GetSessionToken']);
const SESSION_NAME_RE = /^[\w+=,.@-]{2,64}$/;

function xmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] as string);
}

type XmlTree = { [k: string]: string | number | XmlTree | undefined };

function toXml(tree: XmlTree): string {
  return Object.entries(tree)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `<${k}>${typeof v === 'object' ? toXml(v as XmlTree) : xmlEscape(String(v))}</${k}>`)
    .join('');
}

function credentialsXml(c: IssuedCredentials): XmlTree {
  return {
    AccessKeyId: c.accessKeyId,
    SecretAccessKey: c.secretAccessKey,
    SessionToken: c.sessionToken,
    Expiration: awsTimestamp(c.expiration),
  };
}

/** The scope of `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...`. */
function sigV4Scope(authorization: string | undefined): { accessKeyId: string; region: string; service: string } | undefined {
  const m = /Credential=([^/,\s]+)\/\d{8}\/([^/]+)\/([^/]+)\/aws4_request/.exec(authorization ?? '');
  if (m === null) return undefined;
  return { accessKeyId: m[1] as string, region: m[2] as string, service: m[3] as string };
}

class Sts extends StandInServer implements StsStandIn {
  readonly identities = new Map<string, StsIdentity>();
  private readonly known: Set<string> | undefined;

  constructor(private readonly opts: StsOptions) {
    super();
    if (opts.knownAccessKeyIds !== undefined) this.known = new Set(opts.knownAccessKeyIds);
  }

  private error(f: StsFault): Reply {
    const requestId = randomUUID();
    const body =
      `<ErrorResponse xmlns="${STS_NS}">` +
      toXml({ Error: { Type: f.type ?? 'Sender', Code: f.code, Message: f.message ?? f.code } }) +
      toXml({ RequestId: requestId }) +
      `</ErrorResponse>\n`;
    return { status: f.status ?? 403, headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId }, body };
  }

  private ok(action: string, result: XmlTree): Reply {
    const requestId = randomUUID();
    const body =
      `<${action}Response xmlns="${STS_NS}">\n` +
      `  <${action}Result>${toXml(result)}</${action}Result>\n` +
      `  <ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata>\n` +
      `</${action}Response>\n`;
    return { status: 200, headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId }, body };
  }

  private identityOf(accessKeyId: string): StsIdentity {
    return (
      this.identities.get(accessKeyId) ?? {
        arn: `arn:aws:iam::${ACCOUNT}:user/stand-in-user`,
        userId: `AIDA${accessKeyId.slice(4, 20).padEnd(17, 'X')}`,
        account: ACCOUNT,
      }
    );
  }

  protected handle(rec: RecordedRequest, body: string, req: IncomingMessage): Reply {
    const contentType = req.headers['content-type'] ?? '';
    const form = contentType.startsWith('application/x-www-form-urlencoded');
    // Recorded before any check, so a test sees what a refused request asked for.
    rec.params = { ...rec.params, ...(form ? Object.fromEntries(new URLSearchParams(body)) : {}) };
    const p = rec.params;
    const action = p.Action;
    if (action !== undefined) rec.action = action;
    const sig = sigV4Scope(req.headers.authorization);
    if (sig !== undefined) {
      rec.accessKeyId = sig.accessKeyId;
      rec.signingRegion = sig.region;
    }

    if (rec.method === 'POST' && body !== '' && !form) {
      return this.error({ code: 'InvalidParameterValue', status: 400, message: `unsupported content-type ${contentType}` });
    }
    if (rec.method !== 'POST' && rec.method !== 'GET') return this.error({ code: 'InvalidAction', status: 400, message: rec.method });
    const hooked = this.opts.reject?.(rec);
    if (hooked !== undefined) return this.error(hooked);

    if (action === undefined) return this.error({ code: 'MissingAction', status: 400, message: 'Missing Action' });
    if (p.Version !== '2011-06-15') {
      return this.error({ code: 'InvalidParameterValue', status: 400, message: `bad Version ${p.Version ?? '(none)'}` });
    }
    if (SIGNED_ACTIONS.has(action)) {
      if (sig === undefined) return this.error({ code: 'MissingAuthenticationToken', message: 'Request is missing Authentication Token' });
      if (sig.service !== 'sts') return this.error({ code: 'SignatureDoesNotMatch', message: `credential scope service ${sig.service}` });
      if (this.known !== undefined && !this.known.has(sig.accessKeyId)) {
        return this.error({ code: 'InvalidClientTokenId', message: 'The security token included in the request is invalid.' });
      }
    }
    switch (action) {
      case 'AssumeRole':
      case 'AssumeRoleWithWebIdentity':
        return this.assumeRole(rec, action);
      case 'GetCallerIdentity': {
        const id = this.identityOf(sig!.accessKeyId);
        return this.ok(action, { Arn: id.arn, UserId: id.userId, Account: id.account });
      }
      case 'GetSessionToken': {
        const mfa = this.checkMfa(rec);
        if (mfa !== undefined) return mfa;
        const creds = this.nextCredentials();
        this.remember(creds, this.identityOf(sig!.accessKeyId));
        return { ...this.ok(action, { Credentials: credentialsXml(creds) }), issued: creds };
      }
      default:
        return this.error({ code: 'InvalidAction', status: 400, message: `Could not find operation ${action} for version 2011-06-15` });
    }
  }

  private checkMfa(rec: RecordedRequest): Reply | undefined {
    const serial = rec.params.SerialNumber;
    const code = rec.params.TokenCode;
    if (serial === undefined && code === undefined) return undefined;
    if (serial === undefined || code === undefined) {
      return this.error({
        code: 'AccessDenied',
        message: 'MultiFactorAuthentication failed, must provide both MFA serial number and one time pass code.',
      });
    }
    if (this.opts.mfaTokenCode !== undefined && code !== this.opts.mfaTokenCode) {
      return this.error({ code: 'AccessDenied', message: 'MultiFactorAuthentication failed with invalid MFA one time pass code.' });
    }
    return undefined;
  }

  private remember(creds: IssuedCredentials, id: StsIdentity): void {
    this.known?.add(creds.accessKeyId);
    this.identities.set(creds.accessKeyId, id);
  }

  private assumeRole(rec: RecordedRequest, action: 'AssumeRole' | 'AssumeRoleWithWebIdentity'): Reply {
    const p = rec.params;
    const roleArn = p.RoleArn;
    const session = p.RoleSessionName;
    if (roleArn === undefined || session === undefined) {
      return this.error({ code: 'ValidationError', status: 400, message: 'RoleArn and RoleSessionName are required' });
    }
    if (!SESSION_NAME_RE.test(session)) {
      return this.error({ code: 'ValidationError', status: 400, message: `invalid RoleSessionName ${session}` });
    }
    const arn = /^arn:(aws[\w-]*):iam::(\d{12}):role\/(?:.*\/)?([\w+=,.@-]+)$/.exec(roleArn);
    if (arn === null) return this.error({ code: 'ValidationError', status: 400, message: `invalid RoleArn ${roleArn}` });
    const [, partition, account, roleName] = arn as unknown as [string, string, string, string];
    if (action === 'AssumeRoleWithWebIdentity') {
      const token = p.WebIdentityToken;
      if (token === undefined || token === '') {
        return this.error({ code: 'ValidationError', status: 400, message: 'WebIdentityToken is required' });
      }
    } else {
      const mfa = this.checkMfa(rec);
      if (mfa !== undefined) return mfa;
    }
    const creds = this.nextCredentials();
    // A stable, AWS-shaped role id derived from the ARN, so the same role always reports the same id.
    const roleId = `AROA${Buffer.from(roleArn)
      .toString('hex')
      .toUpperCase()
      .replace(/[^A-Z2-7]/g, '')
      .padEnd(17, 'Q')
      .slice(0, 17)}`;
    const id: StsIdentity = {
      arn: `arn:${partition}:sts::${account}:assumed-role/${roleName}/${session}`,
      userId: `${roleId}:${session}`,
      account,
    };
    this.remember(creds, id);
    const result: XmlTree =
      action === 'AssumeRole'
        ? {
            Credentials: credentialsXml(creds),
            AssumedRoleUser: { AssumedRoleId: id.userId, Arn: id.arn },
            PackedPolicySize: p.Policy === undefined ? undefined : 6,
            SourceIdentity: p.SourceIdentity,
          }
        : {
            Credentials: credentialsXml(creds),
            SubjectFromWebIdentityToken: 'stand-in-subject',
            AssumedRoleUser: { AssumedRoleId: id.userId, Arn: id.arn },
            Provider: 'stand-in.example',
            Audience: 'sts.amazonaws.com',
          };
    return { ...this.ok(action, result), issued: creds };
  }
}

/** STS on 127.0.0.1 and a random port; `url` is the endpoint (no path). */
export async function startSts(opts: StsOptions = {}): Promise<StsStandIn> {
  return new Sts(opts).start();
}

/**
 * The test database with an STS stand-in that knows its key as arn:aws:iam::123456789012:user/ci (what
 * the CLI's start-up and doctor ask), both stopped when `t` ends.
 */
export async function dbWithSts(t: { teardown(fn: () => unknown): void }) {
  const { startTestDb } = await import('../testdb.js');
  const db = await startTestDb();
  t.teardown(() => db.destroy());
  const sts = await startSts();
  t.teardown(() => sts.close());
  sts.identities.set(db.key.accessKeyId, { arn: 'arn:aws:iam::123456789012:user/ci', userId: 'AIDACI', account: '123456789012' });
  return { db, sts };
}
