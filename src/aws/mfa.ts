// Asking a person for an MFA code, on the terminal the proxy was started from.
import { createInterface } from 'node:readline/promises';
import type { MfaPrompt } from './assume-role.js';

const CODE = /^\d{6}$/;

/**
 * A prompt on `input`/`output` when `input` is a terminal; undefined otherwise, so the SDK fails with
 * "no terminal to ask on" instead of waiting forever. Prompts are asked one at a time.
 */
export function terminalMfa(
  input: NodeJS.ReadableStream & { isTTY?: boolean } = process.stdin,
  output: NodeJS.WritableStream = process.stderr,
  attempts = 3,
): MfaPrompt | undefined {
  if (!input.isTTY) return undefined;
  let queue: Promise<unknown> = Promise.resolve();
  const ask = async (serial: string): Promise<string> => {
    const rl = createInterface({ input, terminal: false });
    // Lines are read through the iterator, which buffers: a code typed ahead of the prompt is not lost.
    const lines = rl[Symbol.asyncIterator]();
    try {
      for (let i = 0; i < attempts; i++) {
        output.write(`pg-iam-proxy: MFA code for ${serial}: `);
        const line = await lines.next();
        if (line.done) throw new Error(`the terminal closed before an MFA code for ${serial} was given`);
        const answer = String(line.value).trim();
        if (CODE.test(answer)) return answer;
        output.write('pg-iam-proxy: an MFA code is 6 digits\n');
      }
      throw new Error(`no valid MFA code for ${serial} after ${attempts} tries`);
    } finally {
      rl.close();
    }
  };
  return (serial) => {
    const next = queue.then(() => ask(serial));
    queue = next.catch(() => undefined);
    return next;
  };
}
