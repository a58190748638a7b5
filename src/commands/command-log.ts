// The log a command writes to stderr, as each command body sets it up: its format, and Node's own warnings
// routed into it.
import type { Logger } from 'pino';
import { createLogger, type LogFormat } from '../log.js';

/** The level and format asked for; without a format, pretty on a terminal, else JSON lines. */
export function logOptions(log: { level: string; format: LogFormat | undefined }) {
  return { level: log.level, format: log.format ?? (process.stderr.isTTY ? 'pretty' : 'json') };
}

/** Node's process warnings (the SDK's Node version notice among them) as log lines, not stray stderr text. */
export function routeProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning');
  // At info: they are notices for operators (the SDK's Node version notice), not faults of the proxy.
  process.on('warning', (warning) => log.info({ warning: { name: warning.name, message: warning.message } }, 'Node.js warning'));
}

/** A command's log: as asked, the settings' warnings written first, Node's warnings routed into it. */
export function commandLog(settings: { level: string; format: LogFormat | undefined }, warnings: readonly string[]): Logger {
  const log = createLogger(logOptions(settings));
  for (const warning of warnings) log.warn(warning);
  routeProcessWarnings(log);
  return log;
}
