// Doctor's pooling check, every cloud's: the pool settings against what the server allows, asked on the
// logged-in connection of the login check.
import type { Socket } from 'node:net';
import type { InstanceConfig } from '../config.js';
import { BackendCode, HEADER_SIZE } from '../protocol/constants.js';
import { simpleQuery } from '../upstream/simple-query.js';
import type { Outcomes } from './walk.js';

/**
 * The pool settings against what the server allows: its max_connections, less the connections open now,
 * must hold the pools' servers (pgbouncer's sizing rule). Transaction mode: what does not work there.
 */
export async function checkPooling(instance: InstanceConfig, { set }: Outcomes, server: Socket, timeoutMs: number): Promise<void> {
  const pool = instance.pool;
  if (!pool) {
    set('pooling', 'pass', 'pooling is off (--pool-mode off): a login per client, as without the proxy');
    return;
  }
  const [max, reserved, open] = await queryRow(
    server,
    "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
    timeoutMs,
  );
  const room = Number(max) - Number(reserved) - Number(open);
  const servers = pool.maxServers ?? pool.size;
  const mode =
    pool.mode === 'transaction'
      ? ' In transaction mode session SET (but of the settings the server reports), LISTEN, session advisory locks, WITH HOLD cursors, temporary tables kept across transactions and SQL PREPARE do not work (see the README, Pooling).'
      : '';
  const found = `--pool-mode ${pool.mode}, --pool-size ${pool.size}${pool.maxServers ? `, --max-server-connections ${pool.maxServers}` : ' per DB user and database (no --max-server-connections)'}; the server allows max_connections ${max} (${reserved} reserved for superusers), ${open} open now.${mode}`;
  const data = {
    maxConnections: Number(max),
    reserved: Number(reserved),
    open: Number(open),
    poolSize: pool.size,
    maxServers: pool.maxServers,
  };
  if (servers > room) {
    set(
      'pooling',
      'warn',
      found,
      `This proxy may open ${servers} servers and the server has room for ${room} more: lower --pool-size or set --max-server-connections under ${room} (summed over every proxy in front of this database), or use a larger instance class (RDS sets max_connections from its memory).`,
      data,
    );
  } else set('pooling', 'pass', found, undefined, data);
}

/** One row of a simple query on a logged-in server, as text. */
async function queryRow(server: Socket, sql: string, timeoutMs: number): Promise<string[]> {
  let row: string[] = [];
  const { error } = await simpleQuery(server, sql, timeoutMs, (frame) => {
    if (frame.code === BackendCode.DataRow) row = dataRow(frame.bytes);
  });
  if (error !== undefined) throw new Error(error);
  return row;
}

function dataRow(bytes: Buffer): string[] {
  const out: string[] = [];
  let at = HEADER_SIZE + 2;
  for (let i = bytes.readUInt16BE(HEADER_SIZE); i > 0; i--) {
    const length = bytes.readInt32BE(at);
    at += 4;
    out.push(length < 0 ? '' : bytes.toString('utf8', at, at + length));
    at += Math.max(0, length);
  }
  return out;
}
