// Reaching a Cloud SQL instance over verified TLS on its PostgreSQL port. The instance's addresses, server
// CA and DNS names come from the SQL Admin API (connect.get), as Google's connectors get them, unless both
// --connect-to and --ca-file say where and whom to trust. The certificate's identity is checked the way the
// connectors check it: the instance's DNS name when its CA is CAS-based, else CN = PROJECT:INSTANCE.
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import { readCaFile, upstreamContext } from '../tls/upstream.js';
import type { ConnectHints, Connector } from '../cloud.js';
import type { CloudSqlInstance, IpType } from './instance.js';
import type { InstanceConfig } from '../config.js';
import type { HostPort } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { SqlState } from '../protocol/constants.js';
import { Failure, WireError } from '../protocol/errors.js';
import { connectUpstream, type UpstreamTarget } from '../upstream/connect.js';
import { ADMIN_SCOPE, googleAuth } from './iam.js';

/** What connect.get answers (sql/v1beta4 ConnectSettings), the fields the proxy reads. */
export interface ConnectSettings {
  readonly ipAddresses?: ReadonlyArray<{ readonly type?: string; readonly ipAddress?: string }>;
  readonly serverCaCert?: { readonly cert?: string };
  readonly dnsName?: string;
  readonly dnsNames?: ReadonlyArray<{ readonly name?: string; readonly connectionType?: string; readonly dnsScope?: string }>;
  readonly pscEnabled?: boolean;
  readonly serverCaMode?: string;
  readonly databaseVersion?: string;
  readonly region?: string;
}

/** Ask the SQL Admin API at `api` for an instance's connect settings. */
export type ConnectSettingsFetch = (instance: CloudSqlInstance, api: string, timeoutMs: number) => Promise<ConnectSettings>;

/** The API's answer as a failure the client can act on (no access, no such instance, API off). */
export class AdminApiError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly hint: string,
    /** No token to ask with: the credentials, not the API, are the cause. */
    readonly noCredentials = false,
  ) {
    super(message);
    this.name = 'AdminApiError';
  }
}

/** connect.get with Application Default Credentials (scope sqlservice.admin), through google-auth-library's client. */
export function adminApi(auth = googleAuth(ADMIN_SCOPE)): ConnectSettingsFetch {
  return async (instance, api, timeoutMs) => {
    const url = `${api}/sql/v1beta4/projects/${encodeURIComponent(instance.project)}/instances/${encodeURIComponent(instance.instance)}/connectSettings`;
    const google = await auth();
    try {
      // The token first (the library keeps it): without credentials the API was never reached, and the
      // advice is about the credentials.
      await (await google.getClient()).getAccessToken();
    } catch (err) {
      throw new AdminApiError(
        `no Google credentials to ask the SQL Admin API about ${instance.connectionName}: ${redactSecrets((err as Error).message)}`,
        undefined,
        'Set up Application Default Credentials where the proxy runs, as the same user: gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS (a key file or workload identity federation), or the attached service account on GCE, GKE and Cloud Run; `gcloud auth application-default print-access-token` shows that they work.',
        true,
      );
    }
    try {
      const response = await google.request<ConnectSettings>({ url, method: 'GET', timeout: timeoutMs, retry: false });
      return response.data;
    } catch (err) {
      const status =
        (err as { status?: number; response?: { status?: number } }).status ?? (err as { response?: { status?: number } }).response?.status;
      throw new AdminApiError(
        `the SQL Admin API (${redactSecrets(api)}) did not describe ${instance.connectionName}: ${redactSecrets((err as Error).message)}`,
        status,
        adminHint(status, instance),
      );
    }
  };
}

function adminHint(status: number | undefined, instance: CloudSqlInstance): string {
  if (status === 403)
    return `The credentials need cloudsql.instances.connect and cloudsql.instances.get on project ${instance.project} (roles/cloudsql.client), and the SQL Admin API enabled: gcloud services enable sqladmin.googleapis.com.`;
  if (status === 404)
    return `No instance ${instance.instance} in project ${instance.project}: check the connection name (gcloud sql instances describe ${instance.instance} --format='value(connectionName)').`;
  if (status === 401) return 'The credentials were refused: renew them (gcloud auth application-default login).';
  return 'Check that sqladmin.googleapis.com is reachable from here, or give both --connect-to (the instance address) and --ca-file (its server CA) to do without the API.';
}

/**
 * The instance's addresses by kind, as Google's connectors read connect.get: public is the PRIMARY IP,
 * private the PRIVATE one, PSC (with pscEnabled) the Private Service Connect DNS name of the instance,
 * else the legacy dnsName (which a CAS-based instance sets without PSC, hence pscEnabled first).
 */
