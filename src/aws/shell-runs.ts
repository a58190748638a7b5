// How a credential_process run ended. The SDK runs it with exec (`/bin/sh -c LINE`) and keeps only the
// error's message, "Command failed: LINE\nSTDERR", which has no exit status. Node's child_process
// diagnostics channel (documented, observe-only) still sees the child: it is listened to only while a
// chain step that may run a credential_process is under way, and a child counts only when that step
// spawned it (its async context), so no other child of the process is ever looked at.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ChildProcess } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';

const CHANNEL = 'child_process';

export interface ShellExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The shell commands one piece of work ran, by command line, and how each ended. */
export class ShellRuns {
  private readonly exits = new Map<string, ShellExit>();

  /** How `commandLine` last ended, if this work ran it and it has ended. */
  exit(commandLine: string): ShellExit | undefined {
    return this.exits.get(commandLine);
  }

  /** Runs `work`, noting how each shell command it starts ends. */
  async watch<T>(work: () => Promise<T>): Promise<T> {
    if (watchers++ === 0) subscribe(CHANNEL, onChild);
    try {
      return await running.run(this.exits, work);
    } finally {
      if (--watchers === 0) unsubscribe(CHANNEL, onChild);
    }
  }
}

/** The exits of the watched work under way, in its async context. */
const running = new AsyncLocalStorage<Map<string, ShellExit>>();
/** The pieces of work being watched: the channel is listened to only while there is one. */
let watchers = 0;

/** A child process was created: if watched work started it with `sh -c LINE`, note how it ends. */
function onChild(message: unknown): void {
  const exits = running.getStore();
  const child = (message as { process?: ChildProcess }).process;
  if (!exits || !child) return;
  child.once('exit', (code, signal) => {
    const [, flag, line] = child.spawnargs;
    if (flag === '-c' && line !== undefined) exits.set(line, { code, signal });
  });
}
