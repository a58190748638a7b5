// The relay of a pooled session: bytes both ways with backpressure, as the 1:1 splice, with message
// boundaries followed on both sides (MessageCursor: no copy, no allocation per message) and what the
// server owes counted by its ledger (ledger.ts). The client's Terminate is held back, since the server
// stays logged in for the next client. When the client leaves, a server it left idle, having answered
// everything, is reset and pooled; one it left with work outstanding is cancelled and closed.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { BackendCode, FrontendCode, HEADER_SIZE, LENGTH_SIZE } from '../protocol/constants.js';
import { MessageCursor } from '../protocol/framing.js';
import { holdBack } from '../net/backpressure.js';
import type { ClientSettings } from './client-settings.js';
import { Ledger, type Outcome, TxStatus } from './ledger.js';
import { settingsGroup } from './params.js';
import { idleTransactionTimeout } from './pool.js';
import { peekServer, ServerStream } from './server-stream.js';

export interface SessionRelayOptions {
  /** The client may hold the server idle in a transaction (or mid-message) this long; undefined: forever. */
  readonly idleTransactionTimeoutMs?: number | undefined;
  /** The client's tracked settings (after a reset of its own, told and set as its own again). */
  readonly settings?: ClientSettings | undefined;
  /** What the server has set of the tracked settings (PooledServer). */
  readonly server?: { tracked: ReadonlyMap<string, Buffer>; trackedUnknown: boolean } | undefined;
}

export interface PooledEnd {
  /** Why the session ended, in the words a log reader wants. */
  readonly reason: string;
  readonly error: Error | undefined;
  /** The client left the server idle ('I'), answered, at a message boundary: it can be reset and pooled. */
  readonly serverIdle: boolean;
  /** The server closed, failed, or said FATAL unasked (terminated by an administrator, shutting down). */
  readonly serverGone: boolean;
}

/**
 * Relay until the client leaves or the server goes. `toClient` (the greeting) and `toServer` (what the
 * client pipelined behind its startup) go first; `clientEnded`: its FIN came before the relay.
 */
