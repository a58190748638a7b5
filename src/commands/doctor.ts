// `pg-iam-proxy doctor`: walk the chain the way the troubleshooting page does, one check at a time,
// each PASS / WARN / FAIL with what was found and the fix; stop at the first failure that makes the
// rest meaningless. Exit 0 only when a real login succeeded. Each cloud says its checks (its doctor.ts,
// through its Cloud); src/doctor/walk.ts walks them.
import type { Identities } from '../aws/identity.js';
import type { CloudCredentials } from '../clouds/credentials.js';
import { cloudOf } from '../clouds/table.js';
import type { InstanceConfig } from '../config.js';
import { type Check, type CheckStatus, type DoctorRun, walkSteps } from '../doctor/walk.js';
import { formatHostPort } from '../host-port.js';

export interface DoctorReport {
  /** True only when the real login succeeded. */
  readonly ok: boolean;
  readonly endpoint: string;
  readonly connectTo: string;
  readonly user: string;
  readonly database: string;
  readonly checks: Check[];
}

export interface DoctorOptions extends DoctorRun {
  readonly identities: Identities;
  /** The token clouds' holders: required for their instances. */
  readonly clouds?: CloudCredentials | undefined;
}

export async function runDoctor(instance: InstanceConfig, options: DoctorOptions): Promise<DoctorReport> {
  const cloud = cloudOf(instance.cloud);
  const steps = (await cloud.doctor())(instance, options, { identities: options.identities, clouds: options.clouds });
  const { ok, checks } = await walkSteps(steps);
  return {
    ok,
    endpoint: formatHostPort(instance.endpoint),
    connectTo: formatHostPort(instance.connectTo),
    user: options.user,
    database: options.database,
    checks,
  };
}

const COLORS: Record<CheckStatus, string> = { pass: '\x1b[32m', warn: '\x1b[33m', fail: '\x1b[31m', skip: '\x1b[2m' };

/** The report for a terminal: one block per check; colour only when `color`. */
export function formatReport(report: DoctorReport, color: boolean): string {
  const paint = (status: CheckStatus, text: string) => (color ? `${COLORS[status]}${text}\x1b[0m` : text);
  const lines = [
    `pg-iam-proxy doctor: ${report.endpoint}${report.connectTo === report.endpoint ? '' : ` via ${report.connectTo}`}, user "${report.user}", database "${report.database}"`,
    '',
  ];
  for (const check of report.checks) {
    lines.push(`${paint(check.status, check.status.toUpperCase().padEnd(4))}  ${check.title}`);
    lines.push(`      ${check.found}`);
    if (check.fix) lines.push(...check.fix.split('\n').map((line, i) => `      ${i === 0 ? 'fix: ' : '     '}${line}`));
  }
  const failed = report.checks.find((c) => c.status === 'fail');
  lines.push(
    '',
    report.ok
      ? paint('pass', 'The login succeeded: the proxy will work with these settings.')
      : paint('fail', `Stopped at: ${failed?.title ?? 'the login'}.`),
  );
  return `${lines.join('\n')}\n`;
}
