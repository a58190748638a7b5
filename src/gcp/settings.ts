// How a Cloud SQL instance takes its settings: its connection name, the SQL Admin API that describes it,
// and which of its addresses to dial; and those settings, Cloud SQL's own.
import type { CloudSettings } from '../cloud.js';
import { DEFAULT_PG_PORT } from '../host-port.js';
import { redactSecrets } from '../log.js';
import { choiceList } from '../options.js';
import { IP_TYPES, type IpType, parseCloudSqlName } from './instance.js';

/** The default SQL Admin API, where Google's connectors ask for an instance's addresses and server CA. */
export const SQLADMIN_API = 'https://sqladmin.googleapis.com';

/** --ip-type: one kind of address or a comma list, each once; public by default, as cloud-sql-proxy. */
function parseIpTypes(text: string | undefined, fail: (message: string) => Error): readonly IpType[] {
  if (text === undefined) return Object.freeze(['public'] as const);
  const types = text.split(',').map((part) => part.trim().toLowerCase());
  for (const type of types) {
    if (!(IP_TYPES as readonly string[]).includes(type))
      throw fail(`--ip-type: "${text}" is not ${choiceList(IP_TYPES)}, or a comma list of them (e.g. public,private)`);
  }
  if (new Set(types).size !== types.length) throw fail(`--ip-type: "${text}" names a kind of address twice`);
  return Object.freeze(types as IpType[]);
}

export const cloudSqlSettings: CloudSettings = {
  credentialsFrom:
    'Application Default Credentials (gcloud auth application-default login, GOOGLE_APPLICATION_CREDENTIALS, the metadata server)',

  refuseOn(input, other) {
    for (const [key, value] of [
      ['sqladmin-api-endpoint', input.sqladminApiEndpoint],
      ['ip-type', input.ipType],
    ] as const) {
      if (value !== undefined) return `--${key} is a Cloud SQL setting; ${input.endpoint} is ${other.title}`;
    }
    return undefined;
  },

  resolve(input, { fail, hostPort, isLoopback }) {
    const parsed = parseCloudSqlName(input.endpoint);
    if (!parsed) {
      throw fail(
        `endpoint: "${input.endpoint}" is not a Cloud SQL instance connection name (PROJECT:REGION:INSTANCE, as the console and \`gcloud sql instances describe\` show it)`,
      );
    }
    const endpoint = { host: parsed.instance.connectionName, port: parsed.port ?? DEFAULT_PG_PORT };
    const api = (input.sqladminApiEndpoint ?? SQLADMIN_API).replace(/\/+$/, '');
    if (!/^https?:\/\/[^/\s]+/.test(api)) throw fail(`--sqladmin-api-endpoint: "${redactSecrets(api)}" is not an http(s) URL`);
    // The API is sent an access token and names the CA the server is checked against: plain HTTP only to
    // this host (a stand-in, a local forwarder), never across a network.
    if (api.startsWith('http:') && !isLoopback(new URL(api).hostname.replace(/^\[|\]$/g, ''))) {
      throw fail(
        `--sqladmin-api-endpoint: "${redactSecrets(api)}" is plain HTTP to another host; the API gets an access token and names the CA to trust, so it must be https (http only on loopback)`,
      );
    }
    const ipTypes = parseIpTypes(input.ipType, fail);
    if (input.ipType !== undefined && input.connectTo !== undefined)
      throw fail(`--ip-type and --connect-to both say where to dial ${parsed.instance.connectionName}: give one`);
    const cloudSql = Object.freeze({ instance: Object.freeze(parsed.instance), api, ipTypes });
    const connectTo = input.connectTo ? hostPort(input.connectTo, '--connect-to') : endpoint;
    return { endpoint, connectTo, region: cloudSql.instance.region, identity: Object.freeze({}), cloudSql };
  },
};