export function relayPooled(
  client: Socket,
  server: TLSSocket,
  toClient: Buffer,
  toServer: Buffer,
  clientEnded: boolean,
  options: SessionRelayOptions = {},
): Promise<PooledEnd> {
  const { idleTransactionTimeoutMs, settings, server: pooled } = options;
  return new Promise((resolve) => {
    const fromClient = new MessageCursor();
    const fromServer = new ServerStream(peekServer);
    const ledger = new Ledger();
    let serverGone = false;
    /** Bytes reached the server that leave it mid-message (part of a Terminate, or garbage): not reusable. */
    let serverPoisoned = false;
    /** The client's values to set again after its own reset, waiting for its pipeline to close. */
    let again: ReturnType<ClientSettings['afterGroup']>;
    let done = false;
    let idleTimer: NodeJS.Timeout | undefined;
    /** Nothing owed, but a transaction (or a message) left open: the client has so long to go on. */
    const watchIdle = (ms: number | undefined) => {
      if (ms === undefined) return;
      clearTimeout(idleTimer);
      // In the middle of a message (the server waits for the rest), or nothing owed in an open transaction.
      const idle =
        !done && !ledger.copyIn && (!fromClient.atBoundary || (ledger.owed === 0 && (ledger.status !== TxStatus.Idle || ledger.open)));
      idleTimer = idle
        ? setTimeout(() => {
            const err = idleTransactionTimeout(ms);
            client.write(err.toBuffer());
            finish(err.message);
          }, ms)
        : undefined;
    };
    const finish = (reason: string, error?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(idleTimer);
      for (const [socket, event, listener] of listeners) socket.off(event, listener);
      client.off('drain', resumeServer);
      server.off('drain', resumeClient);
      server.pause();
      // Our FIN: the client has heard all it will (a server gone: its last words, e.g. a FATAL, were written).
      client.end();
      client.resume();
      const serverIdle =
        !serverGone &&
        !serverPoisoned &&
        ledger.settled &&
        ledger.status === TxStatus.Idle &&
        fromClient.atBoundary &&
        fromServer.atBoundary;
      resolve({ reason, error, serverIdle, serverGone });
    };
    const resumeServer = () => server.resume();
    const resumeClient = () => client.resume();
    const onClientData = (chunk: Buffer) => {
      let cut = chunk.length;
      try {
        fromClient.walk(chunk, (m) => {
          if (cut < chunk.length) return; // nothing counts after the Terminate
          if (m.code === FrontendCode.Terminate) {
            // A Terminate whose first bytes went out with an earlier chunk has reached the server in
            // part: that server cannot be handed on.
            if (m.at < 0) serverPoisoned = true;
            cut = Math.max(0, m.at);
          } else ledger.sent(m.code);
        });
      } catch (err) {
        // Not the protocol: nothing more goes to the server, which is not reused.
        serverPoisoned = true;
        finish(`the client broke the protocol: ${(err as Error).message}`, err as Error);
        return;
      }
      if (cut > 0) server.write(cut === chunk.length ? chunk : chunk.subarray(0, cut));
      if (cut < chunk.length) finish('client closed the connection');
      else {
        watchIdle(idleTransactionTimeoutMs);
        holdBack(client, server, resumeClient);
      }
    };
    const onServerData = (chunk: Buffer) => {
      let out: Buffer[];
      try {
        out = fromServer.read(chunk, (m) => {
          // An error with nothing asked is a FATAL: the backend is going.
          if (m.code === BackendCode.ErrorResponse && ledger.owed === 0 && !ledger.open) serverGone = true;
          if (ledger.answer(m.code, m.first)) return true; // the answer to the proxy's own query
          if (!settings) return false;
          if (m.code === BackendCode.ParameterStatus)
            return m.peeked === m.length - LENGTH_SIZE ? settings.onStatus(m.head.subarray(0, HEADER_SIZE + m.peeked)) : false;
          if (m.code === BackendCode.CommandComplete) {
            const tag = m.head.toString('latin1', HEADER_SIZE, HEADER_SIZE + m.peeked);
            settings.onTag(tag.slice(0, tag.indexOf('\0') >>> 0));
          } else if (m.code === BackendCode.ReadyForQuery && pooled) {
            // After a reset of the client's own: its values again, between its groups, once its transaction
            // is over (in it, a ROLLBACK or an error would take them back; a pipeline it left open would
            // end its implicit transaction) and nothing more of its is on the way (a BEGIN it pipelined
            // behind would run first, and the settings inside its transaction).
            again = settings.afterGroup(pooled.trackedUnknown ? new Map() : pooled.tracked) ?? again;
            if (again && ledger.status === TxStatus.Idle && !ledger.open && ledger.owed === 0) {
              const { tracked, left, query } = again;
              again = undefined;
              pooled.tracked = tracked;
              pooled.trackedUnknown = false;
              const settled = (outcome: Outcome) => {
                if (outcome !== 'answered') pooled.trackedUnknown = true;
              };
              // Not a Query where it can be helped: that would drop the client's unnamed statement.
              const group = settingsGroup(tracked, left);
              if (group) {
                server.write(group.bytes);
                for (const code of group.codes)
                  ledger.sent(code, { own: true, settled: code === FrontendCode.Execute ? settled : undefined });
              } else {
                server.write(query);
                ledger.sent(FrontendCode.Query, { swallow: true, settled });
              }
            }
          }
          return false;
        });
      } catch (err) {
        serverGone = true;
        server.destroy();
        finish(`the server broke the protocol: ${(err as Error).message}`, err as Error);
        return;
      }
      if (out.length > 0) client.write(out.length === 1 ? out[0]! : Buffer.concat(out));
      watchIdle(idleTransactionTimeoutMs);
      holdBack(server, client, resumeServer);
    };
    // A client gone with work outstanding (mid-query, mid-COPY, half a message) leaves its server to be
    // cancelled and closed: nobody reads the answers.
    const onClientEnd = () => finish('client closed the connection');
    const onClientError = (err: Error) => finish(`error on the client connection: ${err.message}`, err);
    const onClientClose = () => finish('client closed the connection');
    const onServerEnd = () => {
      serverGone = true;
      finish('server closed the connection');
    };
    const onServerError = (err: Error) => {
      serverGone = true;
      finish(`error on the server connection: ${err.message}`, err);
    };
    // Attached for the session and all removed at its end: the server socket goes back to the pool.
    // biome-ignore lint/suspicious/noExplicitAny: Node's own listener type, (...args: any[]) => void
    type Listener = (...args: any[]) => void;
    const listeners: ReadonlyArray<readonly [Socket, string, Listener]> = [
      [client, 'data', onClientData],
      [client, 'end', onClientEnd],
      [client, 'error', onClientError],
      [client, 'close', onClientClose],
      [server, 'data', onServerData],
      [server, 'end', onServerEnd],
      [server, 'error', onServerError],
      [server, 'close', onServerEnd],
    ];
    for (const [socket, event, listener] of listeners) socket.on(event, listener);
    if (toClient.length > 0) client.write(toClient);
    if (toServer.length > 0) onClientData(toServer);
    if (clientEnded) onClientEnd();
    if (done) return;
    client.resume();
    server.resume();
  });
}
