// Tokens the server rejected lately, per DB user of an instance. A misconfigured app that
// reconnects in a loop must not multiply the checks the cloud makes for each (RDS throttles new IAM logins
// at about 200 per second): once tokens were refused, the next clients within the window get one
// try each, not a retry (issue: "a rejected token is tried three times for every client").

export interface Rejections {
  /** How many tokens were refused within the window, and when the last was. */
  readonly count: number;
  readonly lastAt: number;
}

export class RecentRejections {
  private readonly byScope = new Map<string, Rejections>();

  constructor(
    /** How long a rejection counts. */
    readonly windowMs = 60_000,
    /** At most this many scopes remembered (a client picks the user name: the map must stay bounded). */
    private readonly max = 1_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** The rejections within the window, if any. */
  recent(key: string): Rejections | undefined {
    const entry = this.byScope.get(key);
    if (entry && this.now() - entry.lastAt > this.windowMs) {
      this.byScope.delete(key);
      return undefined;
    }
    return entry;
  }

  /** A token for this scope was just refused. */
  note(key: string): Rejections {
    const entry = { count: (this.recent(key)?.count ?? 0) + 1, lastAt: this.now() };
    // Re-inserted so the map's order is the order of last use: the oldest go first when it is full.
    this.byScope.delete(key);
    this.byScope.set(key, entry);
    if (this.byScope.size > this.max) this.byScope.delete(this.byScope.keys().next().value!);
    return entry;
  }

  /** A login for this scope succeeded: the server takes its tokens again. */
  clear(key: string): void {
    this.byScope.delete(key);
  }
}
