// pgjdbc through the proxy: a Java program whose main() body is given, run with the distribution's
// pgjdbc jar against a URL for the proxy's port (prepareThreshold=1: server-side statements at once).
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runPg, type Run } from './proxy.js';

const JAR = '/usr/share/java/postgresql.jar';

/** Why a pgjdbc test cannot run here; never in CI, which installs java and the jar (.ci/run). */
export const jdbcSkip = (): string | false =>
  !process.env.CI && (!existsSync(JAR) || !process.env.PATH?.split(':').some((d) => existsSync(`${d}/java`)))
    ? 'needs java and the pgjdbc jar (.ci/run installs them)'
    : false;

/**
 * Runs class `name` whose main() is `body`, with `String url` set for the proxy's port (user iam_user,
 * database orders); its stdout is what the body prints.
 */
export async function runJdbc(dir: string, name: string, port: number, body: string): Promise<Run> {
  const source = join(dir, `${name}.java`);
  await writeFile(
    source,
    `import java.sql.*;
public class ${name} {
  public static void main(String[] a) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:${port}/orders?user=iam_user&prepareThreshold=1&sslmode=disable";
${body}
  }
}
`,
  );
  return runPg('java', ['-cp', JAR, source], {});
}
