// The walk `pg-iam-proxy doctor` takes, whatever the cloud: a list of steps, each reporting one or more
// checks as PASS / WARN / FAIL with what was found and the fix, stopping at the first failure that makes
// the rest meaningless. Each cloud says its steps (its doctor.ts); commands/doctor.ts runs them.
import { ProtocolVersion } from '../protocol/constants.js';
import { startupMessage } from '../protocol/startup.js';
import { quoteIdent } from '../sql-quote.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface Check {
  readonly id: string;
  readonly title: string;
  status: CheckStatus;
  /** What was found, in a sentence. */
  found: string;
  /** What to do about a WARN or FAIL. */
  fix?: string;
  data?: Record<string, unknown>;
}

/** What a doctor run asks for, whatever the cloud. */
export interface DoctorRun {
  readonly user: string;
  readonly database: string;
  readonly connectTimeoutMs: number;
  /** Warnings the configuration already raised (an IP endpoint, a custom domain). */
  readonly configWarnings: readonly string[];
  /** Where the region came from. */
  readonly regionSource: 'flag' | 'endpoint' | 'env';
  readonly now?: () => number;
}

/** A failure that makes the later checks meaningless. */
export class Stop extends Error {}

/** How a step records its checks' outcomes. */
export interface Outcomes {
  /** A check's outcome: pass or warn (the next checks still run), or skip. */
  set(id: string, status: CheckStatus, found: string, fix?: string, data?: Record<string, unknown>): void;
  /** A failure, recorded; `throw fail(...)` stops the walk, one not thrown lets it go on to what does without. */
  fail(id: string, found: string, fix?: string, data?: Record<string, unknown>): Stop;
}

/** One step of the walk. */
export interface DoctorStep {
  /** The checks it reports, [id, title], in the report's order. */
  readonly checks: ReadonlyArray<readonly [id: string, title: string]>;
  /**
   * What it needs of an earlier step that failed without stopping the walk (credentials): when `met()` is
   * false, this step and every later one are skipped, saying `skipped`, and the walk stops.
   */
  readonly needs?: { readonly met: () => boolean; readonly skipped: string };
  run(outcomes: Outcomes): Promise<void> | void;
  /** Once the walk is over, however it ended (a connection the step left open for the next ones). */
  finish?(): void;
}

const NOT_CHECKED = 'not checked: an earlier check failed';

/** Walk the steps in order; `ok` only when every one ran to its end (the last is a real login). */
export async function walkSteps(steps: readonly DoctorStep[]): Promise<{ ok: boolean; checks: Check[] }> {
  const checks: Check[] = steps.flatMap((step) =>
    step.checks.map(([id, title]): Check => ({ id, title, status: 'skip', found: NOT_CHECKED })),
  );
  const outcomes: Outcomes = {
    set(id, status, found, fix, data) {
      Object.assign(checks.find((c) => c.id === id)!, { status, found, ...(fix ? { fix } : {}), ...(data ? { data } : {}) });
    },
    fail(id, found, fix, data) {
      outcomes.set(id, 'fail', found, fix, data);
      return new Stop();
    },
  };
  let ok = false;
  try {
    for (const [i, step] of steps.entries()) {
      if (step.needs && !step.needs.met()) {
        for (const [id] of steps.slice(i).flatMap((later) => later.checks)) outcomes.set(id, 'skip', step.needs.skipped);
        throw new Stop();
      }
      await step.run(outcomes);
    }
    ok = true;
  } catch (err) {
    /* c8 ignore next -- every check ends in set() or fail(); anything else is a bug worth a stack trace */
    if (!(err instanceof Stop)) throw err;
  } finally {
    for (const step of steps) step.finish?.();
  }
  return { ok, checks };
}

/** The startup message of doctor's real login. */
export function doctorStartup(user: string, database: string): Buffer {
  return startupMessage(ProtocolVersion.V3_0, [
    { name: 'user', value: Buffer.from(user) },
    { name: 'database', value: Buffer.from(database) },
    { name: 'application_name', value: Buffer.from('pg-iam-proxy doctor') },
  ]);
}

/** The fix for a login the server ended after accepting the token: a database that does not exist. */
export function missingDatabaseFix(failure: string, database: string): string | undefined {
  return /database ".*" does not exist/.test(failure)
    ? `Pick an existing database with --database (e.g. postgres), or create it: CREATE DATABASE ${quoteIdent(database)};`
    : undefined;
}

/** A checklist of "Check, most likely first: 1) ... 2) ..." as doctor's fix lines. */
export const checklistLines = (checklist: string): string =>
  checklist
    .replace(/^Check, most likely first: /, '')
    .split(/ (?=\d\) )/)
    .join('\n');