export function addressesOf(settings: ConnectSettings): Partial<Record<IpType, string>> {
  const ip = (type: string) => settings.ipAddresses?.find((a) => a.type === type && a.ipAddress)?.ipAddress;
  const psc = settings.pscEnabled
    ? (settings.dnsNames?.find((d) => d.name && d.connectionType === 'PRIVATE_SERVICE_CONNECT' && d.dnsScope === 'INSTANCE')?.name ??
      settings.dnsName)
    : undefined;
  const found: Partial<Record<IpType, string>> = { public: ip('PRIMARY'), private: ip('PRIVATE'), psc: psc?.replace(/\.$/, '') };
  return Object.fromEntries(Object.entries(found).filter(([, address]) => address)) as Partial<Record<IpType, string>>;
}

/** The address of the first kind in `ipTypes` (--ip-type) the instance has; public alone by default, as cloud-sql-proxy. */
export function pickAddress(settings: ConnectSettings, ipTypes: readonly IpType[] = ['public']): string | undefined {
  const addresses = addressesOf(settings);
  return ipTypes.map((type) => addresses[type]).find((address) => address !== undefined);
}

/** The name a CAS-based server certificate carries; undefined for an instance on a per-instance CA (CN check). */
export function casDnsName(settings: ConnectSettings): string | undefined {
  if (settings.serverCaMode === undefined || settings.serverCaMode === 'GOOGLE_MANAGED_INTERNAL_CA') return undefined;
  const name = settings.dnsName ?? settings.dnsNames?.find((d) => d.name)?.name;
  return name?.replace(/\.$/, '');
}

/** The identity check: the DNS name when there is one, else the legacy CN = PROJECT:INSTANCE. */
export function cloudSqlIdentity(
  instance: CloudSqlInstance,
  dnsName: string | undefined,
): Pick<UpstreamTarget, 'servername' | 'checkIdentity'> {
  if (dnsName) return { servername: dnsName, checkIdentity: (cert) => checkServerIdentity(dnsName, cert) };
  const expected = `${instance.project}:${instance.instance}`;
  return {
    servername: null,
    checkIdentity: (cert: PeerCertificate) => {
      const cn = cert.subject?.CN;
      if (cn === expected) return undefined;
      return Object.assign(new Error(`the certificate is for ${String(cn)}, not the instance ${expected}`), {
        code: 'ERR_TLS_CERT_ALTNAME_INVALID',
        reason: `Certificate CN ${String(cn)} is not ${expected}`,
      });
    },
  };
}

/** The advice attached to the engine's TLS errors for a Cloud SQL instance. */
export function cloudSqlConnectHints(instance: CloudSqlInstance, caFile: string | undefined): ConnectHints {
  return {
    untrusted: caFile
      ? `No CA in ${caFile} signed this certificate: download the instance's server CA (gcloud sql instances describe ${instance.instance} --format='value(serverCaCert.cert)'), or drop --ca-file to have it from the SQL Admin API.`
      : "The instance's server CA from the SQL Admin API did not sign this certificate: the dial address is another instance, or the CA was rotated (the proxy asks the API again, at most once a minute).",
    nameMismatch: `The certificate is not ${instance.connectionName}'s: check the connection name and --connect-to (another instance answers there).`,
    noTls: 'Cloud SQL always offers TLS and pg-iam-proxy never falls back to plaintext: check that --connect-to points at the instance.',
  };
}

/** The TLS alert of a server that wants a client certificate (TLS 1.3; over TLS 1.2 it only fails the handshake). */
const CLIENT_CERT = /CERTIFICATE_REQUIRED/;

/** A connect.get answer is reused this long: the CA and addresses change rarely. */
const SETTINGS_TTL_MS = 60 * 60_000;
/**
 * After a TLS failure the API is asked again once its answer is this old (a rotated CA is learnt within a
 * minute; an instance that keeps failing costs the API's quota one call a minute, not one per login).
 */
const REASK_AFTER_FAILURE_MS = 60_000;

export class CloudSqlConnector implements Connector {
  readonly endpoint: HostPort;
  private readonly instance: CloudSqlInstance;
  /** Dial where --connect-to says; undefined: where the API says. */
  private readonly dial: HostPort | undefined;
  private resolved: { target: UpstreamTarget; at: number } | undefined;
  private inflight: Promise<UpstreamTarget> | undefined;
  /** --ca-file's certificates, read once at start (an unreadable file stops the start, as for RDS). */
  private readonly caFromFile: readonly string[] | undefined;
  /** With --connect-to and --ca-file: where and whom, for good (the API is never asked). */
  private readonly fixed: UpstreamTarget | undefined;

  constructor(
    private readonly config: InstanceConfig,
    private readonly connectTimeoutMs: number,
    private readonly describe: ConnectSettingsFetch,
    private readonly now: () => number = Date.now,
  ) {
    this.endpoint = config.endpoint;
    this.instance = config.cloudSql!.instance;
    this.dial = config.connectTo === config.endpoint ? undefined : config.connectTo;
    this.caFromFile = config.caFile ? readCaFile(config.caFile) : undefined;
    if (this.dial && this.caFromFile) {
      this.fixed = {
        endpoint: config.endpoint,
        hints: cloudSqlConnectHints(this.instance, config.caFile),
        connectTimeoutMs,
        connectTo: this.dial,
        tls: upstreamContext(this.caFromFile),
        ...cloudSqlIdentity(this.instance, undefined),
      };
    }
  }

