// What a server owes, request by request, as PostgreSQL answers: the ledger settles only on the server's
// own answers, skips what an error skips, and distrusts what it cannot account for.
import t from 'tap';
import { Ledger, TxStatus } from '../src/pool/ledger.js';
import { BackendCode as B, FrontendCode as F } from '../src/protocol/constants.js';

const I = TxStatus.Idle;
const T = TxStatus.InTransaction;

/** Send the codes (a string of frontend letters), then feed the answers (backend letters; Z takes the status after it). */
function run(ledger: Ledger, sent: string, answers: string): boolean[] {
  for (const c of sent) ledger.sent(c.charCodeAt(0));
  const cuts: boolean[] = [];
  for (let i = 0; i < answers.length; i++) {
    const code = answers.charCodeAt(i);
    const first = code === B.ReadyForQuery ? answers.charCodeAt(++i) : -1;
    cuts.push(ledger.answer(code, first));
  }
  return cuts;
}

t.test('a simple query and an extended pipeline settle at their ReadyForQuery', async (t) => {
  const l = new Ledger();
  run(l, 'Q', 'TDC');
  t.equal(l.owed, 1);
  run(l, '', 'ZI');
  t.ok(l.settled);
  run(l, 'PBDES', '12TDC');
  t.equal(l.owed, 1, 'the Sync is still owed');
  run(l, '', 'ZT');
  t.ok(l.settled);
  t.equal(l.status, T);
});

t.test('messages since the last Sync hold a pipeline open, answered or not', async (t) => {
  const l = new Ledger();
  run(l, 'PH', '1');
  t.equal(l.owed, 0);
  t.notOk(l.settled, 'a Parse answered through Flush: the implicit transaction is open until Sync');
  run(l, 'S', 'ZI');
  t.ok(l.settled);
});

t.test('an extended error skips to the Sync, undoing the skipped requests (the failed one as failed)', async (t) => {
  const l = new Ledger();
  const undone: string[] = [];
  l.sent(F.Parse, { settled: (outcome) => outcome !== 'answered' && undone.push(`P1:${outcome}`) });
  l.sent(F.Bind);
  l.sent(F.Parse, { settled: (outcome) => outcome !== 'answered' && undone.push(`P2:${outcome}`) });
  l.sent(F.Close, { settled: (outcome) => outcome !== 'answered' && undone.push(`C:${outcome}`) });
  l.sent(F.Sync);
  l.sent(F.Parse, { settled: (outcome) => outcome !== 'answered' && undone.push(`P3:${outcome}`) });
  l.sent(F.Sync);
  run(l, '', '1E');
  t.same(undone, ['C:skipped', 'P2:skipped'], 'the Bind failed; what followed it up to Sync was skipped, latest undone first');
  run(l, '', 'ZI1ZI');
  t.ok(l.settled, 'the next group ran as usual');
  t.same(undone, ['C:skipped', 'P2:skipped']);
});

t.test('an error before the Sync was sent: what comes until that Sync is skipped as it is sent', async (t) => {
  const l = new Ledger();
  const undone: string[] = [];
  l.sent(F.Parse, { settled: (outcome) => outcome !== 'answered' && undone.push(`P1:${outcome}`) });
  run(l, 'BE', 'E');
  t.same(undone, ['P1:failed']);
  l.sent(F.Parse, { settled: (outcome) => outcome !== 'answered' && undone.push(`P2:${outcome}`) });
  t.same(undone, ['P1:failed', 'P2:skipped'], 'skipped at once');
  run(l, 'S', 'ZI');
  t.ok(l.settled);
});

t.test("a Query's error and a Sync's (a failed commit) end with their own ReadyForQuery", async (t) => {
  const l = new Ledger();
  run(l, 'QQ', 'EZICZI');
  t.ok(l.settled);
  run(l, 'BES', '2CEZI');
  t.ok(l.settled, 'the commit at Sync failed: its ReadyForQuery still comes');
});

t.test('COPY FROM STDIN sent in one write with its Sync: the Sync is answered (a pool must not give the server away before)', async (t) => {
  const l = new Ledger();
  run(l, 'E', '');
  l.sent(F.CopyData);
  run(l, 'cS', 'G');
  t.notOk(l.settled);
  run(l, '', 'C');
  t.equal(l.owed, 1, 'the Sync after CopyDone is owed');
  run(l, '', 'ZI');
  t.ok(l.settled);
});

