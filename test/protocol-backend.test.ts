import t from 'tap';
import { authCode, authMethodName, decodeBackendKey, decodeError, readBackendFrame } from '../src/protocol/backend.js';
import { errorResponse, Failure, WireError } from '../src/protocol/errors.js';
import { Bytes } from './support/bytes.js';

t.test('ErrorResponse is byte-exact and pg-protocol reads it back', async (t) => {
  const bytes = errorResponse({ severity: 'FATAL', code: '28000', message: 'no', hint: 'h' });
  t.same(bytes, new Bytes().cstring('SFATAL').cstring('VFATAL').cstring('C28000').cstring('Mno').cstring('Hh').raw([0]).join('E'));
  const frame = readBackendFrame(bytes)!;
  const err = decodeError(frame);
  t.match(err, { severity: 'FATAL', code: '28000', message: 'no', hint: 'h', detail: undefined });
  const wire = new WireError('53300', 'too many', { reason: Failure.MaxConnections, detail: 'd' });
  t.match(decodeError(readBackendFrame(wire.toBuffer())!), { code: '53300', message: 'too many', detail: 'd' });
});

t.test('backend frames: every split, coalesced, capped', async (t) => {
  const auth = new Bytes().int32(3).join('R');
  const two = Buffer.concat([auth, new Bytes().int32(0).join('R')]);
  for (let cut = 0; cut < auth.length; cut++) t.equal(readBackendFrame(two.subarray(0, cut)), null, `incomplete at ${cut}`);
  const first = readBackendFrame(two)!;
  t.equal(first.code, 0x52);
  t.equal(authCode(first), 3);
  t.equal(authCode(readBackendFrame(two.subarray(first.bytes.length))!), 0);
  t.throws(() => readBackendFrame(Buffer.from([0x52, 0, 0, 0, 3])), { code: '08P01' }, 'length below 4');
  t.throws(() => readBackendFrame(Buffer.from([0x52, 0x7f, 0, 0, 0])), { code: '08P01' }, 'over the cap');
  t.throws(() => authCode(readBackendFrame(new Bytes().join('R'))!), /truncated/);
  t.equal(authMethodName(10), 'SCRAM-SHA-256 (SASL) password');
  t.equal(authMethodName(99), 'unknown (99)');
});

t.test('BackendKeyData keeps pid and a key of any length', async (t) => {
  const key = Buffer.alloc(32, 7);
  const frame = readBackendFrame(new Bytes().int32(99).raw(key).join('K'))!;
  t.same(decodeBackendKey(frame), new Bytes().int32(99).raw(key).join().subarray(4));
});

t.test('a rejected-token error never serializes the token', async (t) => {
  const { TokenRejected } = await import('../src/upstream/auth.js');
  const token = {
    value: 'host:5432/?X-Amz-Signature=abc',
    scope: { host: 'h', port: 1, region: 'r', user: 'u' },
    accessKeyId: 'AKIA',
    signer: { accessKeyId: 'AKIA' },
    signedAt: 0,
    expiresAt: 1,
  };
  const err = new TokenRejected('PAM authentication failed', token);
  t.equal(err.token, token, 'still there for the retry');
  t.notMatch(JSON.stringify({ ...err }), /X-Amz-Signature/);
  t.notOk(Object.keys(err).includes('token'));
});

t.test('failure reasons: one catalogue of stable, distinct metric label values', async (t) => {
  const values = Object.values(Failure);
  t.equal(new Set(values).size, values.length, 'distinct');
  for (const value of values) t.match(value, /^[a-z]+(_[a-z]+)*$/, `${value}: a Prometheus-friendly label value`);
  t.ok(values.includes('iam_rejected') && values.includes('no_credentials'), 'the names dashboards use stay');
});