  /** The dial address: --connect-to, else the API's, once known. */
  get connectTo(): HostPort {
    return this.resolved?.target.connectTo ?? this.dial ?? this.config.endpoint;
  }

  /** Whether the SQL Admin API is asked: unless --connect-to and --ca-file together say everything. */
  get usesApi(): boolean {
    return this.fixed === undefined;
  }

  async connect(signal?: AbortSignal): Promise<TLSSocket> {
    const target = await this.target();
    try {
      return await connectUpstream(target, signal);
    } catch (err) {
      // A certificate the API's CA does not vouch for, or naming another instance: the CA may have been
      // rotated, so a later connection asks the API again (at most once a minute).
      const tlsRefused = err instanceof WireError && (err.reason === Failure.TlsUntrusted || err.reason === Failure.TlsNameMismatch);
      if (tlsRefused && this.resolved && this.now() - this.resolved.at >= REASK_AFTER_FAILURE_MS) this.resolved = undefined;
      throw this.explain(err) ?? err;
    }
  }

  explain(err: unknown): WireError | undefined {
    const code = String((err as { code?: unknown }).code ?? '');
    const cause = String((err as { cause?: { code?: unknown } }).cause?.code ?? '');
    if (!CLIENT_CERT.test(code) && !CLIENT_CERT.test(cause)) return undefined;
    return new WireError(SqlState.UnableToConnect, `the Cloud SQL instance ${this.instance.connectionName} requires client certificates`, {
      reason: Failure.TlsClientCertRequired,
      detail:
        'Its SSL mode asks every client for a certificate the SQL Admin API issues (TRUSTED_CLIENT_CERTIFICATE_REQUIRED, or "Allow only connections that use Cloud SQL connectors"): pg-iam-proxy logs in with IAM tokens over server-verified TLS and has none.',
      hint: `Use Google's Cloud SQL Auth Proxy (cloud-sql-proxy --auto-iam-authn ${this.instance.connectionName}) or a Cloud SQL connector library, or allow connections without client certificates: gcloud sql instances patch ${this.instance.instance} --ssl-mode=ENCRYPTED_ONLY.`,
      cause: err,
    });
  }

  /** Where to dial and whom to trust: from the flags, or connect.get (single flight, reused for an hour). */
  private target(): Promise<UpstreamTarget> {
    if (this.fixed) return Promise.resolve(this.fixed);
    const resolved = this.resolved;
    if (resolved && this.now() - resolved.at < SETTINGS_TTL_MS) return Promise.resolve(resolved.target);
    this.inflight ??= this.resolve().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async resolve(): Promise<UpstreamTarget> {
    const { config, instance } = this;
    const hints = cloudSqlConnectHints(instance, config.caFile);
    const base = { endpoint: config.endpoint, hints, connectTimeoutMs: this.connectTimeoutMs };
    let settings: ConnectSettings;
    try {
      settings = await this.describe(instance, config.cloudSql!.api, this.connectTimeoutMs);
    } catch (err) {
      const api = err instanceof AdminApiError ? err : undefined;
      throw new WireError(SqlState.UnableToConnect, redactSecrets((err as Error).message), {
        reason: api?.noCredentials || api?.status === 401 || api?.status === 403 ? Failure.NoCredentials : Failure.UpstreamUnreachable,
        hint: api?.hint,
        cause: err,
      });
    }
    const { ipTypes } = config.cloudSql!;
    const address = pickAddress(settings, ipTypes);
    const ca = settings.serverCaCert?.cert;
    if (!this.dial && !address) {
      const has = Object.keys(addressesOf(settings));
      throw new WireError(
        SqlState.UnableToConnect,
        `the SQL Admin API gives no ${ipTypes.join(' or ')} address for ${instance.connectionName} (it has ${has.length > 0 ? has.join(', ') : 'none'})`,
        {
          reason: Failure.UpstreamUnreachable,
          hint:
            has.length > 0
              ? `Pick one it has with --ip-type (${has.join(', ')}; a comma list takes the first the instance has), or dial a tunnel with --connect-to.`
              : 'Give the instance an IP address (public or private) or Private Service Connect, or dial a tunnel with --connect-to.',
        },
      );
    }
    if (!config.caFile && !ca) {
      throw new WireError(SqlState.UnableToConnect, `the SQL Admin API gives no server CA for ${instance.connectionName}`, {
        reason: Failure.TlsUntrusted,
        hint: `Pass the instance's server CA with --ca-file (gcloud sql instances describe ${instance.instance} --format='value(serverCaCert.cert)').`,
      });
    }
    const target: UpstreamTarget = {
      ...base,
      connectTo: this.dial ?? { host: address!, port: config.endpoint.port },
      tls: upstreamContext(this.caFromFile ?? [ca!]), // parsed once per answer, not per connection
      ...cloudSqlIdentity(instance, casDnsName(settings)),
    };
    this.resolved = { target, at: this.now() };
    return target;
  }
}