t.test("libpq's extended COPY: the Sync sent with the Execute is ignored in the copy, the one after CopyDone answered", async (t) => {
  const l = new Ledger();
  run(l, 'PBES', '12G');
  l.sent(F.CopyData);
  run(l, 'cS', 'C');
  t.equal(l.owed, 1);
  run(l, '', 'ZI');
  t.ok(l.settled);
  // The same, failed: CopyFail, then the server skips to the Sync.
  run(l, 'PBES', '12G');
  l.sent(F.CopyData);
  run(l, 'fS', 'EZI');
  t.ok(l.settled);
  // Failed by bad data while the client still sends: the Sync after the data is the one answered.
  run(l, 'BES', '2G');
  l.sent(F.CopyData);
  run(l, '', 'E');
  l.sent(F.CopyData);
  run(l, 'cS', 'ZI');
  t.ok(l.settled);
});

t.test("a simple Query's COPY: CopyDone before the next Query is no request of its own", async (t) => {
  const l = new Ledger();
  run(l, 'Q', 'G');
  l.sent(F.CopyData);
  run(l, 'cQ', 'CZITCZI');
  t.ok(l.settled);
  // Failed, with the client still sending: what it sends after is ignored by the server.
  run(l, 'Q', 'GEZI');
  t.ok(l.settled);
  l.sent(F.CopyData);
  run(l, 'c', '');
  t.ok(l.settled, 'a CopyDone with no copy under way is ignored');
});

t.test('what cannot be accounted for puts the ledger in doubt, never settled again', async (t) => {
  const cases: Array<[string, string, () => void, RegExp]> = [
    ['Q', '1', () => undefined, /ParseComplete answered no request/],
    ['', 'ZI', () => undefined, /ReadyForQuery that no Sync/],
    ['S', 'CZI', () => undefined, /command completed that no Execute/],
    ['Q', 'W', () => undefined, /replication/],
  ];
  for (const [sent, answers, , why] of cases) {
    const l = new Ledger();
    run(l, sent, answers);
    t.match(l.doubt, why);
    t.notOk(l.settled);
  }
  const l = new Ledger();
  run(l, 'BES', '2G');
  l.sent(F.CopyData);
  run(l, 'S', '');
  l.sent(F.CopyData);
  run(l, 'cS', 'E');
  t.match(l.doubt, /a Sync sent among the CopyData/, 'a Sync among the data of a failed COPY: answered or not, nobody can tell');
});

t.test("answers of the proxy's own requests are cut; a marked Query's first CommandComplete too", async (t) => {
  const l = new Ledger();
  l.sent(F.Parse, { swallow: true });
  l.sent(F.Bind);
  l.sent(F.Sync);
  t.same(run(l, '', '12ZI'), [true, false, false]);
  l.sent(F.Query, { completed: (i) => i === 0 });
  t.same(run(l, '', 'CCZI'), [true, false, false]);
  l.sent(F.Query, { completed: (i) => i === 0 });
  t.same(run(l, '', 'EZI'), [false, false], 'an error in the first statement: nothing to cut');
  t.ok(l.settled);
});

t.test('a long pipeline is compacted as it is answered', async (t) => {
  const l = new Ledger();
  for (let i = 0; i < 5000; i++) l.sent(F.Sync);
  for (let i = 0; i < 4999; i++) l.answer(B.ReadyForQuery, I);
  t.equal(l.owed, 1);
  l.answer(B.ReadyForQuery, I);
  t.ok(l.settled);
});

t.test('the status the next request meets is known only with no Sync, Query or FunctionCall unanswered', async (t) => {
  const l = new Ledger();
  t.ok(l.statusKnown, 'nothing sent');
  run(l, 'PB', '');
  t.ok(l.statusKnown, 'requests of the open group cannot fail the transaction without skipping what follows');
  run(l, 'S', '12');
  t.notOk(l.statusKnown, 'a Sync unanswered: the group may end in a failed transaction');
  run(l, '', 'ZE');
  t.ok(l.statusKnown);
  t.equal(l.status, TxStatus.Failed);
  run(l, 'Q', '');
  t.notOk(l.statusKnown);
});

t.test("a group of the proxy's own: everything said while it is the oldest request is kept, and it settles as usual", async (t) => {
  const l = new Ledger();
  run(l, 'PBE', '');
  for (const c of 'PBECCS') l.sent(c.charCodeAt(0), { own: true });
  t.same(run(l, '', '12C'), [false, false, false], "the client's answers pass");
  t.same(
    run(l, '', '12CS33ZI'),
    [true, true, true, true, true, true, true],
    'the group, a ParameterStatus in it and its ReadyForQuery are kept',
  );
  t.ok(l.settled);
  const failed = new Ledger();
  const outcomes: string[] = [];
  failed.sent(F.Parse, { own: true });
  failed.sent(F.Execute, { own: true, settled: (o) => outcomes.push(o) });
  failed.sent(F.Sync, { own: true });
  t.same(run(failed, '', 'EZI'), [true, true], 'its error too');
  t.same(outcomes, ['skipped']);
  t.ok(failed.settled);
});
